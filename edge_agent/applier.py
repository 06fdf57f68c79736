"""Setpoints down, safely: every write clamped to its limits, rate-limited, read back, audited.

A command sets a zone's target; the applier moves each of the zone's points toward it, never
outside the point's [min, max] (a value outside a point's limits is never written to a
building), never faster than the point's max_rate_per_s, never after the command's deadline,
and reads each written value back. Every write, and every refusal to write, leaves an audit
record: what, when, from which command and why.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from bacnet_modbus.codec import CodecError
from bacnet_modbus.modbus import FieldBusError, ModbusDevice
from controller.wire import CommandSet, Mode, ZoneCommand
from edge_agent.audit import AuditLog, AuditRecord, Outcome, Source
from edge_agent.config import GatewayConfig
from edge_agent.metrics import AgentMetrics
from sensors.profiles import DataType, RegisterPoint

log = logging.getLogger(__name__)

# The occupancy-mode command of the shipped VAV profile (config/devices/vav-ahu.toml): what a
# BMS zone controller understands, from ilma's richer Guideline 36 modes.
BMS_MODE = {
    Mode.UNOCCUPIED: 0,
    Mode.SETBACK: 0,
    Mode.FREEZE_PROTECTION: 0,
    Mode.OCCUPIED: 1,
    Mode.OCCUPIED_STANDBY: 2,
    Mode.WARM_UP: 3,
    Mode.COOL_DOWN: 3,
    Mode.SETUP: 3,
}
WRITE_FIELDS = ("airflow_m3s", "t_heat_c", "t_cool_c", "mode")
# Audit records held in memory while the audit log cannot take them (a few hours of a
# 100-zone gateway's writes; about 300 bytes each).
AUDIT_HELD = 10_000


@dataclass(frozen=True)
class Target:
    """What a zone's points should become, from whom, and until when."""

    values: dict[str, float]  # write field → value (the mode as its BMS code)
    source: Source
    command_id: str | None
    reason: str
    deadline: float  # monotonic s; inf for the agent's own fallback


@dataclass
class _Written:
    """What a point holds, as far as the applier knows."""

    value: float
    at: float  # monotonic s: when it was written (where a rate limit's next step starts)
    checked: float  # monotonic s: when the device last confirmed it (a write or a read)


