"""Concern measures read on skin patches at a fixed physical scale, their adult reference and their
evaluation on data/ages (python -m export concerns-eval, concerns-report)."""
