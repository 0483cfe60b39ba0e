"""Run admission beside a model server until stopped:

    python -m serving.admission --address 127.0.0.1:8500 --config serving/models.config \\
        --model-repo model_repo

For a whole cluster (serving/admission/bucket.py): the model repository is the sync's mirror of every
complete version in the bucket, the bucket's served config is mirrored beside it, and every decision is
pushed to the bucket (read-write keys: SHINE_S3_ENDPOINT and SHINE_S3_* as for serving.sync):

    python -m serving.admission --address 127.0.0.1:8500 --config /models/models.config \\
        --model-repo /models --bucket s3://BUCKET/PREFIX --bucket-config /bucket-config
    python -m serving.admission --check /models --max-age-s 60      # probe: exit 0 while it cycles

State: <model_repo>/<model>/admission.json (see serving/admission/state.py); config: --config.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from serving import contract
from serving.admission.admitter import Admission
from serving.admission.bucket import BucketLink, seed
from serving.admission.control import ModelServerControl, ReloadRefused, ServerDown
from serving.admission.errors import AdmissionError
from serving.admission.state import StateError
from serving.bucket import BucketError, BucketSettings, BucketUrl, ModelBucket
from serving.config import ConfigError
from serving.repository import CONTAINER_MODELS

ROOT = Path(__file__).resolve().parent.parent.parent

logger = logging.getLogger("serving.admission")


HEARTBEAT = ".admission.alive"


def run(admission: Admission, stop: threading.Event, poll_s: float, link: BucketLink | None = None) -> None:
    """Cycle until `stop` is set; every failure is logged and the next cycle tries again."""
    down = False
    bucket_away = False
    heartbeat = admission.model_repo / HEARTBEAT
    while not stop.is_set():
        try:
            admission.cycle()
            if link is not None:
                try:
                    link.take_request()
                    link.publish()
                    if bucket_away:
                        logger.info("bucket reachable again")
                    bucket_away = False
                except BucketError as exc:
                    if not bucket_away:
                        logger.warning("bucket not usable (%s); decisions are pushed once it is", exc)
                    bucket_away = True
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
        heartbeat.touch()
        stop.wait(poll_s)


def check(model_repo: Path, max_age_s: float, now: float | None = None) -> str | None:
    """None when the admission loop ran within `max_age_s`; else why not (for the container's probes)."""
    try:
        age = (time.time() if now is None else now) - (model_repo / HEARTBEAT).stat().st_mtime
    except OSError as exc:
        return f"admission has not cycled in {model_repo}: {exc}"
    if age > max_age_s:
        return f"admission last cycled {age:.0f} s ago (over {max_age_s:g} s)"
    return None


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
    parser.add_argument("--bucket", default="", help="s3://BUCKET/PREFIX: decide for the cluster it serves")
    parser.add_argument(
        "--bucket-config", type=Path, help="where the sync mirrors the bucket's served config (with --bucket)"
    )
    parser.add_argument("--check", type=Path, metavar="MODEL_REPO", help="probe: exit 0 while it cycles")
    parser.add_argument("--max-age-s", type=float, default=60.0)
    args = parser.parse_args(argv)
    if args.check:
        problem = check(args.check, args.max_age_s)
        if problem:
            print(problem, file=sys.stderr)
        return 1 if problem else 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    bucket = None
    if args.bucket:
        try:
            bucket = ModelBucket(BucketSettings.from_env(), BucketUrl.parse(args.bucket))
        except ValueError as exc:
            parser.error(str(exc))
        if args.bucket_config is not None:
            for path in seed(args.config, args.model_repo, args.bucket_config):
                logger.info("took %s from the bucket's served config", path)
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
    link = None if bucket is None else BucketLink(admission, bucket, drain_s=args.drain_s)
    if args.once:
        state = admission.cycle()
        print(state.to_json())
        return 0 if state.served else 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        run(admission, stop, args.poll_s, link)
    finally:
        control.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
