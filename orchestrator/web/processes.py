"""The worker processes that share state (the rate limiter's buckets, the line of analyses): whether one
is still there, so what a dead one held can be taken back."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """Whether process `pid` exists (under any user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, under another user
    return True
