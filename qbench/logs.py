"""Logging for rule scripts: everything a script says, tracebacks included, goes to the
rule's log file, which the rule names."""

from __future__ import annotations

import logging
import sys


def log_to(path: str) -> None:
    """Send stderr and the `logging` root to `path`. (Snakemake 9 deletes a job's log
    before a retry, so the log is the last attempt's; the shard records the attempt.)"""
    stream = open(path, "a", buffering=1)
    sys.stderr = stream
    logging.basicConfig(
        stream=stream, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
