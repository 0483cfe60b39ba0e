"""gunicorn settings for the orchestrator, carrying the original deployment's intent.

Workers from the CPU count, gthread workers so slow uploads do not block a worker, a generous timeout
for large uploads, and recycling after 1000 requests (with jitter 100) so memory cannot creep. The app
is preloaded in the master (shared pages for OpenCV, scikit-learn and friends); gRPC channels are made
lazily inside each worker, after the fork.
"""

import ctypes
import multiprocessing
import os
import shutil
import tempfile

bind = os.environ.get("SHINE_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("SHINE_WORKERS", min(4, multiprocessing.cpu_count())))
worker_class = "gthread"
threads = int(os.environ.get("SHINE_THREADS", 4))
timeout = 120
graceful_timeout = 30
keepalive = 5
max_requests = 1000
max_requests_jitter = 100
preload_app = True
accesslog = None
errorlog = "-"
loglevel = os.environ.get("SHINE_LOG_LEVEL", "info").lower()
# Header and request-line limits stay at gunicorn's defaults; the body limit is the app's (100 MB).


def _tune_malloc() -> None:
    """At most two glibc malloc arenas per worker.

    glibc gives each thread its own arena, so with four request threads a worker's heaps grow four
    ways and rarely shrink. Large photo buffers already go to mmap (glibc's dynamic threshold) and are
    returned on free. A fixed low mmap threshold was tried and dropped: every buffer over 256 KB then
    page-faults afresh, which made the face stage 15 -> 25 ms p50 (16 photos, 2 threads, 2 cores) for
    13 MB less resident memory. Set here, in the master before the fork, so every worker inherits it.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc: nothing to tune
    m_arena_max = -8  # <malloc.h>
    libc.mallopt(m_arena_max, 2)


_tune_malloc()

# prometheus_client sums metrics across workers from files in this directory (its own variable name).
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="shine-metrics-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir


def post_fork(server, worker):
    # Threads OpenCV may use inside one call (face search, resizing). Unset, OpenCV uses every core: in
    # one pair of benchmark runs on 2 cores that gave 76 ms p50 for a 1 MP selfie against 92 ms with 1
    # thread, and the same throughput at concurrency 20. Set 1 where many workers share few cores.
    threads = os.environ.get("SHINE_OPENCV_THREADS")
    if threads:
        import cv2

        cv2.setNumThreads(int(threads))


def on_starting(server):
    for entry in os.listdir(_metrics_dir):
        os.remove(os.path.join(_metrics_dir, entry))


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if not os.environ.get("SHINE_KEEP_METRICS_DIR"):
        shutil.rmtree(_metrics_dir, ignore_errors=True)
