"""Tests for controller.ingest: dedup per boot, clock correction, newest wins, clean values."""

from __future__ import annotations

import itertools
import math
import random
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.ingest import (
    QUANTITIES,
    SEQ_WINDOW,
    SKEW_IGNORED_S,
    SKEW_SAMPLES,
    STALE_AFTER_S,
    Ingested,
    SiteState,
)
from controller.wire import Quantity, Reading, Telemetry
from sensors.validation import Quality

ZONES = ("office-1", "office-2", "hall")
T0 = 1.8e9  # the controller's clock, epoch seconds
BOOT = T0 - 86_400.0
CO2, TZ, PIN, POUT = Quantity.CO2_PPM, Quantity.T_ZONE_C, Quantity.PEOPLE_IN, Quantity.PEOPLE_OUT


def reading(
    zone: str = "office-1",
    point: Quantity = CO2,
    t: float = T0,
    value: float | None = 500.0,
    quality: int = 0,
    *,
    replayed: bool = False,
) -> Reading:
    return Reading(zone=zone, point=point, t=t, value=value, quality=quality, replayed=replayed)


def message(
    *readings: Reading,
    seq: int = 0,
    boot_t: float = BOOT,
    gateway: str = "gw-1",
    t: float | None = None,
) -> Telemetry:
    """A telemetry message sent at `t` (default: its newest reading's time) by the gateway."""
    sent = t if t is not None else max((r.t for r in readings), default=T0)
    return Telemetry.of(gateway=gateway, boot_t=boot_t, seq=seq, t=sent, readings=readings)


def row(state: SiteState, zone: str, point: Quantity) -> tuple[float, float, int]:
    """(value, time, quality) of one zone's quantity in the current state."""
    q, z = QUANTITIES.index(point), state.index[zone]
    return float(state.value[q, z]), float(state.t[q, z]), int(state.quality[q, z])


def snapshot(state: SiteState) -> tuple[bytes, bytes, bytes, list[str | None]]:
    return (
        state.value.tobytes(),
        state.t.tobytes(),
        state.quality.tobytes(),
        list(state.gateway_of_zone),
    )


# --- duplicates and boots ----------------------------------------------------------------------


def test_a_fresh_message_updates_the_state_and_says_so() -> None:
    s = SiteState(ZONES)
    got = s.ingest(message(reading(value=612.0), reading("hall", TZ, value=21.5)), T0)
    assert got == Ingested(2, 0, False, 0, frozenset(), frozenset({0, 2}))
    assert row(s, "office-1", CO2) == (612.0, T0, 0)
    assert row(s, "hall", TZ) == (21.5, T0, 0)
    assert s.gateway_of_zone == ["gw-1", None, "gw-1"]
    assert s.zones_of("gw-1") == [0, 2]


def test_a_duplicate_changes_nothing_even_with_other_content() -> None:
    s = SiteState(ZONES)
    s.ingest(message(reading(value=612.0), seq=5), T0)
    before, offset = snapshot(s), s.gateway_offset_s("gw-1")
    # The same (gateway, boot, seq) again, received much later and carrying newer readings: it
    # is a resend of a message already taken, whatever it holds.
    again = message(reading(t=T0 + 60, value=900.0), reading("hall", value=1.0), seq=5)
    got = s.ingest(again, T0 + 500)
    assert got == Ingested(0, 0, True, 0, frozenset())
    assert snapshot(s) == before
    assert s.gateway_offset_s("gw-1") == offset  # a resend is no clock sample either


def test_the_same_seq_of_another_gateway_is_not_a_duplicate() -> None:
    s = SiteState(ZONES)
    s.ingest(message(reading(), seq=1, gateway="gw-1"), T0)
    got = s.ingest(message(reading("hall", t=T0 + 1), seq=1, gateway="gw-2"), T0 + 1)
    assert not got.duplicate
    assert got.new == 1
    assert s.gateway_of_zone == ["gw-1", None, "gw-2"]


