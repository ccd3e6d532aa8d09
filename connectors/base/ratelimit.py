"""One rolling-window rate limiter per CRM account, in Redis, shared by every worker on every
machine (HubSpot private apps: 100 or 190 requests per rolling 10 s).

A sorted set holds the send times of the last window; times come from Redis's own clock, so
machines with skewed clocks still share one budget. At most a tenth of the budget (rounded up to
whole groups of requests that go together) goes out in any tenth of the window: spending it all at
once would then stall every push (and every job queued behind it) for the rest of the window.
When the CRM answers 429 anyway (other apps spend the same account's budget), `pause` holds every
worker back for the time it asked.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable

import redis

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local paused = redis.call('PTTL', KEYS[2])
if paused > 0 then return paused end
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return tonumber(oldest[2]) + window - now + 1
end
-- at most a tenth of the budget in any tenth of the window: no burst-then-stall
local slice = math.floor(window / 10)
local recent = redis.call('ZRANGEBYSCORE', KEYS[1], now - slice, '+inf', 'WITHSCORES')
if #recent / 2 >= tonumber(ARGV[4]) then
  return tonumber(recent[2]) + slice - now + 1
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return 0
"""

_READY_IN = """
-- KEYS: window set, pause flag. ARGV: limit, window ms, requests wanted, per tenth of the
-- window. Takes no slot.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local paused = redis.call('PTTL', KEYS[2])
if paused > 0 then return paused end
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local slice, per_slice = math.floor(window / 10), tonumber(ARGV[4])
local n = math.min(tonumber(ARGV[3]), per_slice, limit)
local wait = 0
local function freed(since, over, span)  -- when the over-th oldest send since `since` ages out
  local sent = redis.call('ZRANGEBYSCORE', KEYS[1], since, '+inf', 'WITHSCORES',
                          'LIMIT', over - 1, 1)
  return tonumber(sent[2]) + span - now + 1
end
local used = redis.call('ZCOUNT', KEYS[1], '(' .. (now - window), '+inf')
if used + n > limit then wait = freed('(' .. (now - window), used + n - limit, window) end
local recent = redis.call('ZCOUNT', KEYS[1], now - slice, '+inf')
if recent + n > per_slice then
  wait = math.max(wait, freed(now - slice, recent + n - per_slice, slice))
end
return wait
"""


def parse_rate(text: str) -> tuple[int, float]:
    """'190/10s' -> (190, 10.0)."""
    count, _, per = text.partition("/")
    try:
        seconds = float(per.strip().removesuffix("s") or "1")
        limit = int(count)
    except ValueError:
        raise ValueError(f"a rate is written like 190/10s, got {text!r}") from None
    if limit <= 0 or seconds <= 0:
        raise ValueError(f"a rate needs a positive count and window, got {text!r}")
    return limit, seconds


class RollingWindowLimiter:
    def __init__(
        self,
        client: redis.Redis,
        account: str,
        limit: int,
        window_seconds: float,
        sleep: Callable[[float], None] = time.sleep,
        together: int = 1,
    ):
        """`together`: requests that usually go out back to back (a push's read and write); a
        tenth of the window then carries whole groups of them, so a caller who waits until
        ready_in(together) is 0 never leaves a slot of each tenth unused."""
        self.key = f"lc:rate:{account}"
        self.pause_key = f"lc:rate:{account}:pause"
        self.limit, self.window_ms = limit, int(window_seconds * 1000)
        tenth = max(1, math.ceil(limit / 10))
        self.per_tenth = min(limit, max(1, math.ceil(tenth / together) * together))
        self._acquire = client.register_script(_ACQUIRE)
        self._ready_in = client.register_script(_READY_IN)
        self._redis, self._sleep = client, sleep

    def acquire(self) -> float:
        """Block until a request may be sent; returns the seconds spent waiting."""
        waited = 0.0
        while True:
            wait_ms = int(
                self._acquire(
                    keys=[self.key, self.pause_key],
                    args=[self.limit, self.window_ms, secrets.token_hex(6), self.per_tenth],
                )
            )
            if wait_ms <= 0:
                return waited
            self._sleep(wait_ms / 1000)
            waited += wait_ms / 1000

    def ready_in(self, requests: int = 1) -> float:
        """Seconds until `requests` requests could go out without waiting (0: now); takes no
        slot. A sync job asks before a push, so it can give the worker to other work instead
        of sleeping in acquire()."""
        wait_ms = self._ready_in(
            keys=[self.key, self.pause_key],
            args=[self.limit, self.window_ms, requests, self.per_tenth],
        )
        return max(0, int(wait_ms)) / 1000

    def pause(self, seconds: float) -> None:
        """Hold every worker back (the CRM said 429 and how long to wait)."""
        self._redis.set(self.pause_key, "1", px=max(1, int(seconds * 1000)))

    def in_use(self) -> int:
        """Requests sent within the current window (for the dashboard)."""
        now_ms = int(time.time() * 1000)
        return int(self._redis.zcount(self.key, now_ms - self.window_ms, "+inf"))
