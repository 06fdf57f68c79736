"""Telemetry into per-zone state: deduplicated, clock-corrected, newest reading wins.

Gateways come and go, replay their buffers after outages, resend what the broker did not
acknowledge, and keep clocks that drift. A site's state holds, per zone and quantity, the
newest reading by the controller's clock and its quality; each telemetry message is checked
against what was already seen from its gateway's boot (so a duplicate changes nothing), its
readings' times are corrected by the gateway's measured clock offset, and a replayed reading
updates the current state only if it is newer than what is there (it always goes to history).
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from controller.live import LiveReadings
from controller.wire import Quantity, Telemetry
from sensors.arrays import FloatArray, IntArray
from sensors.validation import Quality

QUANTITIES = tuple(Quantity)
_Q = {q: i for i, q in enumerate(QUANTITIES)}
_PEOPLE_IN, _PEOPLE_OUT, _PEOPLE_COUNT = (
    _Q[Quantity.PEOPLE_IN], _Q[Quantity.PEOPLE_OUT], _Q[Quantity.PEOPLE_COUNT]
)  # fmt: skip
# Sequence numbers remembered per gateway boot, to tell a resent message from a new one.
SEQ_WINDOW = 4096
_WINDOW_MASK = (1 << SEQ_WINDOW) - 1
# Clock offsets smaller than this are NTP-level noise plus network delay: left alone.
SKEW_IGNORED_S = 1.0
# The gateway's clock offset is the median of this many recent live messages (robust to one
# message that sat in a queue).
SKEW_SAMPLES = 15
# A reading not renewed for this long is no longer current (the control core sees NaN).
STALE_AFTER_S = 900.0


class Ingested(NamedTuple):
    new: int  # readings that updated the current state
    history: int  # readings for history only (older than the current state)
    duplicate: bool  # the whole message was seen before
    unknown_zones: int  # readings of zones this site does not have
    counter_zones: frozenset[int]  # zones whose people counts changed (for the event path)
    new_zones: frozenset[int] = frozenset()  # zones heard of for the first time


class Batch(NamedTuple):
    """What a batch of telemetry messages did to the state (see SiteState.ingest_many)."""

    new: int
    history: int
    duplicates: int  # messages seen before (they change nothing)
    unknown_zones: int
    counter_zones: frozenset[int]
    new_zones: frozenset[int]
    accepted: list[tuple[int, float]]  # (index in the batch, its gateway's offset) of the rest


class _Layout(NamedTuple):
    """Where a message's readings go: the flat state index (quantity × n_zones + zone) of each
    reading of a known zone."""

    zone: tuple[str, ...]
    point: tuple[Quantity, ...]
    known: list[int] | None  # positions of the readings of known zones; None: all
    keys: IntArray


def _layout(index: dict[str, int], zone: tuple[str, ...], point: tuple[Quantity, ...]) -> _Layout:
    n = len(index)
    zone_of = [index.get(z, -1) for z in zone]
    known = None if -1 not in zone_of else [k for k, z in enumerate(zone_of) if z >= 0]
    picked = range(len(zone)) if known is None else known
    keys = np.array([_Q[point[k]] * n + zone_of[k] for k in picked], dtype=np.int64)
    return _Layout(zone, point, known, keys)


@dataclass
class _Gateway:
    boot_t: float = -1.0
    # Sequence numbers seen, as a bitmap of the SEQ_WINDOW below the highest (bit k: max_seq - k),
    # as network protocols keep their anti-replay windows: a set of ints held 0.75 MB per
    # gateway at its bound (a soak of the daemon), the bitmap SEQ_WINDOW / 8 bytes.
    seen: int = 0
    max_seq: int = -1
    offsets: deque[float] = field(default_factory=lambda: deque(maxlen=SKEW_SAMPLES))
    offset_s: float = 0.0
    layout: _Layout | None = None

    def duplicate(self, msg: Telemetry) -> bool:
        """Whether the message was seen before; if not, remember it. A message more than
        SEQ_WINDOW behind the newest cannot be told apart and is taken (its readings only go
        to history unless they are newer than the state)."""
        seq = msg.seq
        if msg.boot_t != self.boot_t:
            if msg.boot_t < self.boot_t and self.boot_t > 0:
                # A message of an earlier boot, replayed late: history, but no state to track.
                return False
            self.boot_t, self.seen, self.max_seq = msg.boot_t, 0, -1
        if seq > self.max_seq:
            shift = seq - self.max_seq
            self.seen = ((self.seen << shift) | 1) & _WINDOW_MASK if shift < SEQ_WINDOW else 1
            self.max_seq = seq
            return False
        bit = 1 << (self.max_seq - seq)
        if bit > _WINDOW_MASK:
            return False  # too far behind to tell
        if self.seen & bit:
            return True
        self.seen |= bit
        return False

    def heard_live(self, sent_s: float, received_s: float) -> None:
        self.offsets.append(received_s - sent_s)
        median = statistics.median(self.offsets)
        self.offset_s = median if abs(median) >= SKEW_IGNORED_S else 0.0


class SiteState:
    """The current readings of one site's zones, shape (n_quantities, n_zones)."""

    def __init__(self, zone_names: tuple[str, ...]) -> None:
        self.zones = zone_names
        self.index = {name: i for i, name in enumerate(zone_names)}
        n, q = len(zone_names), len(QUANTITIES)
        self.value = np.full((q, n), np.nan)
        self.t = np.full((q, n), -np.inf)  # controller-clock time of each current value
        self.quality = np.zeros((q, n), dtype=np.int32)
        self.gateway_of_zone: list[str | None] = [None] * n
        self._gateway_id = np.full(n, -1, dtype=np.int64)  # gateway_of_zone as ids, for numpy
        self._zones_by_gateway: dict[str, set[int]] = {}
        self.gateways: dict[str, _Gateway] = {}
        self._ids: dict[str, int] = {}
        # Scratch for ingest_many (contents meaningless between calls).
        self._best_t = np.empty(q * n)
        self._first = np.empty(q * n, dtype=np.int64)
        self._last_m = np.empty(n, dtype=np.int64)

    def gateway_offset_s(self, gateway: str) -> float:
        g = self.gateways.get(gateway)
        return 0.0 if g is None else g.offset_s

    def zones_of(self, gateway: str) -> list[int]:
        return sorted(self._zones_by_gateway.get(gateway, ()))

    def ingest(self, msg: Telemetry, received_s: float) -> Ingested:
        """Take one telemetry message received at `received_s` (controller clock)."""
        b = self.ingest_many((msg,), received_s)
        return Ingested(
            b.new, b.history, b.duplicates > 0, b.unknown_zones, b.counter_zones, b.new_zones
        )

    def ingest_many(self, msgs: Sequence[Telemetry], received_s: float) -> Batch:
        """Take the messages received together at `received_s`, in their order. The state
        afterwards is what taking them one by one leaves; the numpy work is done once for
        the batch (per message it cost more than decoding the message). The counts are the
        batch's against the state before it: `new` counts every reading newer than that state
        (one by one, a reading older than an earlier one of the batch would count as history),
        and `counter_zones` holds the zones whose counters differ after the batch (a counter
        that went 3 → 4 → 3 within it is no change)."""
        index = self.index
        keys: list[IntArray] = []  # per accepted message, its readings' flat state indices
        ts: list[float] = []
        vs: list[float | None] = []
        quality: list[int] = []
        offsets: list[float] = []  # per accepted message
        lengths: list[int] = []
        gw_ids: list[int] = []
        accepted: list[tuple[int, float]] = []
        duplicates = unknown = 0
        for i, msg in enumerate(msgs):
            g = self.gateways.get(msg.gateway)
            if g is None:
                g = self.gateways[msg.gateway] = _Gateway()
                self._ids[msg.gateway] = len(self._ids)
            if g.duplicate(msg):
                duplicates += 1
                continue
            c = msg.readings
            if not any(c.replayed):
                g.heard_live(msg.t, received_s)
            accepted.append((i, g.offset_s))
            # A gateway sends the same zones and points every cycle: their indices are cached.
            lay = g.layout
            if lay is None or lay.zone != c.zone or lay.point != c.point:
                lay = g.layout = _layout(index, c.zone, c.point)
            keys.append(lay.keys)
            if lay.known is None:
                ts += c.t
                vs += c.value
                quality += c.quality
            else:
                unknown += len(c.zone) - len(lay.known)
                ts += [c.t[k] for k in lay.known]
                vs += [c.value[k] for k in lay.known]
                quality += [c.quality[k] for k in lay.known]
            lengths.append(len(lay.keys))
            offsets.append(g.offset_s)
            gw_ids.append(self._ids[msg.gateway])
        n_all = len(ts)
        if n_all == 0:
            return Batch(0, 0, duplicates, unknown, frozenset(), frozenset(), accepted)
        key = np.concatenate(keys) if len(keys) > 1 else keys[0]
        # Each message's readings corrected by its gateway's offset when it arrived. Nothing
        # is from the future: until the offset is known (a gateway replaying its buffer before
        # its first live message), a fast clock is capped at arrival.
        n_msgs = len(lengths)
        shift = np.repeat(offsets, lengths) if n_msgs > 1 else offsets[0]
        t = np.minimum(np.array(ts) + shift, received_s)
        state_t = self.t.reshape(-1)  # views: the flat state index is `key`
        state_v = self.value.reshape(-1)
        newer = t > state_t[key]
        n_new = int(np.count_nonzero(newer))
        if n_new == 0:
            return Batch(0, n_all, duplicates, unknown, frozenset(), frozenset(), accepted)
        v = np.array(vs, dtype=float)  # None (missing) becomes NaN
        qual = np.array(quality, dtype=np.int32)
        # Which message (its position among the accepted) each reading came in.
        m = np.repeat(np.arange(n_msgs), lengths) if n_msgs > 1 else np.zeros(n_all, np.int64)
        if n_new < n_all:
            key, t, v, qual, m = key[newer], t[newer], v[newer], qual[newer], m[newer]
        if n_new > 1:
            # The same zone's quantity more than once (in a message, or in two messages of
            # the batch): the newest wins, and on a tie the earlier one, as taking them one by
            # one does (a reading replaces the state only if strictly newer).
            win = self._newest(key, t)
            if len(win) < n_new:
                key, t, v, qual, m = key[win], t[win], v[win], qual[win], m[win]
        n_zones = len(self.zones)
        zi = key % n_zones
        qi = key // n_zones
        is_counter = (qi == _PEOPLE_IN) | (qi == _PEOPLE_OUT) | (qi == _PEOPLE_COUNT)
        was = state_v[key]
        # NaN to a value (or back) is a change; NaN to NaN (a counter still missing) is not.
        changed = is_counter & ~((v == was) | (np.isnan(v) & np.isnan(was)))
        counters = frozenset(zi[changed].tolist())
        state_v[key] = v
        state_t[key] = t
        self.quality.reshape(-1)[key] = qual
        first = self._assign_gateways(zi, m, np.array(gw_ids)[m])
        return Batch(
            n_new, n_all - n_new, duplicates, unknown, counters, frozenset(first), accepted
        )

    def _newest(self, key: IntArray, t: FloatArray) -> IntArray:
        """Positions of the readings that win their key: the newest, and the first of equals.
        Two scatter passes over scratch arrays (no sort: sorting the batch cost more than the
        rest of the ingest)."""
        best = self._best_t
        best[key] = -np.inf
        np.maximum.at(best, key, t)
        cand = np.flatnonzero(t == best[key])
        k = key[cand]
        first = self._first
        first[k] = len(key)
        np.minimum.at(first, k, cand)
        won: IntArray = cand[first[k] == cand]
        return won

    def _assign_gateways(self, zi: IntArray, m: IntArray, gw: IntArray) -> set[int]:
        """A zone's commands go to the gateway of the last message (`m`) that updated it, as
        when taking messages one by one; the zones heard of for the first time."""
        if len(zi) > 1:
            last = self._last_m
            last[zi] = -1
            np.maximum.at(last, zi, m)
            latest = m == last[zi]  # a zone's readings of its last message: one gateway
            zi, gw = zi[latest], gw[latest]
        moved = gw != self._gateway_id[zi]
        first: set[int] = set()
        if not moved.any():
            return first
        names = list(self._ids)
        zones, at = np.unique(zi[moved], return_index=True)
        for z, g in zip(zones.tolist(), gw[moved][at].tolist(), strict=True):
            name = names[g]
            was = self.gateway_of_zone[z]
            if was is None:
                first.add(z)
            else:  # the zone moved to another gateway
                self._zones_by_gateway[was].discard(z)
            self._zones_by_gateway.setdefault(name, set()).add(z)
            self.gateway_of_zone[z] = name
            self._gateway_id[z] = g
        return first

    def clean(self, quantity: Quantity, now_s: float) -> FloatArray:
        """Current good values of a quantity (NaN where missing, flagged or stale)."""
        q = _Q[quantity]
        usable = (self.quality[q] & ~int(Quality.REPLAYED)) == 0
        fresh = now_s - self.t[q] <= STALE_AFTER_S
        return np.where(usable & fresh, self.value[q], np.nan)

    def live(
        self, now_s: float, t_out_c: float = np.nan, t_out_24h_c: float = np.nan
    ) -> LiveReadings:
        """The control core's inputs now."""
        n = len(self.zones)
        return LiveReadings(
            counter_in=self.clean(Quantity.PEOPLE_IN, now_s),
            counter_out=self.clean(Quantity.PEOPLE_OUT, now_s),
            co2_ppm=self.clean(Quantity.CO2_PPM, now_s),
            t_zone_c=self.clean(Quantity.T_ZONE_C, now_s),
            t_supply_c=self.clean(Quantity.T_SUPPLY_C, now_s),
            t_out_c=np.full(n, t_out_c),
            t_out_24h_c=np.full(n, t_out_24h_c),
        )