def test_a_gap_filled_late_is_not_a_duplicate() -> None:
    s = SiteState(ZONES)
    s.ingest(message(reading(t=T0), seq=0), T0)
    s.ingest(message(reading(t=T0 + 20, value=700.0), seq=2), T0 + 20)
    late = s.ingest(message(reading(t=T0 + 10, value=600.0), seq=1), T0 + 20.2)
    assert (late.duplicate, late.new, late.history) == (False, 0, 1)
    assert row(s, "office-1", CO2)[0] == 700.0
    assert s.ingest(message(reading(t=T0 + 10), seq=1), T0 + 21).duplicate


def test_a_new_boot_resets_the_window() -> None:
    s = SiteState(ZONES)
    for seq in range(4):
        s.ingest(message(reading(t=T0 + seq, value=500.0 + seq), seq=seq), T0 + seq)
    reboot = BOOT + 86_400.0 + 5.0
    # seq 0 of the new boot is a new message, not a resend of the old boot's seq 0.
    got = s.ingest(message(reading(t=T0 + 10, value=800.0), seq=0, boot_t=reboot), T0 + 10)
    assert (got.duplicate, got.new) == (False, 1)
    assert row(s, "office-1", CO2)[0] == 800.0
    assert s.ingest(message(reading(t=T0 + 10), seq=0, boot_t=reboot), T0 + 11).duplicate
    assert not s.ingest(message(reading(t=T0 + 12), seq=3, boot_t=reboot), T0 + 12).duplicate


def test_a_late_message_of_an_earlier_boot_does_not_take_the_window_back() -> None:
    s = SiteState(ZONES)
    reboot = BOOT + 1000.0
    s.ingest(message(reading(t=T0, value=700.0), seq=0, boot_t=reboot), T0)
    # A message of the previous boot, never seen, arrives late: its reading is older.
    old = s.ingest(message(reading(t=T0 - 100, value=400.0), seq=9, boot_t=BOOT), T0 + 0.1)
    assert (old.duplicate, old.new, old.history) == (False, 0, 1)
    assert row(s, "office-1", CO2)[0] == 700.0
    # The window is still the new boot's: its seq 0 is still known.
    assert s.ingest(message(reading(t=T0), seq=0, boot_t=reboot), T0 + 1).duplicate


def test_the_seq_window_forgets_only_what_is_far_behind() -> None:
    s = SiteState(ZONES)
    last = 2 * SEQ_WINDOW + 10
    for seq in range(last + 1):
        s.ingest(message(seq=seq, t=T0), T0)
    for recent in (last, last - 1, last - SEQ_WINDOW + 1):
        assert s.ingest(message(seq=recent, t=T0), T0).duplicate, recent


@settings(max_examples=300)
@given(
    st.lists(st.one_of(st.integers(0, 40), st.integers(0, 3 * SEQ_WINDOW)), min_size=1, max_size=60)
)
def test_the_seq_window_tells_what_a_set_of_every_seq_would_within_the_window(
    seqs: list[int],
) -> None:
    """Duplicate exactly when the seq was seen and lies within SEQ_WINDOW of the newest."""
    s = SiteState(ZONES)
    seen: set[int] = set()
    newest = -1
    for seq in seqs:
        expected = seq in seen and newest - seq < SEQ_WINDOW
        assert s.ingest(message(seq=seq, t=T0), T0).duplicate == expected, (seq, newest)
        seen.add(seq)
        newest = max(newest, seq)


def test_a_gateways_seq_memory_is_a_small_fixed_size() -> None:
    s = SiteState(ZONES)
    for seq in range(3 * SEQ_WINDOW):
        s.ingest(message(seq=seq, t=T0), T0)
    assert sys.getsizeof(s.gateways["gw-1"].seen) <= SEQ_WINDOW // 8 + 64


# --- newest wins, replays ----------------------------------------------------------------------


def test_replayed_older_readings_go_to_history_only() -> None:
    s = SiteState(ZONES)
    s.ingest(message(reading(t=T0 + 60, value=650.0), seq=10), T0 + 60)
    replay = message(
        reading(t=T0 + 30, value=500.0, quality=int(Quality.REPLAYED), replayed=True),
        reading(t=T0 + 60, value=505.0, replayed=True),  # as old as the state: not newer
        seq=9,
        t=T0 + 30,
    )
    got = s.ingest(replay, T0 + 61)
    assert (got.new, got.history, got.duplicate) == (0, 2, False)
    assert row(s, "office-1", CO2) == (650.0, T0 + 60, 0)


