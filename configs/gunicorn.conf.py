"""gunicorn settings for the orchestrator, carrying the original deployment's intent.

Workers from the CPU count, gthread workers so slow uploads do not block a worker, a generous timeout
for large uploads, and recycling after 1000 requests (with jitter 100) so memory cannot creep. The app
is preloaded in the master (shared pages for OpenCV, scikit-learn and friends); gRPC channels are made
lazily inside each worker, after the fork.
"""

import ctypes
import os
import shutil
import tempfile

from orchestrator.settings import Settings
from orchestrator.web.workqueue import worker_count, worker_threads

# The orchestrator's one reader of the environment; a bad value stops gunicorn here, naming it.
_settings = Settings.from_env()
bind = _settings.bind
workers = worker_count(_settings)
worker_class = "gthread"
# SHINE_THREADS work; the rest only wait in the app's line for a slot (orchestrator/web/workqueue.py),
# where their wait is known and a request that cannot be answered in time is refused at once. A
# request waiting in gunicorn's own queue instead would be seen only once a thread took it up.
threads = worker_threads(_settings)
timeout = 120
graceful_timeout = 30
keepalive = 5
max_requests = 1000
max_requests_jitter = 100
preload_app = True
accesslog = None
errorlog = "-"
loglevel = _settings.log_level.lower()
# Header and request-line limits stay at gunicorn's defaults; the body limit is the app's (100 MB).


# Free heap a worker keeps after a request before it hands it back to the OS (see post_request).
_KEEP_FREE_HEAP_BYTES = 32 * 1024 * 1024


class _MallInfo2(ctypes.Structure):
    """glibc's struct mallinfo2 (<malloc.h>, glibc 2.33+): ten size_t counters."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            *("arena", "ordblks", "smblks", "hblks", "hblkhd"),
            *("usmblks", "fsmblks", "uordblks", "fordblks", "keepcost"),
        )
    ]


def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None  # not glibc: nothing to tune
    if not hasattr(libc, "mallinfo2") or not hasattr(libc, "malloc_trim"):
        return None
    libc.mallinfo2.restype = _MallInfo2
    return libc


_libc = _glibc()


def _tune_malloc() -> None:
    """At most two glibc malloc arenas per worker.

    glibc gives each thread its own arena, so with four request threads a worker's heaps grow four
    ways. Set here, in the master before the fork, so every worker inherits it. A fixed low mmap
    threshold (every buffer over 256 KB straight back to the OS) was tried and dropped: each buffer then
    page-faults afresh, which made the face stage 15 -> 25 ms p50 (16 portraits, 2 threads, 2 cores).
    """
    if _libc is not None:
        m_arena_max = -8  # <malloc.h>
        _libc.mallopt(m_arena_max, 2)


_tune_malloc()


def post_request(worker, req, environ, resp):
    # glibc's dynamic mmap threshold rises after a large photo, so later buffers of up to 32 MB land in
    # the heap, which keeps them once freed. Past 32 MB of free heap, give it back (malloc_trim; about a
    # millisecond, and a selfie never gets there). Checking costs about 0.1 ms.
    if _libc is not None and _libc.mallinfo2().fordblks > _KEEP_FREE_HEAP_BYTES:
        _libc.malloc_trim(0)


# prometheus_client sums metrics across workers from files in this directory; it reads its own variable,
# so the directory is handed to it (and to the app's Settings) through the environment.
_metrics_dir = _settings.prometheus_multiproc_dir or tempfile.mkdtemp(prefix="shine-metrics-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir


def post_fork(server, worker):
    # Threads OpenCV may use inside one call (face search, resizing). Unset (0), OpenCV uses every core,
    # which with several analyses side by side only adds hand-offs: at concurrency 20 on 2 cores one
    # thread took the orchestrator from 66-68 to 64 ms of CPU per request and kept its p99 at 1.35-1.40 s
    # (1.40-1.59 s on every core). One request at a time it costs: server p50 81.5 -> 85.4 ms for the
    # 1 MP selfie, 149 -> 168 ms for the 12 MP photo, whose patch blur runs on one thread.
    if _settings.opencv_threads:
        import cv2

        cv2.setNumThreads(_settings.opencv_threads)


def on_starting(server):
    for entry in os.listdir(_metrics_dir):
        os.remove(os.path.join(_metrics_dir, entry))


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if not _settings.keep_metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
