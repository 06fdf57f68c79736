"""The central controller service: telemetry in, the control core for every zone, commands out.

It subscribes to its sites' telemetry, keeps per-zone state in arrays (controller.ingest), runs
the control core (controller.live) for each site every control period, and also at once when a
zone turns from empty to occupied or back, so a room that fills gets air within moments. It
publishes each gateway's commands with their lease (as MQTT 5 message expiry too) and reason,
a retained heartbeat per site, and records readings, estimates and commands in history.

Several processes can share the sites: with `share_group` set they take telemetry through an
MQTT 5 shared subscription, announce themselves on a retained member topic (with a Will), and
agree, by rendezvous hashing over the live members, which one runs each site; a process that
receives telemetry of a site it does not run forwards it to the one that does. When a member
dies its Will removes it and its sites move to the others; they start from the telemetry.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from controller.broker import backoff_s, tls_context
from controller.historian import HistoryQueue, Record, TelemetryRecord
from controller.ingest import SiteState
from controller.law import Commands
from controller.live import LiveCore, LiveState, initial_live_state, live_step
from controller.mqtt import Message, Session, SessionError, Will
from controller.service_config import ControllerConfig
from controller.site import Site
from controller.wire import (
    CLUSTER,
    CommandSet,
    ControllerState,
    ControllerStatus,
    GatewayState,
    Kind,
    Telemetry,
    WireError,
    ZoneCommand,
    command_topic,
    controller_status_topic,
    decode_controller_status,
    decode_gateway_status,
    decode_telemetry,
    encode,
    gateway_status_filter,
    inbox_topic,
    member_topic,
    mode_of,
    parse_topic,
    reason_text,
    telemetry_filter,
)
from sensors.occupancy import Estimate

log = logging.getLogger(__name__)

# Zones count as occupied above half a person (the estimate is continuous).
OCCUPIED_ABOVE = 0.5
# A member whose status is older than this many periods is gone, Will or not.
MEMBER_TIMEOUT_PERIODS = 3.0
SESSION_EXPIRY_S = 600


def owner(site: str, members: Iterable[str]) -> str:
    """The member that runs `site`: rendezvous (highest random weight) hashing, so all members
    agree from the same member set, and a member's departure moves only its own sites."""
    return max(members, key=lambda m: hashlib.sha256(f"{m}/{site}".encode()).digest())


@dataclass
class SiteRun:
    """Everything the controller keeps about a site it runs."""

    site: Site
    core: LiveCore
    state: LiveState
    ingest: SiteState
    last_run_s: float = math.nan
    occupied: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    event_zones: set[int] = field(default_factory=set)

    @classmethod
    def fresh(cls, site: Site) -> SiteRun:
        core = LiveCore.build(site)
        return cls(
            site,
            core,
            initial_live_state(core),
            SiteState(core.zones),
            occupied=np.zeros(core.n, dtype=bool),
        )


@dataclass
class Counters:
    """What the service did, for metrics and the benchmark."""

    messages: int = 0
    batches: int = 0  # ingest batches (messages / batches: how many were read together)
    readings: int = 0
    duplicates: int = 0
    unknown_zone_readings: int = 0  # readings of zones the site does not have (history only)
    rejected: int = 0
    forwarded: int = 0
    commands: int = 0
    runs: int = 0
    event_runs: int = 0
    run_s: list[float] = field(default_factory=list)


