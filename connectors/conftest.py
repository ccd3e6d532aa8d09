"""The shared fixtures (a real Redis, a clean database per test) for the connectors' own tests."""

from tests.conftest import redis_client, redis_url  # noqa: F401
