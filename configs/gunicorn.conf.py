"""gunicorn settings for the orchestrator, carrying the original deployment's intent.

Workers from the CPU count, gthread workers so slow uploads do not block a worker, a generous timeout
for large uploads, and recycling after 1000 requests (with jitter 100) so memory cannot creep. The app
is preloaded in the master (shared pages for OpenCV, scikit-learn and friends); gRPC channels are made
lazily inside each worker, after the fork.
"""

import multiprocessing
import os
import shutil
import tempfile

bind = os.environ.get("SHINE_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("SHINE_WORKERS", min(4, multiprocessing.cpu_count())))
worker_class = "gthread"
threads = int(os.environ.get("SHINE_THREADS", 8))
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

# prometheus_client sums metrics across workers from files in this directory (its own variable name).
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="shine-metrics-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir


def on_starting(server):
    for entry in os.listdir(_metrics_dir):
        os.remove(os.path.join(_metrics_dir, entry))


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if not os.environ.get("SHINE_KEEP_METRICS_DIR"):
        shutil.rmtree(_metrics_dir, ignore_errors=True)