def test_a_replayed_reading_newer_than_the_state_updates_it() -> None:
    s = SiteState(ZONES)
    s.ingest(message(reading(t=T0, value=650.0), seq=1), T0)
    replay = message(reading(t=T0 + 30, value=700.0, replayed=True), seq=2, t=T0 + 30)
    got = s.ingest(replay, T0 + 300)
    assert (got.new, got.history) == (1, 0)
    assert row(s, "office-1", CO2) == (700.0, T0 + 30, 0)


def test_a_missing_value_is_a_reading_too() -> None:
    s = SiteState(ZONES)
    s.ingest(message(reading(t=T0, value=650.0), seq=1), T0)
    s.ingest(message(reading(t=T0 + 10, value=None, quality=int(Quality.MISSING)), seq=2), T0 + 10)
    value, t, quality = row(s, "office-1", CO2)
    assert math.isnan(value)
    assert (t, quality) == (T0 + 10, int(Quality.MISSING))


# --- clock offsets -----------------------------------------------------------------------------


def test_a_gateway_120_s_behind_gets_its_readings_corrected() -> None:
    s = SiteState(ZONES)
    behind = 120.0
    for k in range(5):
        gw_now = T0 + 10.0 * k
        got = s.ingest(
            message(reading(t=gw_now - 1.0, value=500.0 + k), seq=k, t=gw_now),
            gw_now + behind + 0.05 * k,  # plus a little network delay
        )
        assert got.new == 1
        received = gw_now + behind + 0.05 * k
        # The reading was taken a second before its message was sent, by the controller's clock.
        assert abs(row(s, "office-1", CO2)[1] - (received - 1.0)) < 0.3
    assert s.gateway_offset_s("gw-1") == pytest.approx(behind, abs=0.3)


def test_a_gateway_ahead_is_corrected_back() -> None:
    s = SiteState(ZONES)
    s.ingest(message(reading(t=T0 + 3600.0), t=T0 + 3600.0), T0)
    assert row(s, "office-1", CO2)[1] == pytest.approx(T0)
    assert s.gateway_offset_s("gw-1") == pytest.approx(-3600.0)


@pytest.mark.parametrize("delay", [0.0, 0.3, SKEW_IGNORED_S * 0.99, -0.5])
def test_sub_second_offsets_are_left_alone(delay: float) -> None:
    s = SiteState(ZONES)
    for k in range(3):
        s.ingest(message(reading(t=T0 + k - 0.5), seq=k, t=T0 + k), T0 + k + delay)
    assert s.gateway_offset_s("gw-1") == 0.0
    assert row(s, "office-1", CO2)[1] == T0 + 2 - 0.5  # exactly the gateway's time


def test_one_message_that_sat_in_a_queue_does_not_move_the_offset() -> None:
    s = SiteState(ZONES)
    for k in range(5):
        s.ingest(message(seq=k, t=T0 + k), T0 + k + 120.0)
    s.ingest(message(seq=5, t=T0 + 5), T0 + 5 + 400.0)  # delivered 400 s late
    assert s.gateway_offset_s("gw-1") == pytest.approx(120.0)


def test_the_offset_follows_the_recent_messages() -> None:
    s = SiteState(ZONES)
    for k in range(SKEW_SAMPLES):
        s.ingest(message(seq=k, t=T0 + k), T0 + k + 120.0)
    # The gateway's clock was set right: once most recent samples say so, the offset goes.
    for k in range(SKEW_SAMPLES, 2 * SKEW_SAMPLES):
        s.ingest(message(seq=k, t=T0 + k), T0 + k)
    assert s.gateway_offset_s("gw-1") == 0.0


