"""Admission's own error: a change it will not make, or could not make in time.

The model server's failures are `control`'s (ServerDown, ReloadRefused), a version's failed check
`checks`' Refusal, an unreadable state file `state`'s StateError.
"""

from __future__ import annotations


class AdmissionError(RuntimeError):
    """A change admission will not make (a version that did not pass, a base path outside the model
    repository), or one it could not make in time."""