class Applier:
    """Holds each zone's target and moves the building's points toward it."""

    def __init__(
        self,
        cfg: GatewayConfig,
        devices: dict[str, ModbusDevice],
        audit: AuditLog,
        metrics: AgentMetrics,
        *,
        clock: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.devices = devices
        self.audit = audit
        self.metrics = metrics
        self.clock = clock
        self.mono = mono
        self.targets: dict[str, Target] = {}
        self._written: dict[tuple[str, str], _Written] = {}
        self._last_seq: dict[str, tuple[float, int]] = {}  # controller → (command t, seq)
        self._zones = {z.name: z for z in cfg.file.zone}
        self._pending: list[AuditRecord] = []  # written to the audit log by flush()

    def accept(self, cs: CommandSet, received: float, expiry_s: float | None = None) -> list[str]:
        """Take a command set received at monotonic time `received` (with the MQTT 5 expiry
        interval left, if the broker gave one); returns the zones whose target it set. An
        expired, duplicate or out-of-order command sets nothing."""
        skew = self.cfg.file.fallback.max_clock_skew_s
        now = self.clock()
        if cs.t > now + skew:
            # Commands are ordered by their time: one stamped in the future would make every
            # later one look older, and refuse them all, until this clock caught up.
            ahead = cs.t - now
            why = f"sent {ahead:.0f} s ahead of this gateway's clock (allowed {skew:g} s)"
            log.warning("command %s refused: %s", cs.command_id, why)
            for c in cs.commands:
                if c.zone in self._zones:
                    refused = Target(_values(c), Source.CONTROLLER, cs.command_id, why, received)
                    self._audit_all(c.zone, refused, Outcome.REJECTED)
            return []
        last = self._last_seq.get(cs.controller)
        if last is not None and (cs.t, cs.seq) <= last:
            log.debug("command %s is a duplicate or older than %s: ignored", cs.command_id, last)
            return []
        self._last_seq[cs.controller] = (cs.t, cs.seq)
        lease = cs.lease_s if expiry_s is None else min(cs.lease_s, expiry_s)
        # Never applied after valid_until by this clock (with the skew allowance), whatever is
        # left of the lease: as a monotonic deadline, so that a clock step changes nothing.
        deadline = received + min(lease, cs.valid_until + skew - now)
        expired_by_clock = now > cs.valid_until + skew
        zones = []
        for c in cs.commands:
            if c.zone not in self._zones:
                continue
            values = _values(c)
            if expired_by_clock or lease <= 0:
                why = f"expired: valid until {cs.valid_until:.0f}, now {now:.0f}"
                stale = Target(values, Source.CONTROLLER, cs.command_id, why, deadline)
                self._audit_all(c.zone, stale, Outcome.EXPIRED)
                continue
            self.targets[c.zone] = Target(
                values, Source.CONTROLLER, cs.command_id, c.reason or c.mode.value, deadline
            )
            zones.append(c.zone)
        return zones

    def continue_from(self, previous: Applier) -> None:
        """Take over the command order of the applier this one replaces (a reload): a command
        older than one already taken stays refused. (What points hold is read afresh: the new
        file may map them to other devices.)"""
        self._last_seq.update(previous._last_seq)

    def set_target(self, zone: str, target: Target) -> None:
        self.targets[zone] = target

    def relinquish_target(self, zone: str, reason: str) -> Target:
        """Each write point's default: the building automation's own value."""
        values = {}
        for field in WRITE_FIELDS:
            ref = getattr(self._zones[zone].write, field)
            if ref is not None:
                device, point = ref.split("/")
                default = self.devices[device].point(point).default
                if default is not None:
                    values[field] = default
        return Target(values, Source.RELINQUISH, None, reason, math.inf)

    async def apply(self, zones: Iterable[str] | None = None) -> None:
        """Move the points of these zones (default: all with a target) toward their targets,
        then write the audit records."""
        try:
            for zone in list(self.targets if zones is None else zones):
                target = self.targets.get(zone)
                if target is not None:
                    await self._apply_zone(zone, target)
        finally:
            await self.flush()

    async def flush(self) -> None:
        """Write the pending audit records in one transaction, off the event loop (an fsync on
        an SD card takes tens of milliseconds). If the audit log fails (a full disk), the
        records are kept for the next flush, up to AUDIT_HELD of them (beyond, the oldest are
        dropped and counted), and the error goes on to the caller."""
        records, self._pending = self._pending, []
        if not records:
            return
        try:
            await asyncio.to_thread(self.audit.record_many, records)
        except BaseException:
            held = records + self._pending
            if len(held) > AUDIT_HELD:
                self.metrics.audit_dropped.inc(len(held) - AUDIT_HELD)
                held = held[-AUDIT_HELD:]
            self._pending = held
            raise

    async def _apply_zone(self, zone: str, target: Target) -> None:
        writes = self._zones[zone].write
        if self.mono() > target.deadline:
            del self.targets[zone]
            pending = {f: v for f, v in target.values.items() if not self._reached(writes, f, v)}
            if pending:
                why = "lease ended before the target was reached"
                self._audit_all(zone, Target(pending, target.source, target.command_id, why,
                                             target.deadline), Outcome.EXPIRED)  # fmt: skip
            return
        for field, value in target.values.items():
            ref = getattr(writes, field)
            if ref is not None:
                await self._apply_point(zone, ref, value, target)

    def _reached(self, writes: object, field: str, value: float) -> bool:
        ref = getattr(writes, field)
        if ref is None:
            return True
        device, point = ref.split("/")
        w = self._written.get((device, point))
        return w is not None and _same(self.devices[device].point(point), w.value, value)

    async def _apply_point(self, zone: str, ref: str, requested: float, target: Target) -> None:
        device_name, point_name = ref.split("/")
        device = self.devices[device_name]
        point = device.point(point_name)
        now = self.mono()

        def record(
            outcome: Outcome, written: float | None, read_back: float | None, why: str
        ) -> None:
            self._record(zone, ref, target, requested=requested, written=written,
                         read_back=read_back, outcome=outcome, reason=why)  # fmt: skip

        if not math.isfinite(requested):
            record(Outcome.REJECTED, None, None, "not a finite value")
            return
        value, outcome, why = requested, Outcome.APPLIED, target.reason
        lo = -math.inf if point.min is None else point.min
        hi = math.inf if point.max is None else point.max
        if not lo <= value <= hi:
            value = min(max(value, lo), hi)
            outcome, why = Outcome.CLAMPED, f"{requested:g} outside [{lo:g}, {hi:g}]"
        key = (device_name, point_name)
        last = self._written.get(key)
        if last is None or now - last.checked >= self.cfg.file.writes.refresh_s:
            # The first write starts from what the building holds; later, now and then, check
            # that the device still holds what was written (a controller that restarted holds
            # its default, and an unchanged command would never be written again).
            present = await self._current(device, point_name, now)
            if present is None and last is None:
                record(Outcome.FAILED, None, None, "cannot read the point's present value")
                return
            if present is not None and last is not None and _same(point, present.value, last.value):
                last.checked = now
            elif present is not None:
                if last is not None:
                    log.warning(
                        "zone %s point %s holds %g, not the %g written: writing again",
                        zone, ref, present.value, last.value,
                    )  # fmt: skip
                last = self._written[key] = present
        assert last is not None  # noqa: S101  (read above, or known)
        rate = point.max_rate_per_s
        if rate is not None and math.isfinite(last.value):
            step = rate * max(now - last.at, 0.0)
            if abs(value - last.value) > step:
                goal = value
                value = last.value + math.copysign(step, value - last.value)
                # A clamp is the graver fact: it stays the outcome, the rate limit its detail.
                if outcome is Outcome.CLAMPED:
                    why += f"; toward {goal:g} at ≤ {rate:g}/s"
                else:
                    outcome, why = Outcome.RATE_LIMITED, f"toward {goal:g} at ≤ {rate:g}/s"
                # A step from a value outside the limits (the BMS may hold one) stays inside.
                value = min(max(value, lo), hi)
        quantized = _quantize(point, value, lo, hi)
        if quantized is None:
            record(
                Outcome.REJECTED, None, None, f"no register value of {ref} lies in [{lo:g}, {hi:g}]"
            )
            return
        value = quantized
        span = hi - lo if math.isfinite(hi - lo) else abs(value) + 1.0
        if abs(value - last.value) <= self.cfg.file.writes.deadband_fraction * span:
            self.metrics.writes.labels(Outcome.UNCHANGED.value).inc()
            return
        failed, read_back, problem = await self._write(device, point_name, value)
        if failed is Outcome.READBACK_MISMATCH:
            # The point holds what it read back (or, unknown, what was sent): rate limits go
            # on from there.
            self._written[key] = _Written(value if read_back is None else read_back, now, now)
        if failed is not None:
            record(failed, value, read_back, problem)
            return
        self._written[key] = _Written(value, now, now)
        if target.source is Source.RELINQUISH and outcome is Outcome.APPLIED:
            outcome = Outcome.RELINQUISHED
        record(outcome, value, read_back, why)

    async def _write(
        self, device: ModbusDevice, point_name: str, value: float
    ) -> tuple[Outcome | None, float | None, str]:
        """Write and (if configured) read back: (failure outcome or None, read-back, why)."""
        try:
            await device.write_point(point_name, value)
        except (FieldBusError, CodecError) as exc:
            return Outcome.FAILED, None, f"write failed: {exc}"
        if not self.cfg.file.writes.verify:
            return None, None, ""
        try:
            read_back = await device.read_point(point_name)
        except (FieldBusError, CodecError) as exc:
            return Outcome.READBACK_MISMATCH, None, f"read-back failed: {exc}"
        if not _same(device.point(point_name), read_back, value):
            return Outcome.READBACK_MISMATCH, read_back, f"wrote {value:g}"
        return None, read_back, ""

    async def _current(self, device: ModbusDevice, point: str, now: float) -> _Written | None:
        """The point's value in the building now: where rate limits start from (so that the
        first write after a start or a hand-back does not jump)."""
        try:
            # As if written one cycle ago: the first write may move one cycle's worth.
            value = await device.read_point(point)
            return _Written(value, now - self.cfg.file.gateway.cycle_s, now)
        except (FieldBusError, CodecError) as exc:
            log.debug("cannot read %s/%s: %s", device.name, point, exc)
            return None

    def _record(
        self,
        zone: str,
        ref: str,
        target: Target,
        *,
        requested: float | None,
        written: float | None,
        read_back: float | None,
        outcome: Outcome,
        reason: str,
    ) -> None:
        self.metrics.writes.labels(outcome.value).inc()
        if outcome in (Outcome.REJECTED, Outcome.FAILED, Outcome.READBACK_MISMATCH):
            log.warning("zone %s point %s: %s (%s)", zone, ref, outcome.value, reason)
        self._pending.append(
            AuditRecord(
                t_s=self.clock(),
                zone=zone,
                point=ref,
                device=ref.partition("/")[0],
                requested=requested,
                written=written,
                read_back=read_back,
                outcome=outcome,
                command_id=target.command_id,
                source=target.source,
                reason=reason,
            )
        )

    def _audit_all(self, zone: str, target: Target, outcome: Outcome) -> None:
        """One record per point of the target, none of them written."""
        writes = self._zones[zone].write
        for field, value in target.values.items():
            ref = getattr(writes, field)
            if ref is not None:
                self._record(zone, ref, target, requested=value, written=None, read_back=None,
                             outcome=outcome, reason=target.reason)  # fmt: skip


def _values(c: ZoneCommand) -> dict[str, float]:
    """A zone command as write field → value (the mode as its BMS code)."""
    return {
        "airflow_m3s": c.airflow_m3s,
        "t_heat_c": c.t_heat_c,
        "t_cool_c": c.t_cool_c,
        "mode": float(BMS_MODE[c.mode]),
    }


def _quantize(point: RegisterPoint, value: float, lo: float, hi: float) -> float | None:
    """The value the register can hold (integer types store raw steps of `scale`) inside
    [lo, hi]; None if no raw step lies inside (limits narrower than one step)."""
    if point.type is DataType.F32:
        # The register holds the nearest float32, which may lie just past a limit (0.1 becomes
        # 0.10000000149): step to the neighbour inside.
        # (Compared as Python floats: numpy would compare a float32 with a limit rounded to
        # float32 too.)
        f = np.float32(value)
        if float(f) > hi:
            f = np.nextafter(f, np.float32(-np.inf))
        elif float(f) < lo:
            f = np.nextafter(f, np.float32(np.inf))
        q = float(f)
        return q if lo <= q <= hi else None
    if point.type is DataType.BOOL:
        q = 1.0 if value >= 0.5 else 0.0
        return q if lo <= q <= hi else None
    # Limits in raw steps, with a little tolerance: 24.7 / 0.1 is 246.99999999999997.
    a = (lo - point.offset) / point.scale
    b = (hi - point.offset) / point.scale
    raw_lo, raw_hi = math.ceil(min(a, b) - 1e-9), math.floor(max(a, b) + 1e-9)
    if raw_lo > raw_hi:
        return None
    raw = min(max(round((value - point.offset) / point.scale), raw_lo), raw_hi)
    # raw·scale + offset may land a rounding error outside a limit on the grid: snap to it.
    return min(max(raw * point.scale + point.offset, lo), hi)


def _same(point: RegisterPoint, read_back: float, written: float) -> bool:
    if point.type is DataType.F32:
        return math.isclose(read_back, written, rel_tol=1e-6, abs_tol=1e-9)
    return abs(read_back - written) <= abs(point.scale) * 0.5