def test_a_replayed_message_does_not_feed_the_offset() -> None:
    s = SiteState(ZONES)
    for k in range(3):
        s.ingest(message(reading(t=T0 + k), seq=k, t=T0 + k), T0 + k + 120.0)
    assert s.gateway_offset_s("gw-1") == pytest.approx(120.0)
    # Hours of buffered messages, replayed: sent long ago, received now.
    for k in range(3, 3 + 2 * SKEW_SAMPLES):
        old = T0 - 7200.0 + k
        s.ingest(message(reading(t=old, replayed=True), seq=k, t=old), T0 + 10.0 + 120.0)
    assert s.gateway_offset_s("gw-1") == pytest.approx(120.0)


def test_replayed_readings_are_corrected_by_the_measured_offset() -> None:
    s = SiteState(ZONES)
    s.ingest(message(reading("hall", TZ, t=T0), seq=0), T0 + 120.0)
    got = s.ingest(message(reading(t=T0 - 600.0, replayed=True), seq=1), T0 + 130.0)
    assert got.new == 1
    assert row(s, "office-1", CO2)[1] == pytest.approx(T0 - 600.0 + 120.0)


def test_replayed_readings_before_the_first_live_message_do_not_block_the_live_ones() -> None:
    ahead = 120.0  # the gateway's clock is 2 minutes ahead of the controller's
    replayed = message(reading(t=T0 - 60.0 + ahead, value=450.0, replayed=True), seq=1)
    live = message(reading(t=T0 + 30.0 + ahead, value=900.0), seq=2)
    in_order, replay_first = SiteState(ZONES), SiteState(ZONES)
    # A controller that has heard the gateway live before the replay...
    in_order.ingest(message(seq=0, t=T0 - 100.0 + ahead), T0 - 100.0)
    in_order.ingest(replayed, T0)
    in_order.ingest(live, T0 + 30.0)
    # ...and one (just started, or just given the site) that hears the replay first.
    replay_first.ingest(replayed, T0)
    replay_first.ingest(live, T0 + 30.0)
    assert row(in_order, "office-1", CO2)[0] == 900.0
    assert row(replay_first, "office-1", CO2)[0] == 900.0  # fails: still 450, the live one lost


# --- what is reported --------------------------------------------------------------------------


def test_unknown_zones_are_counted_and_the_rest_taken() -> None:
    s = SiteState(ZONES)
    got = s.ingest(message(reading("attic"), reading("office-2"), reading("cellar", TZ)), T0)
    assert (got.new, got.unknown_zones) == (1, 2)
    assert s.gateway_of_zone == [None, "gw-1", None]


def test_counter_changes_are_reported_and_other_quantities_are_not() -> None:
    s = SiteState(ZONES)
    first = s.ingest(
        message(reading("office-1", PIN, value=3.0), reading("office-2", CO2), seq=0), T0
    )
    assert first.counter_zones == frozenset({0})
    assert first.new_zones == frozenset({0, 1})
    same = s.ingest(
        message(
            reading("office-1", PIN, t=T0 + 10, value=3.0),
            reading("office-2", CO2, t=T0 + 10, value=900.0),
            seq=1,
        ),
        T0 + 10,
    )
    assert same.counter_zones == frozenset()  # the count did not change; CO2 is no counter
    assert same.new_zones == frozenset()
    step = s.ingest(
        message(
            reading("office-1", PIN, t=T0 + 20, value=3.0),
            reading("hall", POUT, t=T0 + 20, value=1.0),
            reading("office-2", Quantity.PEOPLE_COUNT, t=T0 + 20, value=4.0),
            seq=2,
        ),
        T0 + 20,
    )
    assert step.counter_zones == frozenset({1, 2})
    assert step.new_zones == frozenset({2})


def test_an_older_counter_value_is_no_counter_change() -> None:
    s = SiteState(ZONES)
    s.ingest(message(reading(point=PIN, t=T0 + 60, value=8.0), seq=1), T0 + 60)
    got = s.ingest(message(reading(point=PIN, t=T0, value=2.0, replayed=True), seq=0), T0 + 61)
    assert got.counter_zones == frozenset()
    assert row(s, "office-1", PIN)[0] == 8.0


