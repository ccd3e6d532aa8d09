"""The `lifecycle` console script. Each command is a thin wrapper over an engine function."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from engine.errors import RulesError
from engine.rules import Rules, check_text, from_text
from engine.rules.scenarios import run_file, scenario_file_for

DEFAULT_RULES = "rules.yaml"


@click.group()
def main() -> None:
    """Lifecycle automation engine: behaviour events + YAML rules -> guarded stage and status."""


@main.command()
@click.argument("rules", default=DEFAULT_RULES, type=click.Path(dir_okay=False))
@click.option(
    "--scenarios",
    type=click.Path(dir_okay=False),
    help="Scenario file to run (default: <rules>.test.yaml beside the rules, when it exists).",
)
def check(rules: str, scenarios: str | None) -> None:
    """Validate and lint RULES, then run its scenario tests. Exits 1 on any error."""
    ok = _check(Path(rules), Path(scenarios) if scenarios else None)
    sys.exit(0 if ok else 1)


def _check(path: Path, scenarios: Path | None) -> bool:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        click.echo(f"{path}:1: error: cannot read rules file: {exc}", err=True)
        return False
    ruleset, problems = check_text(text, str(path))
    for problem in problems:
        click.echo(str(problem))
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    if ruleset is None or errors:
        click.echo(f"{path}: {errors} error(s), {warnings} warning(s): not valid")
        return False
    rules = from_text(text, str(path))
    passed = _run_scenarios(rules, scenarios or scenario_file_for(path), explicit=bool(scenarios))
    click.echo(
        f"{path}: valid, version {rules.version}, {len(ruleset.rules)} rules, {warnings} warning(s)"
    )
    return passed


def _run_scenarios(rules: Rules, path: Path, explicit: bool) -> bool:
    if not path.exists():
        if explicit:
            click.echo(f"{path}:1: error: scenario file not found")
            return False
        click.echo(f"{path}: no scenario tests beside the rules (see README: Scenario tests)")
        return True
    try:
        results = run_file(rules, path)
    except RulesError as exc:
        click.echo(str(exc))
        return False
    for result in results:
        for failure in result.failures:
            click.echo(str(failure))
    failed = sum(not r.passed for r in results)
    click.echo(f"{path}: {len(results) - failed} scenario(s) passed, {failed} failed")
    return failed == 0


if __name__ == "__main__":
    main()
