"""Hot reload: notice a changed rules file and swap the new rules in only when they are valid.

An edge (it reads the file system and the clock). A file that stops being valid keeps the last good
rules in force and reports the error; the version is the content hash, so touching a file without
changing it reloads nothing.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from engine.errors import RulesError
from engine.rules import Rules, from_text
from engine.rules.schema import version_of

log = logging.getLogger("engine.rules")


@dataclass(frozen=True)
class ReloadStatus:
    version: str
    loaded_at: float
    error: str | None = None
    """Why the file on disk is not in force (None when it is)."""
    error_at: float | None = None


class RulesReloader:
    """`current()` returns the rules in force, re-reading the file at most every `interval` s."""

    def __init__(self, path: str | Path, interval: float = 1.0):
        self.path = Path(path)
        self.interval = interval
        self._stamp = self._stat()
        self._rules = _checked(self.path.read_text(encoding="utf-8"), str(self.path))
        self._checked = time.monotonic()
        self.status = ReloadStatus(self._rules.version, time.time())

    def current(self) -> Rules:
        now = time.monotonic()
        if now - self._checked >= self.interval:
            self._checked = now
            self._maybe_reload()
        return self._rules

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def _maybe_reload(self) -> None:
        stamp = self._stat()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self._refuse(f"{self.path}: cannot read rules file: {exc}")
            return
        if version_of(text) == self._rules.version:
            self.status = ReloadStatus(self._rules.version, self.status.loaded_at)
            return
        try:
            rules = _checked(text, str(self.path))
        except RulesError as exc:
            self._refuse(str(exc))
            return
        log.info("rules reloaded: version %s -> %s", self._rules.version, rules.version)
        self._rules = rules
        self.status = ReloadStatus(rules.version, time.time())

    def _refuse(self, error: str) -> None:
        log.error(
            "rules file not reloaded, version %s stays in force:\n%s", self._rules.version, error
        )
        self.status = ReloadStatus(self._rules.version, self.status.loaded_at, error, time.time())


def _checked(text: str, filename: str) -> Rules:
    """The rules, refused when a CRM's own parser refuses its `crm:` mapping."""
    from connectors.crm_mappings import mapping_problems  # connectors build on engine.rules

    rules = from_text(text, filename)
    problems = mapping_problems(rules.ruleset)
    if problems:
        raise RulesError(problems)
    return rules