def test_a_zone_first_heard_is_reported_once_even_from_another_gateway() -> None:
    s = SiteState(ZONES)
    assert s.ingest(message(reading("hall"), gateway="gw-1"), T0).new_zones == frozenset({2})
    moved = s.ingest(message(reading("hall", t=T0 + 5), gateway="gw-2"), T0 + 5)
    assert moved.new_zones == frozenset()
    assert s.gateway_of_zone[2] == "gw-2"  # the gateway that reported it last gets its commands


# --- clean values ------------------------------------------------------------------------------


def test_clean_hides_flagged_stale_and_missing_values_and_keeps_replayed_good_ones() -> None:
    s = SiteState((*ZONES, "lab", "store"))
    s.ingest(
        message(
            reading("office-1", value=600.0),  # good
            reading("office-2", value=5000.0, quality=int(Quality.OUT_OF_RANGE)),  # flagged
            reading("hall", t=T0 - STALE_AFTER_S - 1.0, value=700.0),  # stale by `now`
            reading("lab", value=None, quality=int(Quality.MISSING)),  # missing
            reading("store", value=800.0, quality=int(Quality.REPLAYED), replayed=True),
            t=T0,
        ),
        T0,
    )
    clean = s.clean(CO2, now_s=T0)
    assert clean[0] == 600.0
    assert math.isnan(clean[1])
    assert math.isnan(clean[2])
    assert math.isnan(clean[3])
    assert clean[4] == 800.0
    # A replayed reading with a fault flag besides REPLAYED is still flagged.
    spike = int(Quality.REPLAYED | Quality.SPIKE)
    s.ingest(message(reading("store", t=T0 + 1, value=1.0, quality=spike), seq=1), T0 + 1)
    assert math.isnan(s.clean(CO2, now_s=T0 + 1)[4])
    # Never heard: NaN.
    assert np.isnan(s.clean(TZ, now_s=T0)).all()


def test_a_value_is_stale_just_after_stale_after_s() -> None:
    s = SiteState(ZONES)
    s.ingest(message(reading(value=600.0)), T0)
    assert s.clean(CO2, now_s=T0 + STALE_AFTER_S)[0] == 600.0
    assert math.isnan(s.clean(CO2, now_s=T0 + STALE_AFTER_S + 0.01)[0])


def test_live_maps_quantities_to_the_cores_inputs() -> None:
    s = SiteState(ZONES)
    s.ingest(
        message(
            reading("office-1", PIN, value=12.0),
            reading("office-1", POUT, value=5.0),
            reading("office-2", CO2, value=640.0),
            reading("hall", TZ, value=22.5),
            reading("hall", Quantity.T_SUPPLY_C, value=17.0),
            reading("hall", Quantity.RH_PCT, value=40.0),
        ),
        T0,
    )
    live = s.live(T0 + 1, t_out_c=-5.0, t_out_24h_c=-3.0)
    nan = float("nan")
    for got, want in (
        (live.counter_in, [12.0, nan, nan]),
        (live.counter_out, [5.0, nan, nan]),
        (live.co2_ppm, [nan, 640.0, nan]),
        (live.t_zone_c, [nan, nan, 22.5]),
        (live.t_supply_c, [nan, nan, 17.0]),
        (live.t_out_c, [-5.0] * 3),
        (live.t_out_24h_c, [-3.0] * 3),
    ):
        np.testing.assert_array_equal(got, want)
    assert np.isnan(SiteState(ZONES).live(T0).t_out_c).all()


# --- arrival order -----------------------------------------------------------------------------

