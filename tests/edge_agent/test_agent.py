"""Tests for edge_agent.agent: failing disks never stop the cycle; zones handed back one by one."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import aiomqtt
import pytest

from bacnet_modbus.modbus import ModbusDevice
from controller.wire import (
    CommandSet,
    ControllerState,
    ControllerStatus,
    GatewayState,
    Mode,
    ZoneCommand,
    decode_telemetry,
    encode,
)
from edge_agent.agent import Agent
from edge_agent.audit import AuditCorruptError, AuditLog, AuditRecord, Outcome, Source
from edge_agent.buffer import BufferCorruptError, BufferStoreError, DiskBuffer
from edge_agent.config import load_gateway
from edge_agent.metrics import AgentMetrics
from edge_agent.uplink import RateLimiter
from tests.edge_agent.test_applier import DEFAULTS, FakeClock, FakeDevice

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "config" / "sites" / "helsinki-office.toml"
DEVICES = REPO / "config" / "devices"
ZONE = "office-e1"
OTHER = "meeting-medium-1"
CYCLE_S = 10.0
AFTER_S = 60.0  # fallback.after_s
T0 = 1_800_000_000.0
M0 = 5_000.0


def gateway(directory: Path, other_fallback: str) -> str:
    return f"""
[gateway]
name = "gw"
site = "{SITE}"
profiles = "{DEVICES}"
cycle_s = {CYCLE_S}

[[bus]]
name = "bms"
kind = "tcp"
host = "127.0.0.1"
port = 1

[[device]]
name = "vav-e1"
bus = "bms"
device_id = 1
profile = "vav-ahu"

[[device]]
name = "vav-m1"
bus = "bms"
device_id = 2
profile = "vav-ahu"

[[zone]]
name = "{ZONE}"
fallback = "local"
write = {{ airflow_m3s = "vav-e1/airflow_setpoint_m3s" }}

[[zone]]
name = "{OTHER}"
fallback = "{other_fallback}"
write = {{ airflow_m3s = "vav-m1/airflow_setpoint_m3s" }}

[[mqtt_sensor]]
topic = "sensors/e1"
zone = "{ZONE}"
fields = {{ co2_ppm = "co2" }}

[fallback]
after_s = {AFTER_S}

[buffer]
path = "{directory}/buffer.sqlite"

