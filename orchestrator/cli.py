"""The command line: `python -m orchestrator analyze PHOTO... [--url URL] [--overlay DIR] [--json]`.

A client of a running Shine service (it imports nothing of the service itself): sends each photo to the
guest endpoint, prints a readable report per photo (or JSON), writes overlay pictures when asked, and
exits non-zero when any photo failed.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import requests

DEFAULT_URL = "http://localhost:8000"
ANALYZE_PATH = "/api/v2/analyze/guest"
# Generous: a 100 MB upload over a slow link, and the service's own deadlines inside it.
REQUEST_TIMEOUT_S = 120.0
# A 429 names how long to wait (Retry-After); wait that long at most this many times per photo.
RATE_LIMIT_RETRIES = 5
MAX_RETRY_WAIT_S = 60.0
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
BAR_WIDTH = 24


@dataclass
class Outcome:
    """One photo's result: the report, or an error code and message."""

    photo: Path
    status: int | None = None  # HTTP status; None when no answer came
    report: dict[str, Any] | None = None
    error: dict[str, Any] = field(default_factory=dict)
    overlay_file: Path | None = None

    @property
    def ok(self) -> bool:
        return self.report is not None


def analyze_photo(session: requests.Session, url: str, photo: Path, overlay: bool) -> Outcome:
    """Send one photo; waits out rate limits (Retry-After); raises requests.ConnectionError when the
    service cannot be reached."""
    try:
        data = photo.read_bytes()
    except OSError as exc:
        return Outcome(
            photo, error={"code": "UNREADABLE_FILE", "message": f"cannot read the file: {exc.strerror}"}
        )
    params = {"overlay": "true"} if overlay else {}
    for attempt in range(RATE_LIMIT_RETRIES + 1):
        response = session.post(
            url.rstrip("/") + ANALYZE_PATH,
            files={"image": (photo.name, data)},
            params=params,
            timeout=REQUEST_TIMEOUT_S,
        )
        if response.status_code != 429 or attempt == RATE_LIMIT_RETRIES:
            break
        time.sleep(min(MAX_RETRY_WAIT_S, float(response.headers.get("Retry-After", "1"))))
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code == 200 and isinstance(body, dict) and "concerns" in body:
        return Outcome(photo, response.status_code, report=body)
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {"code": f"HTTP_{response.status_code}", "message": response.text[:200].strip()}
    return Outcome(photo, response.status_code, error=error)


def write_overlay(outcome: Outcome, folder: Path, taken: set[Path]) -> None:
    """Save the answer's overlay as DIR/<photo stem>.overlay.png (-2, -3... for a stem seen before in
    this run); the answer then names the file instead of carrying the picture."""
    if outcome.report is None or "overlay" not in outcome.report:
        return
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{outcome.photo.stem}.overlay.png"
    copy = 1
    while target in taken:
        copy += 1
        target = folder / f"{outcome.photo.stem}-{copy}.overlay.png"
    taken.add(target)
    target.write_bytes(base64.b64decode(outcome.report["overlay"]["png_base64"]))
    outcome.overlay_file = target
    outcome.report["overlay"] = {"file": str(target)}


