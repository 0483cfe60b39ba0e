"""Whether a worker process is still there (orchestrator/web/processes.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from orchestrator.web.processes import alive


def test_a_running_process_is_alive_and_a_reaped_one_is_not() -> None:
    assert alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    assert not alive(child.pid)


def test_a_process_of_another_user_counts_as_alive() -> None:
    # pid 1 always exists; unprivileged, signalling it is refused, which still says it exists.
    assert alive(1)
