"""The `lifecycle` console script. Each command is a thin wrapper over an engine function."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import click

from connectors.crm_mappings import mapping_problems
from engine import config, embedded, timeline
from engine.errors import InvalidEvent, RulesError
from engine.model import BehaviorEvent, ContactState
from engine.process import ContactReplay
from engine.rules import Rules, check_text, from_text, load
from engine.rules.scenarios import run_file, scenario_file_for

DEFAULT_RULES = os.environ.get("RULES_FILE", "rules.yaml")


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
    if ruleset is not None:
        problems = [*problems, *mapping_problems(ruleset)]
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


@main.command()
@click.argument("events", type=click.File("r", encoding="utf-8"))
@click.option(
    "--rules",
    "rules_path",
    default=DEFAULT_RULES,
    type=click.Path(dir_okay=False),
    show_default=True,
    help="Rules file to run the events through.",
)
def simulate(events, rules_path: str) -> None:
    """Run EVENTS.jsonl (one normalized event per line) through the rules, in memory.

    No Redis needed. Prints each contact's timeline: every event, the rules that fired and what
    the guardrails made of them. Scheduled events fire when they are due.
    """
    try:
        rules = load(rules_path)
    except RulesError as exc:
        raise click.ClickException(str(exc)) from None
    parsed, bad = _read_events(events)
    replays: dict[str, ContactReplay] = {}
    unique = {event.id: event for event in reversed(parsed)}  # an event id applies once
    for event in sorted(unique.values(), key=lambda e: e.occurred_at):
        replay = replays.setdefault(event.email, ContactReplay(rules, ContactState(event.email)))
        replay.process(event)
    for replay in replays.values():
        entries = [timeline.entry(step, step.event.occurred_at) for step in replay.steps]
        click.echo(timeline.render(replay.state, entries))
    duplicates = len(parsed) - len(unique)
    click.echo(
        f"{len(unique)} event(s), {duplicates} duplicate(s), {len(replays)} contact(s), "
        f"{bad} line(s) refused; rules version {rules.version}"
    )
    if bad:
        sys.exit(1)


def _read_events(stream) -> tuple[list[BehaviorEvent], int]:
    parsed, bad = [], 0
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            parsed.append(BehaviorEvent.from_dict(json.loads(line)))
        except json.JSONDecodeError as exc:
            click.echo(f"{stream.name}:{number}: error: not JSON: {exc.msg}", err=True)
            bad += 1
        except InvalidEvent as exc:
            click.echo(f"{stream.name}:{number}: error: {exc.detail}", err=True)
            bad += 1
    return parsed, bad


REQUEST_TIMEOUT = 15
"""`lifecycle serve --timeout`: gunicorn kills and replaces a sync worker busy with one request for
longer than this, which is what cuts off a client trickling its headers or body (a slowloris).
Legitimate requests take well under a second (a frozen Redis is answered 503 within about 5 s),
and a 30 MiB email post needs about 2 MB/s to arrive within 15 s. A sync worker serves one at a
time: with N workers, others are still answered while up to N - 1 clients trickle; beyond that
they wait up to this long. Public exposure wants a buffering proxy in front (README, "Reliability
and scale")."""


def default_web_workers() -> int:
    """gunicorn's own advice, 2 x cores + 1: a sync worker waiting on Redis leaves its core to
    another (measured on 2 cores: with 2 workers the accept path stalled on that round trip,
    ~12 % of the cores idle under load; BENCHMARKS.md, ingest)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return 2 * (cores or 1) + 1


@main.command()
@click.option("--port", type=int, default=None, help="Port (default: $PORT or 8000).")
@click.option("--host", default=None, help="Interface (default: $HOST or 127.0.0.1).")
@click.option(
    "--workers",
    type=int,
    default=None,
    help="gunicorn worker processes (default: $WEB_CONCURRENCY or 2 x cores + 1).",
)
@click.option(
    "--threads",
    type=int,
    default=1,
    show_default=True,
    help="Threads per worker (sync workers measured fastest on 2 cores). Above 1 gunicorn runs "
    "gthread workers, whose threads --timeout does not cut off: keep 1 unless a buffering proxy "
    "is in front.",
)
@click.option(
    "--timeout",
    type=click.IntRange(min=1),
    default=REQUEST_TIMEOUT,
    show_default=True,
    help="Seconds one request may hold a worker; a client still sending after that is cut off "
    "(its worker is replaced).",
)
def serve(
    port: int | None, host: str | None, workers: int | None, threads: int, timeout: int
) -> None:
    """Run the web service under gunicorn (sync workers: one request at a time each)."""
    settings = config.from_env()
    port = port or settings.port
    host = host or os.environ.get("HOST", "127.0.0.1")
    workers = workers or int(os.environ.get("WEB_CONCURRENCY") or default_web_workers())
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"{host}:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--access-logfile",
        "-",
        "--timeout",
        str(timeout),
        "--graceful-timeout",
        "20",
        "engine.web:create_app()",
    ]
    click.echo(f"lifecycle web on http://{host}:{port} ({workers} workers)")
    os.execv(sys.executable, argv)


@main.command()
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@click.option(
    "--queues",
    default="events,sync",
    show_default=True,
    help="Queues to work on, comma-separated. One worker per queue keeps CRM rate limits from "
    "ever holding events back (the Procfile runs it so).",
)
def worker(burst: bool, queues: str) -> None:
    """Run an RQ worker (with the scheduler) for the events and/or sync queues."""
    from engine.worker import QUEUES, run_worker

    chosen = tuple(dict.fromkeys(q.strip() for q in queues.split(",") if q.strip()))
    unknown = [q for q in chosen if q not in QUEUES]
    if unknown or not chosen:
        raise click.BadParameter(f"choose from {', '.join(QUEUES)}", param_hint="--queues")
    run_worker(config.from_env(), burst=burst, queues=chosen)


@main.command("redis")
def redis_server() -> None:
    """Run the embedded Redis under ./var/ (for `make run`); idle when REDIS_URL is set."""
    settings = config.from_env()
    if not settings.embedded:
        click.echo("REDIS_URL is set: no embedded Redis needed")
        signal.pause()
        return
    embedded.var_dir(settings).mkdir(parents=True, exist_ok=True)
    command = embedded.redis_command(settings)
    click.echo(
        f"embedded Redis at {embedded.redis_url(settings)} (append-only file in "
        f"{embedded.var_dir(settings)})"
    )
    os.execv(command[0], command)


def _services():
    from engine.web.services import Services

    return Services(config.from_env())


@main.command()
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="The explain view as JSON.")
def contact(email: str, as_json: bool) -> None:
    """A contact's stage, status, counters, sync state and timeline (the explain view)."""
    from engine.model import ContactState, normalize_email
    from engine.store import StoreUnavailable
    from engine.web.api import explain

    svc = _services()
    try:
        stored = svc.store.contact(normalize_email(email))
    except (InvalidEvent, StoreUnavailable) as exc:
        raise click.ClickException(exc.detail) from None
    if stored is None:
        raise click.ClickException(f"no contact {email}")
    view = explain(svc, stored)
    if as_json:
        click.echo(json.dumps(view, indent=2))
        return
    state = ContactState(view["email"], view["stage"], view["status"], view["counters"])
    click.echo(timeline.render(state, view["timeline"]))
    for crm, sync in view["sync"].items():
        error = f", error: {sync['error']}" if sync["error"] else ""
        click.echo(f"  sync {crm}: {sync['state']} (version {sync['synced_version']}){error}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="The funnel report as JSON.")
def funnel(as_json: bool) -> None:
    """Contacts per stage now and ever, conversion between stages, median time to reach."""
    from engine.store import StoreUnavailable
    from engine.web.api import funnel_report

    try:
        report = funnel_report(_services())
    except StoreUnavailable as exc:
        raise click.ClickException(exc.detail) from None
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"{report['total_contacts']} contacts (rules {report['rules_version']})")
    click.echo(f"  {'stage':<26}{'now':>8}{'reached':>9}{'conv.':>8}{'median h':>10}")
    for row in report["stages"]:
        conversion = row["conversion_from_previous"]
        median = row["median_hours_to_reach"]
        click.echo(
            f"  {row['stage']:<26}{row['current']:>8}{row['reached']:>9}"
            f"{f'{conversion:.0%}' if conversion is not None else '-':>8}"
            f"{f'{median:.1f}' if median is not None else '-':>10}"
        )
    statuses = ", ".join(f"{k} {v}" for k, v in report["statuses"].items() if v)
    click.echo(f"  lead statuses: {statuses or 'none yet'}")


@main.command()
@click.option(
    "--replay",
    "replay_id",
    is_flag=False,
    flag_value="all",
    default=None,
    metavar="[ID]",
    help="Replay every quarantined delivery (or one ID) through "
    "today's parsers; those now usable are accepted and leave the quarantine.",
)
@click.option("--limit", default=50, show_default=True, help="How many to list.")
def quarantine(replay_id: str | None, limit: int) -> None:
    """Deliveries kept because part of them could not be used (no email, say)."""
    from connectors import SOURCES
    from engine.pipeline import utcnow
    from engine.quarantine import replay
    from engine.store import StoreUnavailable

    svc = _services()
    try:
        if replay_id is None:
            _list_quarantine(svc.store.quarantined(count=limit))
            return
        results = replay(svc.store, SOURCES, utcnow(), None if replay_id == "all" else replay_id)
    except StoreUnavailable as exc:
        raise click.ClickException(exc.detail) from None
    for r in results:
        if r.released:
            click.echo(
                f"{r.entry_id} {r.source}: replayed, {r.accepted} accepted, "
                f"{r.duplicates} duplicate(s)"
            )
        else:
            why = r.error or "; ".join(r.still_unusable or [])
            click.echo(f"{r.entry_id} {r.source}: still kept ({why}); {r.accepted} accepted")
    if results:
        svc.wake_events()
    click.echo(f"{sum(r.released for r in results)} of {len(results)} released")


@main.command("dead-letters")
@click.option(
    "--retry",
    "retry_email",
    is_flag=False,
    flag_value="all",
    default=None,
    metavar="[EMAIL]",
    help="Push again (every dead letter, or one contact's) after fixing the cause.",
)
def dead_letters(retry_email: str | None) -> None:
    """Contacts whose CRM push failed for good, with the CRM's message."""
    from engine.pipeline import utcnow, wake_sync_for
    from engine.store import StoreUnavailable

    svc = _services()
    try:
        letters = {crm: svc.store.dead_letters(crm) for crm in svc.settings.crm_targets}
        if retry_email is None:
            for crm, rows in letters.items():
                for row in rows:
                    click.echo(
                        f"{crm:<11} {row['email']:<32} {row.get('updated_at', '')}  "
                        f"{row.get('error', '')}"
                    )
            total = sum(len(rows) for rows in letters.values())
            click.echo(f"{total} dead letter(s) (retry with: lifecycle dead-letters --retry)")
            return
        retried = 0
        for crm, rows in letters.items():
            for row in rows:
                if retry_email in ("all", row["email"]):
                    retried += svc.store.retry_dead_letter(crm, row["email"], utcnow())
            wake_sync_for(svc.redis, crm)
    except StoreUnavailable as exc:
        raise click.ClickException(exc.detail) from None
    click.echo(f"{retried} contact(s) queued for another push")


def _list_quarantine(items: list[dict]) -> None:
    for item in items:
        size = len(item["body"])
        click.echo(
            f"{item['id']}  {item['received_at']}  {item['source']:<10} {size:>8} bytes  "
            f"{item['reason']}"
        )
    click.echo(
        f"{len(items)} kept deliver{'y' if len(items) == 1 else 'ies'} "
        "(replay with: lifecycle quarantine --replay [ID])"
    )


@main.command()
def info() -> None:
    """Where the service is and how to send it a first event."""
    settings = config.from_env()
    token = embedded.api_token(settings)
    url = f"http://127.0.0.1:{settings.port}"
    if settings.api_token:
        where, bearer = "API_TOKEN", "$API_TOKEN"
    elif token:
        where = f"generated, in {embedded.var_dir(settings) / 'api_token'}"
        bearer = f"$(cat {embedded.var_dir(settings) / 'api_token'})"
    else:
        where, bearer = "unset: set API_TOKEN", "<API_TOKEN>"
    click.echo(f"""
  Lifecycle engine: {url}    (health: {url}/healthz)
  Redis:            {embedded.redis_url(settings)}
  CRM targets:      {", ".join(settings.crm_targets)}
  API token:        {where}

  Send a first event, then look at the contact:
    curl -s -X POST {url}/api/events -H "Authorization: Bearer {bearer}" \\
      -H 'Content-Type: application/json' \\
      -d '{{"id": "first-1", "type": "content_downloaded", "email": "ann@example.com",
           "occurred_at": "2026-11-26T10:00:00Z", "properties": {{"asset": "guide.pdf"}}}}'
    curl -s {url}/api/contacts/ann@example.com -H "Authorization: Bearer {bearer}"
""")


# --- backtest and demo ------------------------------------------------------------------------

PROGRESS_ABOVE = 10_000
"""Without a terminal, a progress bar is shown only for runs over this many stored events."""


@main.command("backtest")
@click.option(
    "--rules",
    "candidate_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The candidate rules file, compared with the current ones (RULES_FILE).",
)
@click.option(
    "--since",
    default=None,
    metavar="DURATION",
    help="Only events that occurred in the last DURATION (90d, 12h, 30m); default: the whole "
    "stored history. Contacts start from nothing at the window's start, on both sides.",
)
@click.option(
    "--examples",
    default=5,
    show_default=True,
    type=click.IntRange(min=0),
    help="Contacts whose outcome changes to show.",
)
@click.option("--json", "as_json", is_flag=True, help="The whole comparison as JSON.")
def backtest_command(candidate_path: str, since: str | None, examples: int, as_json: bool) -> None:
    """Replay the stored event history through the current and the candidate rules, in memory.

    Prints each side's funnel (now and reached per stage, conversion), the difference, and
    examples of contacts whose stage or status ends differently, with the rules that made the
    difference. Nothing is written: the running engine is not touched.
    """
    import time
    from datetime import UTC, datetime

    import redis

    from engine import backtest as bt
    from engine.rules.schema import parse_duration
    from engine.store import StoreUnavailable

    window = parse_duration(since) if since else None
    if since and window is None:
        raise click.BadParameter(
            f"{since!r} is no duration; use e.g. 90d, 12h, 30m", param_hint="--since"
        )
    settings = config.from_env()
    current = _load_rules_or_exit(settings.rules_file, "current rules (RULES_FILE)")
    candidate = _load_rules_or_exit(candidate_path, "candidate rules")
    for warning in candidate.warnings:
        click.echo(str(warning), err=True)
    now = datetime.now(UTC).replace(microsecond=0)
    client = redis.Redis.from_url(
        embedded.redis_url(settings), socket_timeout=30, socket_connect_timeout=3
    )
    try:
        stored = bt.stored_event_count(client)
        show = sys.stderr.isatty() or stored > PROGRESS_ABOVE
        started = time.perf_counter()
        with _progress(show, stored, "reading the event log") as update:
            history = bt.read_history(client, now - window if window else None, progress=update)
        read_seconds = time.perf_counter() - started
    except StoreUnavailable as exc:
        where = embedded.redis_url(settings)
        raise click.ClickException(
            f"cannot read the event history: {exc.detail} at {where}. Is the engine's Redis "
            "running (`make run` starts the embedded one), and is REDIS_URL the one it uses?"
        ) from None
    finally:
        client.close()
    started = time.perf_counter()
    with _progress(show, len(history.events), "replaying through both rule sets") as update:
        result = bt.backtest(history.events, current, candidate, now, examples, update)
    replay_seconds = time.perf_counter() - started
    if as_json:
        seconds = {"read": round(read_seconds, 3), "replay": round(replay_seconds, 3)}
        body = {**result.to_dict(), "left_out": history.skipped(), "seconds": seconds}
        click.echo(json.dumps(body, indent=2))
        return
    click.echo(bt.render(result, settings.rules_file, candidate_path, history))
    click.echo(
        f"\n(read {history.entries:,} log entries in {read_seconds:.1f} s, replayed "
        f"{result.events:,} events twice in {replay_seconds:.1f} s)"
    )


def _load_rules_or_exit(path: str, what: str) -> Rules:
    try:
        return load(path)
    except RulesError as exc:
        click.echo(str(exc), err=True)
        click.echo(f"{path}: the {what} are not valid (see `lifecycle check {path}`)", err=True)
        sys.exit(1)


class _progress:
    """click.progressbar on stderr when `show`, else nothing; yields an update(n) function."""

    def __init__(self, show: bool, length: int, label: str):
        self.bar = (
            click.progressbar(length=max(length, 1), label=label, file=sys.stderr) if show else None
        )

    def __enter__(self):
        if self.bar is None:
            return None
        self.bar.__enter__()
        return self.bar.update

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


@main.command("demo")
@click.option("--url", default=None, help="The running service (default: http://127.0.0.1:$PORT).")
@click.option(
    "--timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Seconds to wait for the service to process the events.",
)
def demo_command(url: str | None, timeout: float) -> None:
    """Play the seed's story for six people against the running service, through real HTTP.

    Events go to /webhooks/standard, signed, when STANDARD_WEBHOOK_SECRET is set, else to
    /api/events with API_TOKEN (or the var/api_token `make run` generated). Then it waits until
    the service has processed them and prints each contact: stage, status, the rules that fired
    and the CRM sync state. Running it again sends the same event ids (duplicates: nothing
    changes).
    """
    from engine import demo

    settings = config.from_env()
    url = url or f"http://127.0.0.1:{settings.port}"
    token = demo.find_token(settings.api_token, embedded.var_dir(settings))
    secret = settings.webhook_secrets.get("standard")
    try:
        outcomes = demo.run(url, token, secret, timeout=timeout, echo=click.echo)
    except demo.DemoError as exc:
        raise click.ClickException(str(exc)) from None
    if not all(outcome.done for outcome in outcomes):
        sys.exit(1)


if __name__ == "__main__":
    main()
