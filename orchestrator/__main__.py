"""`python -m orchestrator analyze PHOTO...`: the command line (orchestrator/cli.py)."""

from __future__ import annotations

import sys

from orchestrator.cli import main

if __name__ == "__main__":
    sys.exit(main())