def _number(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _words(name: str | None) -> str:
    return "n/a" if not name else name.replace("_", " ")


def format_report(outcome: Outcome) -> str:
    """The readable report of one photo: a header line, a table of concerns, skin tone and type,
    warnings and regions not read; or the error."""
    name = str(outcome.photo)
    if outcome.report is None:
        status = f" (HTTP {outcome.status})" if outcome.status else ""
        return (
            f"{name}: FAILED {outcome.error.get('code', '')}{status}\n  {outcome.error.get('message', '')}\n"
        )
    report = outcome.report
    model = report["model"]
    lines = [
        f"{name}: {_words(report['view'])} view, overall {_number(report['overall']['score'])}/100 "
        f"({model['name']} v{model['version']}, {_number(report['timing_ms'].get('total'))} ms)",
        f"  {'concern':<14}{'score':>6}  {'severity':<12}regions",
    ]
    for concern, entry in report["concerns"].items():
        if entry.get("reason"):
            detail = entry["reason"]
        elif "count" in entry:
            count = entry.get("count") or 0
            detail = {0: "no lesions", 1: "1 lesion"}.get(count, f"{count} lesions")
        else:
            known = {r: v for r, v in entry["regions"].items() if v is not None}
            worst = min(known, key=known.__getitem__) if known else None
            detail = f"worst: {_words(worst)} {_number(known[worst])}" if worst else ""
        score, level = _number(entry["score"]), _words(entry["severity"])
        lines.append(f"  {_words(concern):<14}{score:>6}  {level:<12}{detail}".rstrip())
    tone, skin_type = report["skin_tone"], report["skin_type"]
    ita = f" (ITA {tone['ita_deg']:.1f} deg)" if tone.get("ita_deg") is not None else ""
    lines.append(
        f"  skin tone: {_words(tone.get('category'))}{ita}; skin type: {_words(skin_type.get('label'))}"
    )
    warnings = report["quality"]["warnings"]
    lines.append(f"  warnings: {', '.join(warnings) if warnings else 'none'}")
    hidden = [
        f"{_words(r)} ({_words(e['reason'])})" for r, e in report["regions"].items() if not e["visible"]
    ]
    if hidden:
        lines.append(f"  not read: {', '.join(hidden)}")
    if outcome.overlay_file is not None:
        lines.append(f"  overlay: {outcome.overlay_file}")
    return "\n".join(lines) + "\n"


def as_json(outcome: Outcome) -> dict[str, Any]:
    entry: dict[str, Any] = {"photo": str(outcome.photo), "status": outcome.status}
    if outcome.report is not None:
        entry["report"] = outcome.report
    else:
        entry["error"] = outcome.error
    return entry


class Progress:
    """A one-line progress bar on stderr, redrawn in place on a terminal, a line per photo otherwise."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self.shown = total > 1
        self.tty = stream.isatty()

    def update(self, done: int, photo: Path, failed: int) -> None:
        if not self.shown:
            return
        filled = round(BAR_WIDTH * done / self.total)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        failures = f", {failed} failed" if failed else ""
        line = f"[{bar}] {done}/{self.total}{failures} {photo.name}"
        if self.tty:
            self.stream.write("\r\x1b[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def clear(self) -> None:
        """Take the redrawn line off a terminal, so other output starts at the line's beginning."""
        if self.shown and self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def finish(self) -> None:
        """End the redrawn line on a terminal."""
        if self.shown and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def analyze_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    photos: list[Path] = args.photos
    progress = Progress(len(photos), err)
    outcomes: list[Outcome] = []
    taken: set[Path] = set()
    with requests.Session() as session:
        for photo in photos:
            reachable = True
            try:
                outcome = analyze_photo(session, args.url, photo, overlay=args.overlay is not None)
            except requests.RequestException as exc:
                message = f"cannot reach {args.url} ({exc.__class__.__name__}); is the service running?"
                outcome = Outcome(photo, error={"code": "SERVICE_UNREACHABLE", "message": message})
                reachable = False
            if args.overlay is not None:
                write_overlay(outcome, args.overlay, taken)
            outcomes.append(outcome)
            if not args.json:
                progress.clear()  # the report goes above the bar, not after it
                out.write(format_report(outcome) + ("\n" if len(photos) > 1 else ""))
                out.flush()
            progress.update(len(outcomes), photo, sum(not o.ok for o in outcomes))
            if not reachable:
                break  # no service: no point in sending the rest
    progress.finish()
    if args.json:
        json.dump([as_json(o) for o in outcomes], out, indent=2)
        out.write("\n")
    failed = sum(not o.ok for o in outcomes)
    if failed and len(photos) > 1:
        unsent = len(photos) - len(outcomes)
        err.write(
            f"{failed} of {len(photos)} photos failed" + (f" ({unsent} not sent)" if unsent else "") + "\n"
        )
    return EXIT_FAILED if failed else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m orchestrator", description="Shine's command line.")
    commands = parser.add_subparsers(dest="command", required=True)
    analyze = commands.add_parser(
        "analyze",
        help="analyse photos with a running Shine service",
        description="Send each photo to a running Shine service and print its skin report. Exits 1 "
        "when any photo failed (an error answer, an unreadable file, no service).",
    )
    analyze.add_argument("photos", nargs="+", type=Path, metavar="PHOTO")
    analyze.add_argument("--url", default=DEFAULT_URL, help=f"the service's base URL (default {DEFAULT_URL})")
    analyze.add_argument(
        "--overlay",
        type=Path,
        metavar="DIR",
        help="ask for the overlay picture and write it to DIR/<photo>.overlay.png",
    )
    analyze.add_argument(
        "--json",
        action="store_true",
        help="print a JSON array of {photo, status, report | error} instead of the tables",
    )
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the command line; returns the exit status (argparse exits 2 on a usage error)."""
    args = build_parser().parse_args(argv)
    return analyze_command(args, out or sys.stdout, err or sys.stderr)