POINTS = (CO2, TZ, PIN)


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Telemetry], list[float]]:
    """Messages of one gateway (one boot; some replayed) whose readings have distinct times per
    zone and quantity, and the network delay of each message."""
    keys = [(z, p) for z in ZONES for p in POINTS]
    readings: list[Reading] = []
    for zone, point in draw(st.lists(st.sampled_from(keys), min_size=1, max_size=8, unique=True)):
        ticks = draw(st.lists(st.integers(0, 600), min_size=1, max_size=4, unique=True))
        readings += [
            reading(
                zone,
                point,
                t=T0 + tick,
                value=draw(st.one_of(st.none(), st.floats(-1e3, 1e4, allow_nan=False))),
                quality=draw(st.sampled_from([0, 0, int(Quality.SPIKE), int(Quality.REPLAYED)])),
                replayed=draw(st.booleans()),
            )
            for tick in ticks
        ]
    order = draw(st.permutations(range(len(readings))))
    cuts = (
        sorted(draw(st.sets(st.integers(1, len(readings) - 1), max_size=4)))
        if len(readings) > 1
        else []
    )
    bounds = [0, *cuts, len(readings)]
    msgs = []
    for seq, (a, b) in enumerate(itertools.pairwise(bounds)):
        part = tuple(readings[i] for i in order[a:b])
        msgs.append(message(*part, seq=seq, t=max(r.t for r in part) + 1.0))
    delays = draw(st.lists(st.floats(0.0, 0.45), min_size=len(msgs), max_size=len(msgs)))
    return msgs, delays


def _newest(msgs: list[Telemetry]) -> dict[tuple[str, Quantity], Reading]:
    newest: dict[tuple[str, Quantity], Reading] = {}
    for m in msgs:
        for r in m.rows:
            key = (r.zone, r.point)
            if key not in newest or r.t > newest[key].t:
                newest[key] = r
    return newest


def _is_replay(m: Telemetry) -> bool:
    return any(r.replayed for r in m.rows)


def _live_heard_first(deliveries: list[tuple[Telemetry, float]]) -> list[tuple[Telemetry, float]]:
    """The same deliveries with the first live message moved to the front."""
    first = next(md for md in deliveries if not _is_replay(md[0]))
    return [first, *(md for md in deliveries if md is not first)]


