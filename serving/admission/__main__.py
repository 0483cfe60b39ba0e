"""Run admission beside a model server until stopped:

    python -m serving.admission --address 127.0.0.1:8500 --config serving/models.config \\
        --model-repo model_repo

State: <model_repo>/<model>/admission.json (see serving/admission/state.py); config: --config.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from serving import contract
from serving.admission.admitter import Admission, AdmissionError
from serving.admission.control import ModelServerControl, ReloadRefused, ServerDown
from serving.admission.state import StateError
from serving.config import ConfigError
from serving.repository import CONTAINER_MODELS

ROOT = Path(__file__).resolve().parent.parent.parent

logger = logging.getLogger("serving.admission")


def run(admission: Admission, stop: threading.Event, poll_s: float) -> None:
    """Cycle until `stop` is set; every failure is logged and the next cycle tries again."""
    down = False
    while not stop.is_set():
        try:
            admission.cycle()
            if down:
                logger.info("model server reachable again")
            down = False
        except ServerDown as exc:
            if not down:
                logger.warning("model server not reachable (%s); decisions wait for it", exc)
            down = True
        except (AdmissionError, ReloadRefused, ConfigError, StateError, OSError) as exc:
            logger.error("admission cycle failed: %s", exc)
        except Exception:
            logger.exception("admission cycle failed")
        stop.wait(poll_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.admission", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--address", default="127.0.0.1:8500", help="the model server's gRPC host:port")
    parser.add_argument("--config", type=Path, default=ROOT / "serving" / "models.config")
    parser.add_argument("--model-repo", type=Path, default=ROOT / "model_repo")
    parser.add_argument("--model-name", default=contract.MODEL_NAME)
    parser.add_argument("--poll-s", type=float, default=0.5, help="how often folders are looked at")
    parser.add_argument("--settle-s", type=float, default=0.5, help="how long a folder must not change")
    parser.add_argument(
        "--drain-s", type=float, default=5.0, help="wait between publishing and unloading (> routing refresh)"
    )
    parser.add_argument(
        "--server-model-repo",
        default="",
        help="the model repository's path as the server sees it, when not at the config's /models",
    )
    parser.add_argument("--once", action="store_true", help="one cycle, then exit (0: something is served)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    control = ModelServerControl(args.address, args.model_name)
    try:
        admission = Admission(
            control,
            args.config,
            args.model_repo,
            {CONTAINER_MODELS: args.model_repo},
            args.model_name,
            drain_s=args.drain_s,
            settle_s=0.0 if args.once else args.settle_s,
            server_model_repo=args.server_model_repo,
        )
    except (AdmissionError, ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logger.info("admission for %s at %s; state in %s", args.model_name, args.address, admission.state_file)
    if args.once:
        state = admission.cycle()
        print(state.to_json())
        return 0 if state.served else 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        run(admission, stop, args.poll_s)
    finally:
        control.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
