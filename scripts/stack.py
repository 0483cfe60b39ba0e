"""Start the real stack as separate processes, for end-to-end tests and the benchmark: the model server
(serving.launch) and the orchestrator under gunicorn, each on a free port; read their memory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, status: int, timeout_s: float) -> requests.Response:
    deadline = time.monotonic() + timeout_s
    last: requests.Response | None = None
    while time.monotonic() < deadline:
        try:
            last = requests.get(url, timeout=2)
            if last.status_code == status:
                return last
        except (requests.ConnectionError, requests.Timeout):
            pass  # not listening yet, or too busy starting to answer within 2 s
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer {status} in {timeout_s} s (last: {last and last.status_code})")


def terminate(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM (both servers drain in-flight requests on it), then SIGKILL after 30 s."""
    if process and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class ModelServerProcess:
    def __init__(self, log: Path, config: Path | None = None, model_repo: Path | None = None) -> None:
        self.port = free_port()
        self.log = log
        self.config = config or ROOT / "serving" / "models.config"
        self.model_repo = model_repo or ROOT / "model_repo"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> None:
        command = [
            sys.executable,
            "-m",
            "serving.launch",
            "--port",
            str(self.port),
            "--config",
            str(self.config),
            "--model-repo",
            str(self.model_repo),
        ]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        if wait:
            ready = subprocess.run(
                [sys.executable, "-m", "serving.launch", "--wait", self.address, "--timeout", "240"],
                cwd=ROOT,
                capture_output=True,
                timeout=300,
            )
            if ready.returncode != 0:
                raise RuntimeError(f"model server did not come up; see {self.log}")

    def stop(self) -> None:
        terminate(self.process)


class AdmissionProcess:
    """serving.admission beside a model server: what it loads and serves, over the same files."""

    def __init__(
        self,
        model_address: str,
        log: Path,
        config: Path,
        model_repo: Path,
        poll_s: float = 0.3,
        drain_s: float = 3.0,
    ) -> None:
        self.command = [
            sys.executable,
            "-m",
            "serving.admission",
            "--address",
            model_address,
            "--config",
            str(config),
            "--model-repo",
            str(model_repo),
            "--poll-s",
            str(poll_s),
            "--drain-s",
            str(drain_s),
        ]
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        terminate(self.process)


class OrchestratorProcess:
    def __init__(
        self, model_address: str, log: Path, workers: int = 2, model_repo: Path | None = None, **env: str
    ) -> None:
        """`model_repo` is where calibrations are read: the model server's model_repo (default ours)."""
        self.port = free_port()
        self.log = log
        self.workers = workers
        self.env = {
            **os.environ,
            "SHINE_BIND": f"127.0.0.1:{self.port}",
            "SHINE_WORKERS": str(workers),
            "SHINE_MODEL_SERVER_ADDRESS": model_address,
            "SHINE_MODEL_REPO_DIR": str(model_repo or ROOT / "model_repo"),
            **env,
        }
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [
            str(Path(sys.executable).parent / "gunicorn"),
            "-c",
            "configs/gunicorn.conf.py",
            "orchestrator.wsgi:app",
        ]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                requests.get(self.url + "/api/v2/openapi.json", timeout=2)
                # The first worker answers while the master may still be forking the others; tests
                # compare worker pids before and after, so wait for all of them.
                if len(self.pids()) == 1 + self.workers:
                    return
                time.sleep(0.1)
            except requests.ConnectionError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"gunicorn exited; see {self.log}") from None
                time.sleep(0.25)
        raise TimeoutError("gunicorn did not start")

    def pids(self) -> list[int]:
        """The master and its workers."""
        assert self.process is not None
        return process_group(self.process.pid)

    def stop(self) -> None:
        terminate(self.process)


def process_group(master: int) -> list[int]:
    """A gunicorn master's pid and its workers' (its direct children)."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [master, *map(int, children)]


def pss_kb(pid: int) -> int:
    """Proportional set size of a process (shared pages divided among their users)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise ValueError(f"no Pss in /proc/{pid}/smaps_rollup")


def mapped_files(pid: int) -> set[str]:
    files = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].startswith("/"):
            files.add(parts[5])
    return files