@settings(max_examples=200)
@given(histories(), st.randoms(use_true_random=False), st.floats(0.0, 3600.0))
def test_the_state_does_not_depend_on_arrival_order(
    history: tuple[list[Telemetry], list[float]], rnd: random.Random, skew: float
) -> None:
    msgs, delays = history
    # Each message is received `skew` plus a sub-second delay after its gateway sent it (a skew
    # under SKEW_IGNORED_S is ignored, a larger one corrected); some are delivered twice.
    skew = skew if skew >= SKEW_IGNORED_S else 0.0
    in_order = [(m, m.t + skew + d) for m, d in zip(msgs, delays, strict=True)]
    shuffled = [*in_order, *rnd.choices(in_order, k=len(in_order) // 2)]
    rnd.shuffle(shuffled)
    if skew:
        # The offset is measured from live messages only: here a live message is heard first
        # whatever the order (the xfail above is the other case).
        if all(_is_replay(m) for m in msgs):
            return
        in_order, shuffled = _live_heard_first(in_order), _live_heard_first(shuffled)

    states = SiteState(ZONES), SiteState(ZONES)
    for state, deliveries in zip(states, (in_order, shuffled), strict=True):
        for m, received in deliveries:
            state.ingest(m, received)

    newest = _newest(msgs)
    for state in states:
        for zone in ZONES:
            for point in QUANTITIES:
                value, t, quality = row(state, zone, point)
                want = newest.get((zone, point))
                if want is None:
                    assert math.isnan(value)
                    assert t == -math.inf
                    continue
                expected = math.nan if want.value is None else want.value
                assert value == expected or (math.isnan(value) and math.isnan(expected))
                assert quality == want.quality
                # Corrected by the offset measured so far: the skew within the network delay.
                assert t == pytest.approx(want.t + skew, abs=0.5)
    np.testing.assert_array_equal(states[0].value, states[1].value)
    np.testing.assert_array_equal(states[0].quality, states[1].quality)
    assert states[0].gateway_of_zone == states[1].gateway_of_zone


@settings(max_examples=200)
@given(histories(), st.randoms(use_true_random=False), st.floats(0.0, 3600.0))
def test_a_batch_leaves_the_state_that_one_by_one_leaves(
    history: tuple[list[Telemetry], list[float]], rnd: random.Random, skew: float
) -> None:
    msgs, _ = history
    # Some messages twice, in any order, in batches of any size, each batch received at once.
    deliveries = [*msgs, *rnd.choices(msgs, k=len(msgs) // 2)]
    rnd.shuffle(deliveries)
    cuts = sorted(rnd.sample(range(1, len(deliveries)), k=min(3, len(deliveries) - 1)))
    batches = [deliveries[a:b] for a, b in itertools.pairwise([0, *cuts, len(deliveries)])]
    one, many = SiteState(ZONES), SiteState(ZONES)
    taken = duplicates = 0
    for k, batch in enumerate(batches):
        received = T0 + skew + 600.0 * k
        singles = [one.ingest(m, received) for m in batch]
        got = many.ingest_many(batch, received)
        assert got.duplicates == sum(s.duplicate for s in singles)
        assert got.new + got.history == sum(s.new + s.history for s in singles)
        assert got.new_zones == frozenset().union(*(s.new_zones for s in singles))
        assert [i for i, _ in got.accepted] == [i for i, s in enumerate(singles) if not s.duplicate]
        taken += got.new + got.history
        duplicates += got.duplicates
    np.testing.assert_array_equal(one.value, many.value)
    np.testing.assert_array_equal(one.t, many.t)
    np.testing.assert_array_equal(one.quality, many.quality)
    assert one.gateway_of_zone == many.gateway_of_zone
    assert taken == sum(len(m) for m in msgs)  # every reading once, the duplicates not at all
    assert duplicates == len(deliveries) - len(msgs)


@st.composite
def crowded(draw: st.DrawFn) -> list[Telemetry]:
    """Live messages of up to three gateways whose zones overlap (a zone moves between
    gateways), with readings that tie in time, repeat a zone's quantity within one message, and
    name zones the site does not have."""
    msgs = []
    seqs = dict.fromkeys(("gw-1", "gw-2", "gw-3"), 0)
    for _ in range(draw(st.integers(1, 12))):
        gateway = draw(st.sampled_from(sorted(seqs)))
        rows = draw(
            st.lists(
                st.builds(
                    reading,
                    st.sampled_from((*ZONES, "attic")),
                    st.sampled_from((CO2, PIN, POUT)),
                    st.integers(0, 3).map(lambda k: T0 + k),  # few distinct times: ties
                    st.one_of(st.none(), st.integers(0, 3).map(float)),
                    st.sampled_from([0, int(Quality.SPIKE)]),
                ),
                min_size=1,
                max_size=6,
            )
        )
        msgs.append(message(*rows, seq=seqs[gateway], gateway=gateway, t=T0 + 3))
        seqs[gateway] += 1
    return msgs


@settings(max_examples=300)
@given(crowded(), st.randoms(use_true_random=False))
def test_a_batch_of_many_gateways_with_ties_leaves_what_one_by_one_leaves(
    msgs: list[Telemetry], rnd: random.Random
) -> None:
    cuts = sorted(rnd.sample(range(1, len(msgs)), k=min(3, len(msgs) - 1))) if len(msgs) > 1 else []
    one, many = SiteState(ZONES), SiteState(ZONES)
    for k, batch in enumerate(itertools.pairwise([0, *cuts, len(msgs)])):
        part = msgs[batch[0] : batch[1]]
        received = T0 + 3.2 + k  # the same clock: no offset
        before = one.value.copy()
        singles = [one.ingest(m, received) for m in part]
        got = many.ingest_many(part, received)
        assert got.unknown_zones == sum(s.unknown_zones for s in singles)
        assert got.new_zones == frozenset().union(*(s.new_zones for s in singles))
        q = [QUANTITIES.index(p) for p in (PIN, POUT)]
        differ = ~((one.value[q] == before[q]) | (np.isnan(one.value[q]) & np.isnan(before[q])))
        assert got.counter_zones == frozenset(np.flatnonzero(differ.any(axis=0)).tolist())
        np.testing.assert_array_equal(one.value, many.value)
        np.testing.assert_array_equal(one.t, many.t)
        np.testing.assert_array_equal(one.quality, many.quality)
        assert one.gateway_of_zone == many.gateway_of_zone
        assert [one.zones_of(g) for g in ("gw-1", "gw-2", "gw-3")] == [
            many.zones_of(g) for g in ("gw-1", "gw-2", "gw-3")
        ]