class ControllerService:
    def __init__(
        self,
        cfg: ControllerConfig,
        history: HistoryQueue,
        *,
        clock: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.period_s = cfg.file.controller.period_s
        self.lease_s = self.period_s * cfg.file.controller.lease_periods
        self.group = cfg.file.controller.share_group
        self.history = history
        self.clock = clock
        self.mono = mono
        self.rng = rng or random.Random()  # noqa: S311  (jitter, not secrets)
        self.counters = Counters()
        self._unknown_zones_logged: set[str] = set()  # sites warned of once
        self.runs: dict[str, SiteRun] = {}
        self.members: dict[str, float] = {}  # other live members → their status time
        self.seq = 0
        self.connected = asyncio.Event()
        self._client: Session | None = None
        self._wake = asyncio.Event()
        self._failures = 0
        self._rejected_logged: set[str] = set()
        self._gateway_state: dict[tuple[str, str], GatewayState] = {}

    # --- ownership ----------------------------------------------------------------------------

    def live_members(self) -> list[str]:
        cutoff = self.clock() - MEMBER_TIMEOUT_PERIODS * self.period_s
        return [self.name, *(m for m, t in self.members.items() if t >= cutoff)]

    def owns(self, site: str) -> bool:
        return self.group is None or owner(site, self.live_members()) == self.name

    def _rebalance(self) -> None:
        """Start or stop running sites after the member set changed."""
        for name, site in self.cfg.sites.items():
            mine = self.owns(name)
            if mine and name not in self.runs:
                log.info(
                    "running site %s (members: %s)", name, ", ".join(sorted(self.live_members()))
                )
                self.runs[name] = SiteRun.fresh(site)
            elif not mine and name in self.runs:
                log.info("site %s moves to %s", name, owner(name, self.live_members()))
                del self.runs[name]

    # --- the session --------------------------------------------------------------------------

    def _client_for(self) -> Session:
        b = self.cfg.file.broker
        offline = ControllerStatus(
            controller=self.name, state=ControllerState.OFFLINE, t=self.clock()
        )
        # paho driven from the event loop rather than aiomqtt: a third of the CPU per telemetry
        # message (controller.mqtt).
        return Session(
            b.host,
            b.port,
            client_id=self.cfg.client_id(),
            username=b.username,
            password=b.password.read() if b.password else None,
            tls=tls_context(b),
            will=Will(member_topic(self.name), encode(offline)),
            keepalive_s=b.keepalive_s,
            session_expiry_s=SESSION_EXPIRY_S,
            clean_start=True,
        )

    async def run(self) -> None:
        """Serve, reconnecting forever, until cancelled."""
        while True:
            try:
                async with self._client_for() as client:
                    await self._serve(client)
            except* SessionError as group:
                self._failures += 1
                if self._failures == 1:
                    log.warning("broker lost or unreachable: %s", group.exceptions[0])
            finally:
                self._client = None
                self.connected.clear()
            await asyncio.sleep(backoff_s(self.cfg.file.broker, self._failures, self.rng))

    async def _serve(self, client: Session) -> None:
        self._client = client
        if self._failures:
            log.info("broker connection back after %d failed tries", self._failures)
        self._failures = 0
        for name in self.cfg.sites:
            await client.subscribe(telemetry_filter(name, group=self.group), qos=1)
            await client.subscribe(gateway_status_filter(name), qos=1)
        if self.group is not None:
            await client.subscribe(inbox_topic(self.name), qos=1)
            await client.subscribe(member_topic("+"), qos=1)
        await self._announce()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._receive(client), name="controller-receive")
            if self.group is not None:
                # The retained member statuses arrive first: learn who is there before claiming.
                await asyncio.sleep(min(1.0, self.period_s / 4))
            self._rebalance()
            self.connected.set()
            tg.create_task(self._control(), name="controller-control")

    async def _announce(self) -> None:
        """The retained availability of this process (its Will says offline); among processes
        sharing sites, also its membership."""
        if self._client is None:
            return
        status = ControllerStatus(
            controller=self.name,
            state=ControllerState.ONLINE,
            t=self.clock(),
            period_s=self.period_s,
        )
        await self._client.publish(member_topic(self.name), encode(status), qos=1, retain=True)

    async def goodbye(self) -> None:
        """A clean shutdown: offline on the member topic, so the others take over at once."""
        if self._client is None:
            return
        status = ControllerStatus(
            controller=self.name, state=ControllerState.OFFLINE, t=self.clock()
        )
        try:
            await self._client.publish(
                member_topic(self.name), encode(status), qos=1, retain=True, ack_timeout_s=2
            )
        except SessionError as exc:
            log.debug("could not say goodbye: %s", exc)

    # --- messages -----------------------------------------------------------------------------

    async def _receive(self, client: Session) -> None:
        async for batch in client.batches():
            await self.on_messages(batch)

    async def on_message(self, topic: str, payload: bytes, properties: Properties | None) -> None:
        await self.on_messages(((topic, payload, properties),))

    async def on_messages(self, batch: Iterable[Message]) -> None:
        """Messages read from the socket together, in order. A site's telemetry among them is
        ingested as one batch (SiteState.ingest_many): per message, the state update cost more
        than the decoding."""
        received = self.clock()
        pending: dict[str, list[tuple[Telemetry, bytes]]] = {}
        try:
            await self._dispatch(batch, pending, received)
        finally:
            # Also when forwarding failed midway: what was taken is acknowledged to the broker
            # already, and must not be lost with the session.
            self._take(pending, received)

    async def _dispatch(
        self,
        batch: Iterable[Message],
        pending: dict[str, list[tuple[Telemetry, bytes]]],
        received: float,
    ) -> None:
        """Handle each message in order; telemetry of sites run here goes to `pending`."""
        for received_on, payload, properties in batch:
            topic = received_on
            if received_on == inbox_topic(self.name):  # forwarded by another member
                topic = _user_property(properties, "topic") or ""
            elif topic.startswith(CLUSTER + "/") and topic.endswith("/status"):
                self._take(pending, received)  # the sites may move: what came first goes first
                self._on_member(payload)
                continue
            try:
                where = parse_topic(topic)
            except WireError as exc:
                self._reject("topic", exc)
                continue
            if where.site not in self.cfg.sites:
                continue
            if where.kind is Kind.TELEMETRY:
                if await self._runs_site(where.site, topic, payload):
                    try:
                        msg = decode_telemetry(payload)
                    except WireError as exc:
                        self._reject("telemetry", exc)
                        continue
                    self.counters.messages += 1
                    pending.setdefault(where.site, []).append((msg, payload))
            elif where.kind is Kind.GATEWAY_STATUS:
                self._on_gateway_status(where.site, payload)

    async def _runs_site(self, site: str, topic: str, payload: bytes) -> bool:
        """Whether this process runs the site; if another does, the message goes to it."""
        if site in self.runs:
            return True
        if not self.connected.is_set():
            return False  # before the first rebalance: the gateway sends again next cycle
        if owner(site, self.live_members()) == self.name:
            self._rebalance()  # a member aged out: its sites are ours now
            return True
        if self._client is not None:
            await self._forward(site, topic, payload)
        return False

    def _take(self, pending: dict[str, list[tuple[Telemetry, bytes]]], received: float) -> None:
        """Ingest each site's pending telemetry, queue it for history, check for events."""
        c = self.counters
        for site, items in pending.items():
            run = self.runs.get(site)
            if run is None:  # moved to another member meanwhile: it hears the next cycle
                continue
            got = run.ingest.ingest_many([msg for msg, _ in items], received)
            c.batches += 1
            c.duplicates += got.duplicates
            c.readings += got.new + got.history
            if got.unknown_zones:
                c.unknown_zone_readings += got.unknown_zones
                if site not in self._unknown_zones_logged:
                    self._unknown_zones_logged.add(site)
                    log.warning(
                        "site %s: telemetry names zones its file does not have (a gateway's file "
                        "and the site's disagree?); their readings go to history only, further "
                        "ones are counted (ilma_controller_unknown_zone_readings)",
                        site,
                    )
            for i, offset_s in got.accepted:
                msg, payload = items[i]
                self.history.put_message(TelemetryRecord(site, msg, payload, offset_s))
            if got.new_zones:
                # A gateway heard of for the first time (or again after a restart of ours) gets
                # its zones' commands now, not at the next period.
                run.event_zones |= got.new_zones
                self._wake.set()
            if got.counter_zones:
                self._check_events(run, got.counter_zones, received)
        pending.clear()

    def _check_events(self, run: SiteRun, zones: frozenset[int], now: float) -> None:
        """Zones whose counters say they turned occupied or empty get their command now."""
        readings = run.ingest.live(now)
        offset = run.state.estimator.offset
        for z in zones:
            count = readings.counter_in[z] - readings.counter_out[z] + offset[z]
            if not math.isfinite(count):
                continue
            if (count > OCCUPIED_ABOVE) != bool(run.occupied[z]):
                run.event_zones.add(z)
        if run.event_zones:
            self._wake.set()

    async def _forward(self, site: str, topic: str, payload: bytes) -> None:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.UserProperty = [("topic", topic)]
        target = owner(site, self.live_members())
        assert self._client is not None  # noqa: S101  (checked by the caller)
        await self._client.publish(inbox_topic(target), payload, qos=1, properties=props)
        self.counters.forwarded += 1

    def _on_member(self, payload: bytes) -> None:
        try:
            status = decode_controller_status(payload)
        except WireError as exc:
            self._reject("member", exc)
            return
        if status.controller == self.name:
            return
        before = set(self.live_members())
        timeout = MEMBER_TIMEOUT_PERIODS * self.period_s
        if status.state is ControllerState.ONLINE and self.clock() - status.t <= timeout:
            # Liveness by arrival on our clock; a status already old when it came (a retained
            # ghost of a member whose Will was lost with a broker restart) does not count.
            self.members[status.controller] = self.clock()
        elif status.state is ControllerState.OFFLINE:
            self.members.pop(status.controller, None)
        if set(self.live_members()) != before and self.connected.is_set():
            self._rebalance()

    def _on_gateway_status(self, site: str, payload: bytes) -> None:
        try:
            status = decode_gateway_status(payload)
        except WireError as exc:
            self._reject("gateway-status", exc)
            return
        key = (site, status.gateway)
        if self._gateway_state.get(key) != status.state:
            self._gateway_state[key] = status.state
            level = logging.INFO if status.state is GatewayState.ONLINE else logging.WARNING
            fallback = ", ".join(status.fallback_zones)
            log.log(level, "gateway %s/%s is %s%s", site, status.gateway, status.state.value,
                    f" (fallback: {fallback})" if fallback else "")  # fmt: skip

    def _reject(self, kind: str, exc: Exception) -> None:
        """Count a malformed payload; log the first of each kind, the rest at DEBUG."""
        self.counters.rejected += 1
        if kind not in self._rejected_logged:
            self._rejected_logged.add(kind)
            log.warning("dropped a malformed %s payload (further ones are counted): %s", kind, exc)
        else:
            log.debug("dropped a malformed %s payload: %s", kind, exc)

    # --- control ------------------------------------------------------------------------------

    async def _control(self) -> None:
        next_at = self.mono()
        while True:
            timeout = max(0.0, next_at - self.mono())
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            if self.mono() >= next_at:
                self._rebalance()  # members whose status stopped coming have aged out
                for name in list(self.runs):
                    await self.run_site(name)
                await self._announce()
                next_at += self.period_s
                if next_at < self.mono():
                    next_at = self.mono() + self.period_s
            else:
                for name, run in list(self.runs.items()):
                    if run.event_zones:
                        await self.run_site(name, event=True)

    async def run_site(self, name: str, *, event: bool = False) -> None:
        """One control step of a site; publish the commands of every gateway (on an event,
        of the gateways whose zones changed)."""
        run = self.runs[name]
        started = self.mono()
        now = self.clock()
        dt = (
            self.period_s
            if math.isnan(run.last_run_s)
            else min(max(now - run.last_run_s, 0.1), 10 * self.period_s)
        )
        run.last_run_s = now
        run.state, cmd, est = live_step(run.state, run.ingest.live(now), now, dt, run.core)
        previously = run.occupied.copy()
        run.occupied = np.nan_to_num(est.occupancy) > OCCUPIED_ABOVE
        events, run.event_zones = run.event_zones, set()
        c = self.counters
        c.runs += 1
        if event:
            c.event_runs += 1
        changed = set(np.flatnonzero(run.occupied != previously).tolist()) | events
        known = run.ingest.gateway_of_zone
        if event:
            gateways = sorted({g for z in changed if (g := known[z]) is not None})
        else:
            gateways = sorted({g for g in known if g is not None})
        # All gateways' commands in flight at once: each QoS 1 publish waits for its PUBACK.
        await asyncio.gather(*(self._publish(name, gw, run, cmd, now) for gw in gateways))
        zones = (
            [z for gw in gateways for z in run.ingest.zones_of(gw)] if event else range(run.core.n)
        )
        self.history.put(_control_records(name, run, cmd, est, now, zones=zones))
        c.run_s.append(self.mono() - started)
        if len(c.run_s) > 10_000:
            del c.run_s[:5000]
        if not event:
            await self._heartbeat(name, now)

    async def _publish(
        self, site: str, gateway: str, run: SiteRun, cmd: Commands, now: float
    ) -> None:
        client = self._client
        if client is None:
            return
        zones = run.ingest.zones_of(gateway)
        self.seq += 1
        cs = CommandSet(
            controller=self.name,
            seq=self.seq,
            t=now,
            lease_s=self.lease_s,
            valid_until=now + self.lease_s,
            commands=tuple(
                ZoneCommand(
                    zone=run.core.zones[z],
                    mode=mode_of(int(cmd.mode[z])),
                    airflow_m3s=float(cmd.airflow_m3s[z]),
                    t_heat_c=float(cmd.t_heat_c[z]),
                    t_cool_c=float(cmd.t_cool_c[z]),
                    reason=reason_text(int(cmd.reason[z])),
                )
                for z in zones
            ),
        )
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.MessageExpiryInterval = max(1, math.ceil(self.lease_s))
        await client.publish(command_topic(site, gateway), encode(cs), qos=1, properties=props)
        self.counters.commands += len(zones)

    async def _heartbeat(self, site: str, now: float) -> None:
        if self._client is None:
            return
        status = ControllerStatus(
            controller=self.name, state=ControllerState.ONLINE, t=now, period_s=self.period_s
        )
        await self._client.publish(
            controller_status_topic(site), encode(status), qos=1, retain=True
        )