[audit]
path = "{directory}/audit.sqlite"
"""


@dataclass
class _Topic:
    value: str


@dataclass
class _Message:
    """What the agent reads of an aiomqtt.Message."""

    topic: _Topic
    payload: bytes
    properties: object = None


class Rig:
    """An agent on real disk stores, with fake devices, fake clocks and no polling."""

    def __init__(self, directory: Path, other_fallback: str = "local") -> None:
        path = directory / "gw.toml"
        path.write_text(gateway(directory, other_fallback), encoding="utf-8")
        cfg = load_gateway(path)
        # NORMAL: no fsync per transaction; these tests do not pull the plug.
        self.buffer = DiskBuffer(directory / "buffer.sqlite", 1000, synchronous="NORMAL")
        self.audit = AuditLog(directory / "audit.sqlite", 1000, synchronous="NORMAL")
        self.clock, self.mono = FakeClock(T0), FakeClock(M0)
        self.metrics = AgentMetrics()
        self.agent = Agent(
            cfg, self.buffer, self.audit, self.metrics, clock=self.clock, mono=self.mono
        )
        points = {
            n: p.model_copy(update={"max_rate_per_s": None})
            for n, p in cfg.profiles["vav-ahu"].points.items()
        }
        self.vav = FakeDevice("vav-e1", points, DEFAULTS)
        self.other = FakeDevice("vav-m1", points, DEFAULTS)
        # The applier holds the same dict: it writes to the fakes too.
        self.agent.devices.update(
            cast("dict[str, ModbusDevice]", {"vav-e1": self.vav, "vav-m1": self.other})
        )

        async def no_poll(now: float) -> None:  # noqa: ARG001  (_poll's signature)
            return None

        self.agent._poll = no_poll  # type: ignore[method-assign]
        self.seq = 0

    def close(self) -> None:
        self.buffer.close()
        self.audit.close()

    async def cycles(self, n: int, *, co2_ppm: float | None = 600.0) -> None:
        """n cycles, CYCLE_S apart, each with a fresh CO2 reading (so each has telemetry)."""
        for _ in range(n):
            self.clock.t += CYCLE_S
            self.mono.t += CYCLE_S
            if co2_ppm is not None:
                payload = f'{{"co2": {co2_ppm}}}'.encode()
                await self.receive("sensors/e1", payload)
            await self.agent.cycle(self.clock(), CYCLE_S)

    async def receive(self, topic: str, payload: bytes) -> None:
        message = cast("aiomqtt.Message", _Message(_Topic(topic), payload))
        await self.agent._on_message(message, self.mono())

    async def command(self, *zones: str, airflow_m3s: float = 0.5) -> CommandSet:
        self.seq += 1
        t = self.clock()
        cs = CommandSet(
            controller="ctl", seq=self.seq, t=t, lease_s=180.0, valid_until=t + 180.0,
            commands=tuple(ZoneCommand(zone=z, mode=Mode.OCCUPIED, airflow_m3s=airflow_m3s,
                                       t_heat_c=21.0, t_cool_c=25.0) for z in zones),
        )  # fmt: skip
        await self.receive(self.agent.uplink.command_topic, encode(cs))
        return cs

    async def heartbeat(self) -> None:
        hb = ControllerStatus(controller="ctl", state=ControllerState.ONLINE, t=self.clock())
        await self.receive(self.agent.uplink.controller_topic, encode(hb))

    def counted(self, family: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(family, labels)
        return 0.0 if value is None else value

    def store_errors(self, store: str, op: str) -> float:
        return self.counted("ilma_agent_store_errors_total", store=store, op=op)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


@pytest.fixture
def relinquish_rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path, other_fallback="relinquish")
    yield r
    r.close()


def fill_up(conn: sqlite3.Connection, write: Callable[[], object]) -> None:
    """Make the disk full for this store: no page beyond those it has, and those filled.

    SQLite's max_page_count gives the very error of a full disk (SQLITE_FULL, "database or
    disk is full") without filling the test machine's disk.
    """
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count = {int(pages)}")
    for _ in range(10_000):
        try:
            write()
        except OSError:
            return
    raise AssertionError("the store never filled up")


def room_again(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA max_page_count = 1073741823")


def damage(conn: sqlite3.Connection | None, path: Path) -> None:
    """Overwrite a store's file with bytes that are no SQLite database.

    The WAL is checkpointed into the file first and emptied: closing the connection would
    otherwise write the pages it holds back over the damage.
    """
    assert conn is not None
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    path.write_bytes(b"\x00damaged by a failing SD card\x00" * 512)


def transitions(caplog: pytest.LogCaptureFixture, logger: str) -> list[tuple[int, str]]:
    return [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if r.name == logger and r.levelno >= logging.INFO
    ]


class _Publisher:
    """Records what the uplink publishes, as a connected broker would acknowledge it."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    async def publish(self, topic: str, payload: bytes, **_options: object) -> None:
        self.published.append((topic, payload))


def connected(rig: Rig) -> _Publisher:
    client = _Publisher()
    rig.agent.uplink.connected_since = rig.clock()
    return client


async def send_held(rig: Rig, client: _Publisher) -> None:
    limiter = RateLimiter(100.0, rig.mono)
    await rig.agent.uplink._send_unbuffered(cast("aiomqtt.Client", client), limiter)


# --- a failing buffer -------------------------------------------------------------------------


