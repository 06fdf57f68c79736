"""The agent: poll, validate, publish; apply commands; keep the building healthy when alone.

Each cycle the agent polls its devices (all buses at once, one request at a time per bus),
validates every reading, sends the new ones up, and runs the control core on its own readings
in the shadow. While the controller is heard (its heartbeat or a valid command within
`fallback.after_s`), the controller's commands drive the building. When it falls silent, each
zone goes to its fallback: the shadow core's commands (`local`) or the building automation's own
defaults (`relinquish`); the agent announces itself degraded, and hands each zone back when the
controller commands it again, through the same rate limits, so nothing jumps. A zone the
returning controller leaves out stays on its fallback, kept up to date, and the status says so.

The disks may fail under all this (a full SD card, an I/O error, a damaged file): the buffer
and the audit log are then counted, logged and, if damaged, reopened, but never stop the cycle.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

import aiomqtt
import numpy as np

from bacnet_modbus.modbus import BusAddress, BusKind, ModbusBus, ModbusDevice
from controller.live import LiveCore, initial_live_state, live_step
from controller.wire import (
    ControllerState,
    GatewayState,
    GatewayStatus,
    WireError,
    decode_commands,
    decode_controller_status,
    encode,
    mode_of,
    telemetry_topic,
)
from edge_agent.applier import BMS_MODE, Applier, Target
from edge_agent.audit import AuditCorruptError, AuditLog, AuditStoreError, Source
from edge_agent.buffer import DiskBuffer, after_store_failure
from edge_agent.config import FallbackKind, GatewayConfig
from edge_agent.metrics import AgentMetrics
from edge_agent.readings import ReadingTable
from edge_agent.uplink import Uplink
from sensors.payloads import PayloadError

log = logging.getLogger(__name__)

VERSION = "0.1.0"


def build_devices(cfg: GatewayConfig) -> dict[str, ModbusDevice]:
    """The gateway's buses and devices, each device with its profile's quirks and overrides."""
    f = cfg.file
    timeouts: dict[str, float] = {}
    for d in f.device:
        timeout = d.request.timeout_s or cfg.profiles[d.profile].request.timeout_s
        timeouts[d.bus] = max(timeouts.get(d.bus, 0.0), timeout)
    buses = {
        b.name: ModbusBus(
            b.name,
            BusAddress(
                BusKind(b.kind.value),
                host=b.host or "",
                port=b.port or 502,
                device=b.device or "",
                baudrate=b.baudrate,
                parity=b.parity,
                stopbits=b.stopbits,
                bytesize=b.bytesize,
            ),
            timeout_s=timeouts.get(b.name, 1.0),
        )
        for b in f.bus
    }
    devices = {}
    for d in f.device:
        profile = cfg.profiles[d.profile]
        quirks = profile.request.with_overrides(d.request.model_dump(exclude_none=True))
        devices[d.name] = ModbusDevice(d.name, buses[d.bus], d.device_id, profile, quirks)
    return devices


class Supervisor:
    """Whether the controller is heard: its heartbeat or a valid command within `after_s`."""

    def __init__(self, after_s: float, mono: Callable[[], float]) -> None:
        self.after_s = after_s
        self.mono = mono
        self.last_heard = mono()  # a fresh agent gives the controller `after_s` to speak
        self.fallback = False

    def heard(self) -> None:
        self.last_heard = self.mono()

    def silent(self) -> bool:
        return self.mono() - self.last_heard > self.after_s


class Agent:
    """One gateway's agent for one configuration (a reload builds a new one on the same
    buffer and audit log)."""

    def __init__(
        self,
        cfg: GatewayConfig,
        buffer: DiskBuffer,
        audit: AuditLog,
        metrics: AgentMetrics,
        *,
        clock: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
        on_cycle: Callable[[], None] | None = None,
        after: Agent | None = None,
    ) -> None:
        """`after`: the agent this one replaces on a reload, whose knowledge of the controller
        carries over (when it was last heard, the last command of each controller)."""
        self.cfg = cfg
        self.audit = audit
        self.metrics = metrics
        self.clock = clock
        self.mono = mono
        self.on_cycle = on_cycle
        self.boot_t = clock()
        self.seq = 0
        self.devices = build_devices(cfg)
        self.table = ReadingTable(cfg)
        self.applier = Applier(cfg, self.devices, audit, metrics, clock=clock, mono=mono)
        self.supervisor = Supervisor(cfg.file.fallback.after_s, mono)
        if after is not None:
            # A reload must neither put off the fallback (a silent controller stays silent) nor
            # let an older command than the last one taken through.
            self.supervisor.last_heard = after.supervisor.last_heard
            self.applier.continue_from(after.applier)
        zones = tuple(z.name for z in cfg.file.zone)
        self.core = LiveCore.build(cfg.site, zones)
        self.core_state = initial_live_state(self.core)
        self._fallback_kind = {z.name: z.fallback for z in cfg.file.zone}
        # The zones on their fallback now. Per zone: a controller that comes back may command
        # only some of them, and the others must stay on a fallback that is kept up to date. A
        # zone's fallback target (inf deadline) exists only while the zone is in here; it
        # leaves only when a controller command replaces that target.
        self._on_fallback: set[str] = set()
        # A device is polled every `every` cycles (its period in cycles): counted in cycles,
        # not clock time, so a cycle that starts a little late never skips a device.
        cycle = cfg.file.gateway.cycle_s
        self._every = {
            d.name: max(1, round((d.period_s or cycle) / cycle)) for d in cfg.file.device
        }
        self._cycle_no = 0
        self._apply_lock = asyncio.Lock()
        self._apply_now = asyncio.Event()
        self._event_zones: set[str] = set()
        self._rejected_logged: set[str] = set()
        self.uplink = Uplink(
            cfg,
            buffer,
            metrics,
            self._on_message,
            self.status,
            sensor_topics=tuple(s.topic for s in cfg.file.mqtt_sensor),
            clock=clock,
            mono=mono,
        )
        self.telemetry_topic = telemetry_topic(cfg.site.site.name, cfg.name)

    def status(self) -> GatewayStatus:
        fb = self.fallback_zones()
        return GatewayStatus(
            gateway=self.cfg.name,
            state=GatewayState.DEGRADED if fb else GatewayState.ONLINE,
            t=self.clock(),
            boot_t=self.boot_t,
            fallback_zones=fb,
            version=VERSION,
        )

    def fallback_zones(self) -> tuple[str, ...]:
        """The zones on their fallback, in the configuration's order."""
        return tuple(z for z in self._fallback_kind if z in self._on_fallback)

    async def run(self) -> None:
        """Poll, publish and apply until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.uplink.run(), name="agent-uplink")
            tg.create_task(self._event_applier(), name="agent-event-apply")
            tg.create_task(self._cycles(), name="agent-cycles")

    async def stop(self) -> None:
        """Before cancellation on a clean shutdown: tell the broker we are going."""
        await self.uplink.goodbye()

    # --- the cycle ----------------------------------------------------------------------------

    async def _cycles(self) -> None:
        period = self.cfg.file.gateway.cycle_s
        next_at = self.mono()
        last_t = self.clock()
        while True:
            started = self.mono()
            now = self.clock()
            await self.cycle(now, max(now - last_t, 1e-3) if self.seq else period)
            last_t = now
            self.metrics.cycle_s.observe(self.mono() - started)
            if self.on_cycle is not None:
                self.on_cycle()
            next_at += period
            if next_at < self.mono():  # overran: skip the missed cycles, keep the phase
                next_at += period * math.ceil((self.mono() - next_at) / period)
            await asyncio.sleep(max(0.0, next_at - self.mono()))

    async def cycle(self, now: float, dt_s: float) -> None:
        """One cycle at wall time `now`, `dt_s` after the previous one."""
        await self._poll(now)
        self.table.validate(now, dt_s)
        for i in np.flatnonzero(self.table.quality == 0).tolist():
            r = self.table.rows[i]
            self.metrics.last_seen_s.labels(r.zone, r.quantity.value).set(self.table.t[i])
        message = self.table.telemetry(self.cfg.name, self.boot_t, self.seq, now)
        for r in self.table.beyond_wire:
            self.metrics.beyond_wire.labels(r.zone, r.quantity.value).inc()
        if len(message):
            self.seq += 1
            await self.uplink.submit(self.telemetry_topic, encode(message))
        self.core_state, cmd, _ = live_step(
            self.core_state, self.table.live(self.core.zones), now, dt_s, self.core
        )
        await self._supervise()
        # The audit record says why: all silent, or this zone left out by a controller that
        # commands the others.
        why = "controller silent" if self.supervisor.fallback else "not commanded by the controller"
        for k, zone in enumerate(self.core.zones):
            if zone in self._on_fallback and self._fallback_kind[zone] is FallbackKind.LOCAL:
                self.applier.set_target(zone, Target(
                    {
                        "airflow_m3s": float(cmd.airflow_m3s[k]),
                        "t_heat_c": float(cmd.t_heat_c[k]),
                        "t_cool_c": float(cmd.t_cool_c[k]),
                        "mode": float(BMS_MODE[mode_of(int(cmd.mode[k]))]),
                    },
                    Source.FALLBACK, None, f"local control: {why}", math.inf,
                ))  # fmt: skip
        await self._apply()

    async def _apply(self, zones: set[str] | None = None) -> None:
        """Apply targets (default: all). A failing audit log does not stop the writes: they
        are made before their records are stored, and the building needs its setpoints more
        than we need the record. The records wait in the applier for the log to work again
        (a bounded number; see Applier.flush); the failure is counted (the audit log logs its
        failing and recovery); a damaged file is moved aside and the log starts anew."""
        async with self._apply_lock:
            try:
                await self.applier.apply(zones)
            except AuditStoreError as exc:
                corrupt = isinstance(exc, AuditCorruptError)
                await after_store_failure(
                    self.metrics.store_errors, "audit", "record", exc,
                    reopen=self.audit.reopen if corrupt else None,
                )  # fmt: skip

    async def _poll(self, now: float) -> None:
        k = self._cycle_no
        self._cycle_no += 1
        due = [d for name, d in self.devices.items() if k % self._every[name] == 0]
        if not due:
            return
        async with asyncio.TaskGroup() as tg:
            tasks = {d.name: tg.create_task(d.poll(), name=f"poll-{d.name}") for d in due}
        for name, task in tasks.items():
            result = task.result()
            self.table.update_device(name, result.values, now)
            self.metrics.device_up.labels(name).set(0 if self.devices[name].down else 1)
            if not result.skipped:
                self.metrics.poll_requests.labels(name).inc(result.requests)
                self.metrics.poll_errors.labels(name).inc(result.errors)
                self.metrics.poll_latency_s.labels(name).observe(result.latency_s)

    async def _supervise(self) -> None:
        sup = self.supervisor
        if not sup.fallback and sup.silent():
            sup.fallback = True
            log.warning(
                "controller silent for %.0f s: zones on their fallback (%s)",
                self.mono() - sup.last_heard,
                ", ".join(f"{z}={k.value}" for z, k in self._fallback_kind.items()),
            )
            for zone, kind in self._fallback_kind.items():
                # A zone still on its fallback since the last silence keeps its target.
                if kind is FallbackKind.RELINQUISH and zone not in self._on_fallback:
                    self.applier.set_target(
                        zone, self.applier.relinquish_target(zone, "controller silent")
                    )
            self._on_fallback.update(self._fallback_kind)
            await self._announce()
        self.metrics.fallback_zones.set(len(self._on_fallback))

    async def _hand_back(self, zones: list[str]) -> None:
        """The controller is back and has commanded these zones (their targets are its now):
        they leave their fallback. Zones it did not command stay on theirs until it does."""
        sup = self.supervisor
        was_silent, sup.fallback = sup.fallback, False
        handed = self._on_fallback.intersection(zones)
        if not handed:
            return
        self._on_fallback -= handed
        if self._on_fallback:
            log.info(
                "controller %s: handed back %s; still on their fallback until it commands them: %s",
                "heard again" if was_silent else "commands more zones",
                ", ".join(sorted(handed)),
                ", ".join(self.fallback_zones()),
            )
        else:
            log.info("controller %s: all zones handed back",
                     "heard again" if was_silent else "commands every zone")  # fmt: skip
        self.metrics.fallback_zones.set(len(self._on_fallback))
        await self._announce()

    async def _announce(self) -> None:
        try:
            await self.uplink.publish_status()
        except aiomqtt.MqttError as exc:
            log.debug("status not published (the next connection will): %s", exc)

    # --- messages -----------------------------------------------------------------------------

    async def _on_message(self, message: aiomqtt.Message, received: float) -> None:
        topic = message.topic.value
        payload = message.payload if isinstance(message.payload, bytes) else b""
        if topic == self.uplink.command_topic:
            try:
                cs = decode_commands(payload)
            except WireError as exc:
                self._rejected("commands", exc)
                return
            expiry = getattr(message.properties, "MessageExpiryInterval", None)
            zones = self.applier.accept(cs, received, None if expiry is None else float(expiry))
            if zones:
                self.supervisor.heard()
                await self._hand_back(zones)
                self._event_zones.update(zones)
            self._apply_now.set()  # also writes the audit records of a refused command
        elif topic == self.uplink.controller_topic:
            try:
                status = decode_controller_status(payload)
            except WireError as exc:
                self._rejected("controller-status", exc)
                return
            fresh = abs(self.clock() - status.t) <= self.cfg.file.fallback.after_s
            if status.state is ControllerState.ONLINE and fresh:
                self.supervisor.heard()
        elif topic in self.table.mqtt_fields:
            try:
                self.table.update_mqtt(topic, payload, self.clock())
            except PayloadError as exc:
                self._rejected(f"sensor {topic}", exc)

    def _rejected(self, kind: str, exc: Exception) -> None:
        """Count a malformed payload; log the first of each kind, the rest at DEBUG."""
        self.metrics.rejected_payloads.labels(kind.split(" ", 1)[0]).inc()
        if kind not in self._rejected_logged:
            self._rejected_logged.add(kind)
            log.warning("dropped a malformed %s payload (further ones are counted): %s", kind, exc)
        else:
            log.debug("dropped a malformed %s payload: %s", kind, exc)

    async def _event_applier(self) -> None:
        """Commands are applied as they arrive, not at the next cycle."""
        while True:
            await self._apply_now.wait()
            self._apply_now.clear()
            zones, self._event_zones = self._event_zones, set()
            await self._apply(zones)