def _user_property(properties: Properties | None, key: str) -> str | None:
    for k, v in getattr(properties, "UserProperty", None) or []:
        if k == key:
            return str(v)
    return None


def _control_records(
    site: str, run: SiteRun, cmd: Commands, est: Estimate, now: float, *, zones: Iterable[int]
) -> list[Record]:
    """History of a run: the estimate and command of these zones (on an event run, only those
    of the gateways that got commands)."""
    t_ns = int(now * 1e9)
    out = []
    names = run.core.zones
    for z in zones:
        zone = names[z]
        tags = (("site", site), ("zone", zone))
        occupancy = float(est.occupancy[z])
        if math.isfinite(occupancy):
            out.append(
                Record(
                    "estimate",
                    tags,
                    (("occupancy", occupancy), ("confidence", float(est.confidence[z]))),
                    t_ns,
                )
            )
        out.append(
            Record(
                "command",
                tags,
                (
                    ("airflow_m3s", float(cmd.airflow_m3s[z])),
                    ("t_heat_c", float(cmd.t_heat_c[z])),
                    ("t_cool_c", float(cmd.t_cool_c[z])),
                    ("mode", int(cmd.mode[z])),
                    ("reason", reason_text(int(cmd.reason[z]))),
                ),
                t_ns,
            )
        )
    return out
