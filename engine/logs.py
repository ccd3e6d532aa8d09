"""Logging for the processes we run: one line per record on stderr, where honcho, systemd and
container runtimes collect it. No secret reaches a record (tests/test_secrets.py)."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def to_stderr(level: int = logging.INFO) -> None:
    """Unless something (a test runner, an embedding application) configured logging already."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, format=FORMAT)
