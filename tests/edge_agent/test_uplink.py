"""Tests for edge_agent.uplink: replayed telemetry flags, and the replay rate limiter."""

from __future__ import annotations

import asyncio
import math
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.wire import (
    CommandSet,
    GatewayState,
    GatewayStatus,
    Quantity,
    Reading,
    Readings,
    Telemetry,
    decode_telemetry,
    encode,
)
from edge_agent import uplink
from edge_agent.uplink import RateLimiter, mark_replayed


def _telemetry(n: int, *, replayed: bool = False) -> Telemetry:
    return Telemetry.of(
        gateway="east-1",
        boot_t=1.7e9,
        seq=42,
        t=1.8e9,
        readings=tuple(
            Reading(
                zone=f"zone-{i}",
                point=list(Quantity)[i % len(Quantity)],
                t=1.8e9 - i,
                value=None if i % 3 == 2 else 400.0 + i,
                quality=0 if i % 3 != 2 else 1,
                replayed=replayed and i % 2 == 0,
            )
            for i in range(n)
        ),
    )


# --- mark_replayed ----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 7])
def test_mark_replayed_flags_every_reading_and_nothing_else(n: int) -> None:
    original = _telemetry(n)
    marked = decode_telemetry(mark_replayed(encode(original)))
    assert all(r.replayed for r in marked.rows)
    assert len(marked) == n
    # Everything else as it was.
    unflag = Readings.of(r._replace(replayed=False) for r in marked.rows)
    assert marked.model_copy(update={"readings": unflag}) == original


def test_mark_replayed_is_idempotent() -> None:
    once = mark_replayed(encode(_telemetry(4, replayed=True)))
    assert mark_replayed(once) == once
    assert all(r.replayed for r in decode_telemetry(once).rows)


def test_mark_replayed_of_an_empty_message_is_that_message() -> None:
    empty = _telemetry(0)
    assert decode_telemetry(mark_replayed(encode(empty))) == empty


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"{",
        b"not json at all",
        b"\xff\xfe\x00",
        b'{"v": 1, "gateway": "east-1"}',  # telemetry without its fields
        b'{"v": 2, "gateway": "east-1", "boot_t": 0, "seq": 0, "t": 0, "readings": []}',
        encode(GatewayStatus(gateway="east-1", state=GatewayState.ONLINE, t=1.8e9)),
        encode(CommandSet(controller="c", seq=1, t=1.0, lease_s=5.0, valid_until=6.0, commands=())),
    ],
)
def test_mark_replayed_leaves_foreign_payloads_alone(payload: bytes) -> None:
    assert mark_replayed(payload) is payload


@given(payload=st.binary(max_size=300))
def test_mark_replayed_never_raises(payload: bytes) -> None:
    out = mark_replayed(payload)
    assert isinstance(out, bytes)


# --- RateLimiter ------------------------------------------------------------------------------


class Horizon(Exception):  # noqa: N818  (a signal to stop, not an error of the code)
    """The fake clock ran past the time a test allows: the limiter is waiting forever."""


class FakeTime:
    """A monotonic clock that only moves when the limiter sleeps."""

    def __init__(self, horizon_s: float = 1e5) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []
        self.horizon_s = horizon_s

    def __call__(self) -> float:
        return self.t

    async def sleep(self, delay: float) -> None:
        assert delay >= 0.0, delay
        self.sleeps.append(delay)
        # As asyncio's: the clock reads at least the deadline on waking, and has moved (a sleep
        # shorter than the clock's resolution still takes one tick).
        self.t = max(self.t + delay, math.nextafter(self.t, math.inf))
        if self.t > self.horizon_s or len(self.sleeps) > 100_000:
            raise Horizon(f"still waiting at t = {self.t} s after {len(self.sleeps)} sleeps")


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    """The limiter's clock and its asyncio.sleep, both fake: no wall-clock time passes."""
    fake = FakeTime()
    monkeypatch.setattr(uplink, "asyncio", SimpleNamespace(sleep=fake.sleep))
    return fake


def _acquire_times(limiter: RateLimiter, fake: FakeTime, n: int) -> list[float]:
    async def run() -> list[float]:
        times = []
        for _ in range(n):
            await limiter.acquire()
            times.append(fake.t)
        return times

    return asyncio.run(run())


def test_the_limiter_lets_a_burst_of_one_seconds_worth_then_paces(fake_time: FakeTime) -> None:
    limiter = RateLimiter(5.0, fake_time)
    times = _acquire_times(limiter, fake_time, 15)
    assert times[:5] == [0.0] * 5
    assert times[5:] == pytest.approx([0.2 * k for k in range(1, 11)])


@given(
    rate=st.floats(1.0, 500.0),
    n=st.integers(1, 300),
    idle=st.floats(0.0, 10.0),
)
def test_the_limiter_allows_at_most_rate_per_second(rate: float, n: int, idle: float) -> None:
    fake = FakeTime()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(uplink, "asyncio", SimpleNamespace(sleep=fake.sleep))
        limiter = RateLimiter(rate, fake)
        fake.t += idle  # an idle bucket holds no more than one second's worth
        times = _acquire_times(limiter, fake, n)
    assert times == sorted(times)
    for i, t in enumerate(times):
        # The (i+1)-th acquisition: a second's worth from the full bucket at once, then one per
        # 1/rate seconds; never sooner (at most `rate` per second) and not later (no
        # over-throttling).
        due = idle + max(0.0, (i + 1 - rate) / rate)
        assert t == pytest.approx(due, rel=1e-9, abs=1e-9), (i, t, due)
    # Sustained: n acquisitions take at least (n - rate) / rate seconds.
    assert times[-1] - idle >= (n - rate) / rate - 1e-9


def test_acquisitions_after_a_pause_are_immediate_again(fake_time: FakeTime) -> None:
    limiter = RateLimiter(2.0, fake_time)
    _acquire_times(limiter, fake_time, 6)  # empties the bucket
    fake_time.t += 10.0  # a long pause refills it, to one second's worth only
    before = fake_time.t
    times = _acquire_times(limiter, fake_time, 4)
    assert times[:2] == [before, before]
    assert times[2:] == pytest.approx([before + 0.5, before + 1.0])


def test_a_rate_below_one_per_second_still_lets_messages_through(fake_time: FakeTime) -> None:
    limiter = RateLimiter(0.5, fake_time)
    times = _acquire_times(limiter, fake_time, 3)
    assert times == pytest.approx([2.0, 4.0, 6.0], abs=2.0)
