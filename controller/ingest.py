"""Telemetry into per-zone state: deduplicated, clock-corrected, newest reading wins.

Gateways come and go, replay their buffers after outages, resend what the broker did not
acknowledge, and keep clocks that drift. A site's state holds, per zone and quantity, the
newest reading by the controller's clock and its quality; each telemetry message is checked
against what was already seen from its gateway's boot (so a duplicate changes nothing), its
readings' times are corrected by the gateway's measured clock offset, and a replayed reading
updates the current state only if it is newer than what is there (it always goes to history).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from controller.live import LiveReadings
from controller.wire import Quantity, Telemetry
from sensors.arrays import FloatArray
from sensors.validation import Quality

QUANTITIES = tuple(Quantity)
_Q = {q: i for i, q in enumerate(QUANTITIES)}
_PEOPLE_IN, _PEOPLE_OUT, _PEOPLE_COUNT = (
    _Q[Quantity.PEOPLE_IN], _Q[Quantity.PEOPLE_OUT], _Q[Quantity.PEOPLE_COUNT]
)  # fmt: skip
# Sequence numbers remembered per gateway boot, to tell a resent message from a new one.
SEQ_WINDOW = 4096
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


@dataclass
class _Gateway:
    boot_t: float = -1.0
    seen: set[int] = field(default_factory=set)
    max_seq: int = -1
    offsets: deque[float] = field(default_factory=lambda: deque(maxlen=SKEW_SAMPLES))
    offset_s: float = 0.0


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
        self._zones_by_gateway: dict[str, set[int]] = {}
        self.gateways: dict[str, _Gateway] = {}

    def gateway_offset_s(self, gateway: str) -> float:
        g = self.gateways.get(gateway)
        return 0.0 if g is None else g.offset_s

    def zones_of(self, gateway: str) -> list[int]:
        return sorted(self._zones_by_gateway.get(gateway, ()))

    def ingest(self, msg: Telemetry, received_s: float) -> Ingested:
        """Take one telemetry message received at `received_s` (controller clock)."""
        g = self.gateways.setdefault(msg.gateway, _Gateway())
        if msg.boot_t != g.boot_t:
            if msg.boot_t < g.boot_t and g.boot_t > 0:
                # A message of an earlier boot, replayed late: history, but no state to track.
                pass
            else:
                g.boot_t, g.seen, g.max_seq = msg.boot_t, set(), -1
        elif msg.seq in g.seen:
            return Ingested(0, 0, True, 0, frozenset())
        if msg.boot_t == g.boot_t:
            g.seen.add(msg.seq)
            if msg.seq > g.max_seq:
                g.max_seq = msg.seq
                if len(g.seen) > 2 * SEQ_WINDOW:
                    g.seen = {s for s in g.seen if s > g.max_seq - SEQ_WINDOW}
        # Whole columns at once: the message's readings are arrays on the wire already.
        c = msg.readings
        index = self.index
        zone_of = [index.get(zone, -1) for zone in c.zone]
        known = [i for i, z in enumerate(zone_of) if z >= 0]
        unknown = len(zone_of) - len(known)
        replayed = any(c.replayed)
        zs = [zone_of[i] for i in known] if unknown else zone_of
        qs = [_Q[c.point[i]] for i in known] if unknown else [_Q[p] for p in c.point]
        pick = (lambda col: [col[i] for i in known]) if unknown else list
        ts = pick(c.t)
        vs = [math.nan if v is None else v for v in pick(c.value)]
        quality = pick(c.quality)
        if not replayed:
            g.offsets.append(received_s - msg.t)
            median = statistics.median(g.offsets)
            g.offset_s = median if abs(median) >= SKEW_IGNORED_S else 0.0
        if not zs:
            return Ingested(0, 0, False, unknown, frozenset())
        zi = np.array(zs)
        qi = np.array(qs)
        # Nothing is from the future: until the offset is known (a gateway replaying its buffer
        # before its first live message), a fast clock is capped at arrival.
        t = np.minimum(np.array(ts) + g.offset_s, received_s)
        newer = t > self.t[qi, zi]
        n_new = int(np.count_nonzero(newer))
        if n_new < len(zs):
            zi, qi, t = zi[newer], qi[newer], t[newer]
            v = np.array(vs)[newer]
            qual = np.array(quality)[newer]
        else:
            v, qual = np.array(vs), np.array(quality)
        if n_new > 1:  # a zone's quantity twice in one message: the newest is assigned last
            order = np.argsort(t, kind="stable")
            zi, qi, t, v, qual = zi[order], qi[order], t[order], v[order], qual[order]
        is_counter = (qi == _PEOPLE_IN) | (qi == _PEOPLE_OUT) | (qi == _PEOPLE_COUNT)
        changed = is_counter & ~(v == self.value[qi, zi])  # NaN to a value (or back) is a change
        counters = frozenset(zi[changed].tolist())
        self.value[qi, zi] = v
        self.t[qi, zi] = t
        self.quality[qi, zi] = qual
        first: set[int] = set()
        gw = msg.gateway
        for z in set(zi.tolist()):
            was = self.gateway_of_zone[z]
            if was != gw:
                if was is None:
                    first.add(z)
                else:  # the zone moved to another gateway
                    self._zones_by_gateway[was].discard(z)
                self._zones_by_gateway.setdefault(gw, set()).add(z)
                self.gateway_of_zone[z] = gw
        return Ingested(n_new, len(zs) - n_new, False, unknown, counters, frozenset(first))

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
