"""A changed rules file is swapped in only when valid; the version is the content hash."""

from __future__ import annotations

import os

import pytest

from engine.errors import RulesError
from engine.rules.reload import RulesReloader

V1 = "rules:\n  - {name: a, when: {event: deal_won}, then: {promote: customer}}\n"
V2 = "rules:\n  - {name: b, when: {event: deal_won}, then: {promote: customer}}\n"
BROKEN = "rules:\n  - {name: b, when: {event: deal_won}, then: {promote: custommer}}\n"


def write(path, text, bump=1):
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump * 1_000_000_000))


def test_a_valid_change_is_picked_up(tmp_path):
    path = tmp_path / "rules.yaml"
    write(path, V1)
    reloader = RulesReloader(path, interval=0)
    first = reloader.current().version
    write(path, V2, bump=2)
    assert reloader.current().version != first
    assert list(reloader.current().by_name) == ["b"]
    assert reloader.status.error is None


def test_an_invalid_change_keeps_the_old_rules_and_reports_why(tmp_path):
    path = tmp_path / "rules.yaml"
    write(path, V1)
    reloader = RulesReloader(path, interval=0)
    version = reloader.current().version
    write(path, BROKEN, bump=2)
    assert reloader.current().version == version
    assert f"{path}:2: error: [b] unknown stage 'custommer'" in reloader.status.error
    write(path, V2, bump=3)
    assert list(reloader.current().by_name) == ["b"]
    assert reloader.status.error is None


def test_a_deleted_file_keeps_the_old_rules(tmp_path):
    path = tmp_path / "rules.yaml"
    write(path, V1)
    reloader = RulesReloader(path, interval=0)
    path.unlink()
    assert list(reloader.current().by_name) == ["a"]
    assert "cannot read rules file" in reloader.status.error


def test_touching_without_changing_reloads_nothing(tmp_path):
    path = tmp_path / "rules.yaml"
    write(path, V1)
    reloader = RulesReloader(path, interval=0)
    rules = reloader.current()
    write(path, V1, bump=5)
    assert reloader.current() is rules


def test_the_file_is_not_reread_within_the_interval(tmp_path):
    path = tmp_path / "rules.yaml"
    write(path, V1)
    reloader = RulesReloader(path, interval=3600)
    write(path, V2, bump=2)
    assert list(reloader.current().by_name) == ["a"]


def test_an_invalid_file_at_startup_is_an_error(tmp_path):
    path = tmp_path / "rules.yaml"
    write(path, BROKEN)
    with pytest.raises(RulesError, match="custommer"):
        RulesReloader(path)
