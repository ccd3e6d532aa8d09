"""`python -m bench [MODULE ...] [--quick]`: run the benchmarks and rewrite BENCHMARKS.md.

A benchmark is a module of this package listed in MODULES that defines `TITLE` and
`run(quick: bool = False) -> bench.common.Report`. Each becomes one section of BENCHMARKS.md
between markers, so running one module rewrites its section and keeps the others.
`--quick` is a short smoke run (what the tests call): it prints, and leaves BENCHMARKS.md alone.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path

from bench.common import REPO, Report, machine

MODULES = ("rules_eval", "ingest", "crm_latency", "worker_memory", "sync", "backtest")
OUTPUT = REPO / "BENCHMARKS.md"

INTRO = """\
# Benchmarks

Reproduce with `make bench` (it runs `python -m bench`, about a quarter of an hour; `python -m
bench rules_eval` runs one benchmark, `--quick` a short smoke run that writes nothing). The ingest
benchmark needs wrk (`apt-get install wrk`; it installs it itself when run as root). This file is
generated: each section below is rewritten by its benchmark, with the machine it ran on. The
machines these run on are usually shared, so each benchmark repeats its measurements and compares
numbers taken in the same run rather than across runs; expect ±25 % between runs on 2 shared cores.
"""


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name} start -->", f"<!-- bench:{name} end -->"


def _existing_sections(text: str) -> dict[str, str]:
    sections = {}
    for name in MODULES:
        start, end = _markers(name)
        found = re.search(re.escape(start) + r"\n(.*?)\n" + re.escape(end), text, re.DOTALL)
        if found:
            sections[name] = found.group(1)
    return sections


def _machine_table(facts: dict[str, str]) -> str:
    rows = "\n".join(f"| {key} | {value} |" for key, value in facts.items())
    return f"| machine | |\n|---|---|\n{rows}"


def section(report: Report, facts: dict[str, str]) -> str:
    return f"## {report.title}\n\n{_machine_table(facts)}\n\n{report.markdown()}"


def write(path: Path, reports: dict[str, Report], facts: dict[str, str]) -> None:
    """Rewrite the sections of the modules that ran; keep the others as they were."""
    sections = _existing_sections(path.read_text(encoding="utf-8")) if path.exists() else {}
    sections.update({name: section(report, facts) for name, report in reports.items()})
    parts = [INTRO]
    for name in MODULES:
        if name in sections:
            start, end = _markers(name)
            parts.append(f"{start}\n{sections[name]}\n{end}\n")
    path.write_text("\n".join(parts), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE", help=f"one of {', '.join(MODULES)}")
    parser.add_argument("--quick", action="store_true", help="short smoke run; writes nothing")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="default: BENCHMARKS.md")
    args = parser.parse_args(argv)
    unknown = [name for name in args.modules if name not in MODULES]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    facts = machine()
    print("machine: " + "; ".join(f"{k} {v}" for k, v in facts.items()), flush=True)
    reports = {}
    for name in args.modules or MODULES:
        module = importlib.import_module(f"bench.{name}")
        reports[name] = module.run(quick=args.quick)
        print(reports[name].text(), flush=True)
    if not args.quick:
        write(args.output, reports, facts)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
