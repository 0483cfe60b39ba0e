"""Debian's real nginx for tests: runs one site config (http context) on a loopback port, everything it
writes (pid, logs, temporary bodies) under its own folder, so it needs no root paths."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import IN_CI, free_port, missing

# Debian puts nginx in /usr/sbin, which is not on a non-root PATH.
NGINX = os.environ.get("SHINE_NGINX") or shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")


def require_nginx() -> str:
    """nginx's path; skips the module saying why when it is missing (fails under CI=true, unless .ci/run
    could not use apt-get and says so in SHINE_NGINX_OPTIONAL)."""
    if NGINX is None:
        reason = "nginx not found (apt-get install nginx, or set SHINE_NGINX to its path)"
        optional = os.environ.get("SHINE_NGINX_OPTIONAL", "")
        if IN_CI and not optional:
            missing(reason)
        pytest.skip(f"{reason}; {optional}" if optional else reason, allow_module_level=True)
    return NGINX


def replace_once(text: str, old: str, new: str) -> str:
    """`text` with the one `old` in it replaced; fails the test when `old` is absent or repeated."""
    assert text.count(old) == 1, f"the config should hold {old!r} exactly once"
    return text.replace(old, new)


class NginxProcess:
    """nginx serving `site` (a conf.d file whose `listen` line is `listen_line`) on a free loopback port."""

    def __init__(self, folder: Path, site: str, listen_line: str) -> None:
        self.folder = folder
        self.port = free_port()
        site = replace_once(site, listen_line, f"listen 127.0.0.1:{self.port};")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "site.conf").write_text(site)
        temp = "\n".join(
            f"    {kind}_temp_path {folder / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        # As root, nginx's workers would switch to `nobody`, who cannot enter pytest's private folders.
        user = "user root;\n" if os.geteuid() == 0 else ""
        (folder / "nginx.conf").write_text(
            f"{user}daemon off;\nworker_processes 1;\npid {folder / 'nginx.pid'};\n"
            f"error_log {folder / 'error.log'} warn;\nevents {{ worker_connections 64; }}\n"
            f"http {{\n    access_log {folder / 'access.log'};\n{temp}\n"
            f"    include {folder / 'site.conf'};\n}}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = require_nginx()
        command = [binary, "-p", str(self.folder), "-e", str(self.folder / "error.log"), "-c", "nginx.conf"]
        checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, checked.stderr
        with (self.folder / "stderr.log").open("ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"nginx exited; see {self.folder}") from None
                time.sleep(0.05)
        raise TimeoutError("nginx did not listen")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