def test_a_full_disk_under_the_buffer_stops_neither_the_cycle_nor_the_fallback(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    conn = rig.buffer._conn
    assert conn is not None
    fill_up(conn, lambda: rig.buffer.append([("t", b"x" * 64, 1, T0)]))
    held = rig.buffer.depth
    with caplog.at_level(logging.DEBUG):
        # Past fallback.after_s of controller silence, on a full disk.
        asyncio.run(rig.cycles(int(AFTER_S / CYCLE_S) + 3))
    assert rig.agent.supervisor.fallback
    assert rig.agent.fallback_zones() == (ZONE, OTHER)
    assert rig.vav.written("airflow_setpoint_m3s"), "the local fallback writes setpoints"
    n = int(AFTER_S / CYCLE_S) + 3
    assert rig.store_errors("buffer", "append") == n
    assert rig.buffer.depth == held  # nothing was stored
    # Logged once when it began failing, not once per cycle.
    logged = transitions(caplog, "edge_agent.buffer")
    assert [lvl for lvl, _ in logged] == [logging.WARNING]
    assert "append failing" in logged[0][1]


def test_telemetry_the_buffer_cannot_take_is_sent_live_and_the_recovery_logged(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    conn = rig.buffer._conn
    assert conn is not None
    fill_up(conn, lambda: rig.buffer.append([("t", b"x" * 64, 1, T0)]))
    client = connected(rig)

    async def go() -> None:
        await rig.cycles(3)
        await send_held(rig, client)

    caplog.set_level(logging.INFO)
    asyncio.run(go())
    topic = rig.agent.telemetry_topic
    assert [t for t, _ in client.published] == [topic] * 3
    sent = [decode_telemetry(p) for _, p in client.published]
    assert [t.seq for t in sent] == [0, 1, 2]  # in order
    assert not any(any(t.readings.replayed) for t in sent)  # live, not replayed
    assert rig.counted("ilma_agent_unbuffered_messages_total", outcome="sent") == 3
    # The disk has room again: the buffer takes telemetry, and says so once.
    room_again(conn)
    depth = rig.buffer.depth
    asyncio.run(rig.cycles(2))
    assert rig.buffer.depth == depth + 2
    levels = [lvl for lvl, _ in transitions(caplog, "edge_agent.buffer")]
    assert levels == [logging.WARNING, logging.INFO]
    assert "append works again" in transitions(caplog, "edge_agent.buffer")[-1][1]


def test_held_telemetry_is_bounded_and_the_overflow_counted(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("edge_agent.uplink.UNBUFFERED_MAX", 4)
    conn = rig.buffer._conn
    assert conn is not None
    fill_up(conn, lambda: rig.buffer.append([("t", b"x" * 64, 1, T0)]))
    client = connected(rig)

    async def go() -> None:
        await rig.cycles(6)  # the broker is away meanwhile: held in memory, at most 4
        await send_held(rig, client)

    asyncio.run(go())
    assert [decode_telemetry(p).seq for _, p in client.published] == [2, 3, 4, 5]  # the newest
    assert rig.counted("ilma_agent_unbuffered_messages_total", outcome="dropped") == 2


def test_a_damaged_buffer_file_is_moved_aside_and_buffering_goes_on(
    rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = rig.buffer.path
    asyncio.run(rig.cycles(1))
    assert rig.buffer.depth == 1
    real_append = rig.buffer.append
    calls = 0

    def append_on_a_damaged_file(messages: Sequence[tuple[str, bytes, int, float]]) -> int:
        # What SQLite says when it reads a damaged page; the file is damaged indeed.
        nonlocal calls
        calls += 1
        if calls == 1:
            damage(rig.buffer._conn, path)
            raise BufferCorruptError(f"buffer {path}: database disk image is malformed")
        return real_append(messages)

    monkeypatch.setattr(rig.buffer, "append", append_on_a_damaged_file)
    asyncio.run(rig.cycles(3))
    assert rig.store_errors("buffer", "append") == 1
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("buffer.sqlite.corrupt-")]) == 1
    # The same buffer object (the daemon and the uplink hold it) works on a new, empty file:
    # the two cycles after the damage are stored, the one that met it is held for the sender.
    assert rig.buffer.depth == 2
    assert [decode_telemetry(m.payload).seq for m in rig.buffer.peek(10)] == [2, 3]
    assert len(rig.agent.uplink._unbuffered) == 1


# --- a failing audit log ----------------------------------------------------------------------


def _record() -> AuditRecord:
    return AuditRecord(T0, ZONE, "vav-e1/airflow_setpoint_m3s", "vav-e1", 0.2, 0.2, 0.2,
                       Outcome.APPLIED, None, Source.FALLBACK, "filler" * 20)  # fmt: skip


def test_a_full_disk_under_the_audit_log_does_not_stop_the_writes(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    conn = rig.audit._conn
    assert conn is not None
    fill_up(conn, lambda: rig.audit.record(_record()))
    held = len(rig.audit.recent(10_000))
    with caplog.at_level(logging.INFO):
        asyncio.run(rig.cycles(int(AFTER_S / CYCLE_S) + 3))
        assert rig.agent.fallback_zones() == (ZONE, OTHER)
        assert rig.vav.written("airflow_setpoint_m3s"), "the writes are made, unrecorded"
        assert rig.store_errors("audit", "record") >= 1
        assert len(rig.audit.recent(10_000)) == held
        # The controller's commands are applied too (by the event path).
        asyncio.run(rig.command(ZONE, OTHER, airflow_m3s=0.6))
        asyncio.run(rig.cycles(1))
        assert rig.other.values["airflow_setpoint_m3s"] == pytest.approx(0.6)
        room_again(conn)
        asyncio.run(rig.command(ZONE, OTHER, airflow_m3s=0.7))
        asyncio.run(rig.cycles(1))
    assert rig.other.values["airflow_setpoint_m3s"] == pytest.approx(0.7)
    assert [r.requested for r in rig.audit.recent(2)] == [0.7, 0.7]
    levels = [lvl for lvl, _ in transitions(caplog, "edge_agent.audit")]
    assert levels == [logging.WARNING, logging.INFO]


def test_a_damaged_audit_log_is_moved_aside_and_auditing_goes_on(
    rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = rig.audit.path
    real_record_many = rig.audit.record_many
    calls = 0

    def record_on_a_damaged_file(records: Sequence[AuditRecord]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            damage(rig.audit._conn, path)
            raise AuditCorruptError(f"audit log {path}: database disk image is malformed")
        real_record_many(records)

    monkeypatch.setattr(rig.audit, "record_many", record_on_a_damaged_file)

    async def go() -> None:
        await rig.command(ZONE, airflow_m3s=0.6)
        await rig.cycles(1)  # met the damage: written, not recorded
        await rig.command(ZONE, airflow_m3s=0.8)
        await rig.cycles(1)

    asyncio.run(go())
    assert rig.vav.written("airflow_setpoint_m3s") == pytest.approx([0.6, 0.8])
    assert rig.store_errors("audit", "record") == 1
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("audit.sqlite.corrupt-")]) == 1
    # The record the damaged file could not take was held and stored in the new one.
    assert [r.requested for r in rig.audit.recent(10)] == [0.8, 0.6]


# --- handing zones back -----------------------------------------------------------------------


def test_a_zone_the_returning_controller_leaves_out_stays_on_an_updated_fallback(
    rig: Rig,
) -> None:
    a = rig.agent
    targets = a.applier.targets

    async def go() -> None:
        await rig.cycles(int(AFTER_S / CYCLE_S) + 2)
        assert a.fallback_zones() == (ZONE, OTHER)
        await rig.command(ZONE)
        # The commanded zone is the controller's; the other stays on its fallback, and the
        # status says so.
        assert a.fallback_zones() == (OTHER,)
        status = a.status()
        assert status.state is GatewayState.DEGRADED
        assert status.fallback_zones == (OTHER,)
        assert rig.counted("ilma_agent_fallback_zones") == 1
        before = targets[OTHER]
        await rig.cycles(3, co2_ppm=1400.0)
        # Kept up to date by the shadow core every cycle, not frozen at hand-back.
        assert targets[OTHER].source is Source.FALLBACK
        assert targets[OTHER] is not before
        assert targets[ZONE].source is Source.CONTROLLER
        await rig.command(ZONE, OTHER)

    asyncio.run(go())
    assert a.fallback_zones() == ()
    assert a.status().state is GatewayState.ONLINE
    assert rig.counted("ilma_agent_fallback_zones") == 0
    assert {t.source for t in targets.values()} == {Source.CONTROLLER}


def test_a_relinquished_zone_left_out_stays_relinquished(relinquish_rig: Rig) -> None:
    rig = relinquish_rig

    async def go() -> None:
        await rig.cycles(int(AFTER_S / CYCLE_S) + 2)
        await rig.command(ZONE)
        await rig.cycles(2)

    asyncio.run(go())
    assert rig.agent.fallback_zones() == (OTHER,)
    assert rig.agent.applier.targets[OTHER].source is Source.RELINQUISH


def test_silence_after_a_partial_hand_back_puts_every_zone_on_its_fallback_again(
    rig: Rig,
) -> None:
    a = rig.agent

    async def go() -> None:
        await rig.cycles(int(AFTER_S / CYCLE_S) + 2)
        await rig.command(ZONE)
        assert not a.supervisor.fallback
        for _ in range(3):  # the controller is heard, so nothing changes
            await rig.heartbeat()
            await rig.cycles(1)
        assert a.fallback_zones() == (OTHER,)
        await rig.cycles(int(AFTER_S / CYCLE_S) + 2)  # silent again

    asyncio.run(go())
    assert a.supervisor.fallback
    assert a.fallback_zones() == (ZONE, OTHER)
    assert a.applier.targets[ZONE].source is Source.FALLBACK


def test_the_sender_goes_on_when_the_buffer_cannot_be_read_or_emptied(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed peek is an empty batch for now (tried again next cycle); a failed remove keeps
    the messages, to be sent again (at least once); a damaged file is reopened in place."""
    uplink = rig.agent.uplink
    reopened: list[bool] = []

    def broken(*_args: object) -> None:
        raise BufferStoreError("disk I/O error")

    def damaged(*_args: object) -> None:
        raise BufferCorruptError("database disk image is malformed")

    monkeypatch.setattr(rig.buffer, "reopen", lambda: reopened.append(True))
    monkeypatch.setattr(rig.buffer, "peek", broken)
    assert asyncio.run(uplink._peek()) == []
    monkeypatch.setattr(rig.buffer, "remove", broken)
    assert asyncio.run(uplink._remove([1, 2])) is False
    assert (rig.store_errors("buffer", "peek"), rig.store_errors("buffer", "remove")) == (1, 1)
    assert reopened == []  # a full or failing disk is no damaged file
    monkeypatch.setattr(rig.buffer, "peek", damaged)
    assert asyncio.run(uplink._peek()) == []
    assert reopened == [True]


def test_a_reload_keeps_when_the_controller_was_heard_and_its_last_command(rig: Rig) -> None:
    """The agent a reload builds takes over: an older command than the last one taken stays
    refused, and a silent controller stays silent (the fallback is not put off by another
    fallback.after_s)."""
    first = asyncio.run(rig.command(ZONE))
    rig.mono.t += 10.0
    rig.clock.t += 10.0
    reloaded = Agent(
        rig.agent.cfg, rig.buffer, rig.audit, rig.metrics,
        clock=rig.clock, mono=rig.mono, after=rig.agent,
    )  # fmt: skip
    assert reloaded.applier.accept(first, rig.mono()) == []  # redelivered: still valid, old
    assert reloaded.supervisor.last_heard == rig.agent.supervisor.last_heard
    rig.mono.t += AFTER_S
    assert reloaded.supervisor.silent()
    fresh = Agent(rig.agent.cfg, rig.buffer, rig.audit, rig.metrics, clock=rig.clock, mono=rig.mono)
    assert fresh.applier.accept(first, rig.mono()) == [ZONE]  # what a reload did before
    assert not fresh.supervisor.silent()  # ... and another after_s to wait
