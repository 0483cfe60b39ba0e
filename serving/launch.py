"""Start the model server for local runs and tests: tensorflow_model_server where it is on PATH, else the
local model server, both over the same models.config, batching_parameters.txt and model_repo/.

    python -m serving.launch --port 8500            # becomes the model server (exec)
    python -m serving.launch --wait 127.0.0.1:8500  # block until a model version is AVAILABLE
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from serving.repository import CONTAINER_MODELS

ROOT = Path(__file__).resolve().parent.parent


def server_command(
    port: int,
    config: Path,
    batching: Path,
    model_repo: Path,
    poll_s: float = 1.0,
    config_poll_s: float = 2.0,
    binary: str | None = None,
    host: str = "127.0.0.1",
) -> list[str]:
    """The command line that serves model_repo/ on `host`:`port` with batching on (the local server
    binds `host`; tensorflow_model_server has no flag for it and binds every address, so run it on a
    private network, as the compose file does)."""
    binary = binary if binary is not None else shutil.which("tensorflow_model_server")
    common = [
        f"--port={port}",
        "--enable_batching",
        f"--batching_parameters_file={batching}",
        f"--file_system_poll_wait_seconds={poll_s:g}",
        f"--model_config_file_poll_wait_seconds={config_poll_s:g}",
    ]
    if binary:
        # The real server needs absolute base paths: give it a copy of models.config that points at
        # model_repo/ where the container would see /models.
        localized = ROOT / "build" / "models.local.config"
        localized.parent.mkdir(parents=True, exist_ok=True)
        text = config.read_text().replace(f'"{CONTAINER_MODELS}/', f'"{model_repo.resolve()}/')
        localized.write_text(text)
        return [binary, f"--model_config_file={localized}", *common]
    return [
        sys.executable,
        "-m",
        "serving.local_server",
        f"--model_config_file={config}",
        f"--models_mount={CONTAINER_MODELS}={model_repo}",
        f"--host={host}",
        *common,
    ]


def wait_available(address: str, model_name: str, timeout_s: float) -> bool:
    """Poll GetModelStatus until some version is AVAILABLE; False on timeout."""
    import grpc

    from serving.wire import model_status_pb2, services_pb2_grpc

    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = services_pb2_grpc.ModelServiceStub(channel)
        request = model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model_name
        while time.monotonic() < deadline:
            try:
                response = stub.GetModelStatus(request, timeout=1.0)
                if any(
                    s.state == model_status_pb2.ModelVersionStatus.AVAILABLE
                    for s in response.model_version_status
                ):
                    return True
            except grpc.RpcError:
                pass
            time.sleep(0.25)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument(
        "--host",
        default=os.environ.get("SHINE_MODEL_SERVER_HOST", "127.0.0.1"),
        help="address the local model server binds (default loopback; SHINE_MODEL_SERVER_HOST)",
    )
    parser.add_argument("--config", type=Path, default=ROOT / "serving" / "models.config")
    parser.add_argument("--batching", type=Path, default=ROOT / "serving" / "batching_parameters.txt")
    parser.add_argument("--model-repo", type=Path, default=ROOT / "model_repo")
    parser.add_argument("--wait", metavar="HOST:PORT", help="wait for an AVAILABLE version, then exit")
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args(argv)
    if args.wait:
        from serving import contract

        ok = wait_available(args.wait, contract.MODEL_NAME, args.timeout)
        print("model server ready" if ok else f"model server not ready after {args.timeout:g} s")
        return 0 if ok else 1
    command = server_command(args.port, args.config, args.batching, args.model_repo, host=args.host)
    print("starting:", " ".join(command), flush=True)
    os.execvp(command[0], command)


if __name__ == "__main__":
    sys.exit(main())
