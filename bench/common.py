"""What every benchmark shares: result rows, the machine description, RSS, timing helpers."""

from __future__ import annotations

import gc
import os
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Row:
    """One measured number, with its target when it has one (met is None without a target)."""

    what: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None
    digits: int = 0

    @property
    def shown(self) -> str:
        return f"{self.value:,.{self.digits}f} {self.unit}".rstrip()

    @property
    def verdict(self) -> str:
        return {True: "met", False: "**NOT met**", None: "—"}[self.met]


@dataclass
class Report:
    """What a benchmark module's run() returns: a section of BENCHMARKS.md."""

    title: str
    about: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)
    """Flat machine-readable results (for tests and for scripts)."""

    def add(self, key: str, row: Row) -> None:
        self.rows.append(row)
        self.numbers[key] = row.value

    def markdown(self) -> str:
        lines = [self.about, "", "| measurement | result | target | |", "|---|---:|---|---|"]
        for row in self.rows:
            lines.append(f"| {row.what} | {row.shown} | {row.target or '—'} | {row.verdict} |")
        if self.notes:
            lines.append("")
            lines.extend(f"- {note}" for note in self.notes)
        return "\n".join(lines)

    def text(self) -> str:
        width = max((len(r.what) for r in self.rows), default=0)
        out = [f"== {self.title}"]
        for row in self.rows:
            target = f"  (target {row.target}: {row.verdict.strip('*')})" if row.target else ""
            out.append(f"  {row.what:<{width}}  {row.shown:>22}{target}")
        out.extend(f"  * {note}" for note in self.notes)
        return "\n".join(out)


# --- Measuring ---------------------------------------------------------------------------------


def rss_mib() -> float:
    """Resident set size of this process, from /proc/self/status (VmRSS, in KiB)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def timed(loop: Callable[[], object]) -> float:
    """Seconds one call of `loop` takes, after a full collection (gc stays on while it runs)."""
    gc.collect()
    start = time.perf_counter()
    loop()
    return time.perf_counter() - start


# --- The machine -------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    """The facts a reader needs to compare numbers across runs."""
    return {
        "CPU": _cpu_model(),
        "cores": f"{os.cpu_count()} logical (this process may use {len(os.sched_getaffinity(0))})",
        "RAM": _ram(),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "durable-rules": _version("durable-rules"),
        "commit": _git_commit(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram() -> str:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def _git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        changed = git("diff", "--name-only", "HEAD").splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    if not changed:
        return commit
    shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
    return f"{commit} plus uncommitted changes to {shown}"
