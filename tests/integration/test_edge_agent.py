"""The edge agent against real servers: mosquitto, pymodbus devices over TCP and RTU (socat).

The agent runs as its own process (`python -m edge_agent.daemon`), as on a gateway; the tests
play the building (virtual Modbus devices), the controller (paho) and the operator (SIGKILL,
stopping the broker).
"""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.wire import GatewayState, Mode
from tests.fixtures_servers import MosquittoFactory, ServerProcessFactory
from tests.integration.agent_harness import (
    OTHER_ZONE,
    ZONE,
    Building,
    Controller,
    Listener,
    audit_rows,
    buffer_depth,
    contiguous,
    gateway_toml,
)
from tests.servers import Mosquitto, PtyPair, ServerProcess, free_port, wait_until

pytestmark = pytest.mark.xdist_group("edge-agent")


@dataclass
class Rig:
    directory: Path
    broker: Mosquitto
    building: Building
    devices: ServerProcess
    config: Path
    start_agent: ServerProcessFactory

    def agent(self, **kw: object) -> ServerProcess:
        """Start (another) agent process on the rig's gateway file."""
        return self.start_agent(
            "edge_agent.daemon",
            ["--config", str(self.config)],
            **kw,  # type: ignore[arg-type]
        )

    def rewrite(self, **kw: object) -> None:
        self.config = gateway_toml(
            self.directory,
            self.building,
            self.broker.port,
            **kw,  # type: ignore[arg-type]
        )


@pytest.fixture
def rig(
    tmp_path: Path,
    mosquitto_factory: MosquittoFactory,
    pty_pair: PtyPair,
    server_process_factory: ServerProcessFactory,
) -> Rig:
    broker = mosquitto_factory(persistence=True)
    building = Building(tmp_path, free_port(), str(pty_pair.a), str(pty_pair.b))
    building.write_spec()
    devices = server_process_factory(
        "sim.devices",
        ["--spec", str(building.spec_path)],
        ready=building.state_path.exists,
    )
    config = gateway_toml(tmp_path, building, broker.port)
    return Rig(tmp_path, broker, building, devices, config, server_process_factory)


@pytest.fixture
def listener(rig: Rig) -> Iterator[Listener]:
    lst = Listener(rig.broker.port)
    lst.start()
    try:
        yield lst
    finally:
        lst.stop()


def test_readings_reach_the_broker(rig: Rig, listener: Listener) -> None:
    rig.agent()
    wait_until(lambda: 650.0 in listener.values(ZONE, "co2_ppm"), 20, message="CO2 reading")
    wait_until(lambda: 100.0 in listener.values(OTHER_ZONE, "people_in"), 20, message="counter")
    first = next(t for t in listener.telemetry if t.rows)
    good = [r for r in first.rows if r.quality == 0]
    assert {(r.zone, r.point.value) for r in good} >= {(ZONE, "co2_ppm"), (ZONE, "t_zone_c")}
    assert all(not r.replayed for t in listener.telemetry for r in t.rows)
    # The birth message: retained, online.
    wait_until(lambda: any(s.state is GatewayState.ONLINE for s in listener.statuses), 10)
    # A reading that changes in the building changes on the wire.
    rig.building.set({"rs-e1": {"co2_ppm": 900}})
    wait_until(lambda: 900.0 in listener.values(ZONE, "co2_ppm"), 20, message="changed CO2")


def test_a_broker_outage_loses_no_reading(rig: Rig, listener: Listener) -> None:
    rig.agent()
    wait_until(lambda: len(listener.telemetry) >= 3, 20, message="telemetry before the outage")
    rig.broker.stop()
    time.sleep(2.0)  # ~8 cycles of 0.25 s while the broker is away
    rig.broker.start()
    before = len(listener.telemetry)
    wait_until(lambda: any(r.replayed for t in listener.telemetry for r in t.rows), 30,
               message="replayed telemetry")  # fmt: skip
    wait_until(lambda: len(listener.telemetry) >= before + 12, 30, message="catching up")
    seqs = [t.seq for t in listener.telemetry]
    assert len({t.boot_t for t in listener.telemetry}) == 1
    assert contiguous(seqs), f"a gap in the sequence: {sorted(set(seqs))}"
    # In order: the agent sends oldest first (duplicates of an unacknowledged message aside).
    unique = [s for i, s in enumerate(seqs) if s not in seqs[:i]]
    assert unique == sorted(unique)
    replayed = [t for t in listener.telemetry if len(t) and t.rows[0].replayed]
    assert len(replayed) >= 4, "the cycles during the outage come back flagged as replayed"


def test_a_killed_agent_keeps_its_buffer(rig: Rig, listener: Listener) -> None:
    agent = rig.agent()
    wait_until(lambda: len(listener.telemetry) >= 2, 20, message="telemetry before the outage")
    rig.broker.stop()
    time.sleep(1.5)
    agent.kill()  # SIGKILL during the outage: no chance to flush anything
    held = buffer_depth(rig.directory / "buffer.sqlite")
    assert held >= 3, "cycles during the outage were buffered on disk"
    first_boot = listener.telemetry[0].boot_t
    seen_before = {t.seq for t in listener.telemetry}
    rig.broker.start()
    rig.agent()
    wait_until(
        lambda: (
            len({t.seq for t in listener.telemetry if t.boot_t == first_boot} - seen_before) >= held
        ),
        30,
        message="the killed agent's buffer delivered by its successor",
    )
    boot1 = [t.seq for t in listener.telemetry if t.boot_t == first_boot]
    assert contiguous(boot1)
    assert any(t.boot_t != first_boot for t in listener.telemetry), "the new agent publishes"


def test_a_dead_device_does_not_delay_the_others(rig: Rig, listener: Listener) -> None:
    # A fourth device on the RTU line at an address nobody answers: every request to it waits
    # out its timeout, on the bus the live room sensors share.
    metrics_port = free_port()
    rig.rewrite(
        extra_devices='\n[[device]]\nname = "rs-dead"\nbus = "rs485"\ndevice_id = 99\n'
        'profile = "room-sensor"\nrequest = { timeout_s = 0.3, retries = 0 }\n',
        metrics_port=metrics_port,
    )
    rig.agent()
    wait_until(lambda: len(listener.telemetry) >= 16, 40, message="16 cycles")
    # Every cycle after the first few has the live sensors' readings, good.
    for t in listener.telemetry[4:16]:
        good = {(r.zone, r.point.value) for r in t.rows if r.quality == 0}
        assert (ZONE, "co2_ppm") in good, f"cycle {t.seq} lacks the live sensor"
    # The dead device is asked rarely: backoff, not a timeout every cycle.
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    dead = _metric(metrics, 'ilma_agent_modbus_requests_total{device="rs-dead"}')
    live = _metric(metrics, 'ilma_agent_modbus_requests_total{device="rs-e1"}')
    assert dead < live / 3


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no metric {name}")


def test_a_command_outside_limits_is_clamped_and_audited(rig: Rig, listener: Listener) -> None:
    rig.agent()
    wait_until(lambda: listener.telemetry, 20, message="agent running")
    ctl = Controller(rig.broker.port)
    try:
        ctl.heartbeat()
        cs = ctl.command(airflow_m3s=5.0, t_heat_c=40.0, t_cool_c=24.0, mode=Mode.OCCUPIED)
        audit = rig.directory / "audit.sqlite"
        wait_until(
            lambda: any(r["outcome"] == "clamped" and r["point"].endswith("airflow_setpoint_m3s")
                        for r in audit_rows(audit)),
            20, message="clamped airflow in the audit log",
        )  # fmt: skip
        wait_until(lambda: rig.building.state()["vav-e1"]["t_heat_setpoint_c"] == 25.0, 20)
        state = rig.building.state()["vav-e1"]
        assert state["airflow_setpoint_m3s"] == pytest.approx(2.0)  # the point's max
        assert state["t_heat_setpoint_c"] == 25.0  # max 25, not 40
        rows = [r for r in audit_rows(audit) if r["command_id"] == cs.command_id]
        heat = next(r for r in rows if r["point"].endswith("t_heat_setpoint_c"))
        assert heat["outcome"] == "clamped"
        assert heat["requested"] == 40.0
        assert heat["written"] == 25.0
        assert heat["read_back"] == 25.0
        assert heat["source"] == "controller"
        assert all(
            r["written"] is None or r["written"] <= 25.0 for r in rows if "heat" in r["point"]
        )
    finally:
        ctl.stop()


def test_an_expired_command_is_not_applied(rig: Rig, listener: Listener) -> None:
    rig.agent()
    wait_until(lambda: listener.telemetry, 20, message="agent running")
    ctl = Controller(rig.broker.port)
    try:
        ctl.heartbeat()
        # Issued 10 minutes ago with a 60 s lease: expired by the gateway's clock.
        stale = ctl.command(airflow_m3s=1.5, t_heat_c=22.0, issued=time.time() - 600)
        audit = rig.directory / "audit.sqlite"
        wait_until(lambda: any(r["command_id"] == stale.command_id for r in audit_rows(audit)), 20)
        rows = [r for r in audit_rows(audit) if r["command_id"] == stale.command_id]
        assert {r["outcome"] for r in rows} == {"expired"}
        assert all(r["written"] is None for r in rows)
        # A fresh command afterwards is applied: the stale one did nothing to the points.
        assert rig.building.state()["vav-e1"]["airflow_setpoint_m3s"] == pytest.approx(0.1)
        fresh = ctl.command(airflow_m3s=0.4)
        wait_until(
            lambda: rig.building.state()["vav-e1"]["airflow_setpoint_m3s"] == pytest.approx(0.4), 20
        )
        assert any(
            r["command_id"] == fresh.command_id and r["outcome"] == "applied"
            for r in audit_rows(audit)
        )
    finally:
        ctl.stop()


def test_fallback_engages_when_the_controller_stops_and_hands_back(
    rig: Rig, listener: Listener
) -> None:
    rig.rewrite(fallback_after_s=2.0)
    rig.agent()
    wait_until(lambda: listener.telemetry, 20, message="agent running")
    ctl = Controller(rig.broker.port)
    try:
        ctl.heartbeat()
        ctl.command(airflow_m3s=0.5, t_heat_c=21.0, t_cool_c=24.0)
        ctl.command(OTHER_ZONE, airflow_m3s=0.6, t_heat_c=20.0, t_cool_c=26.0)
        last_heard = time.monotonic()  # the agent heard the controller no later than this
        wait_until(
            lambda: rig.building.state()["vav-m1"]["airflow_setpoint_m3s"] == pytest.approx(0.6), 20
        )
        # The controller falls silent (it stops; its heartbeat is not renewed).
        wait_until(lambda: any(s.state is GatewayState.DEGRADED for s in listener.statuses), 20,
                   message="degraded status")  # fmt: skip
        assert time.monotonic() - last_heard >= 1.5, "not before the configured silence"
        degraded = next(s for s in listener.statuses if s.state is GatewayState.DEGRADED)
        assert set(degraded.fallback_zones) == {ZONE, OTHER_ZONE}
        audit = rig.directory / "audit.sqlite"
        # The relinquish zone goes back to the BMS defaults; the local zone runs ilma's core.
        wait_until(
            lambda: rig.building.state()["vav-m1"]["airflow_setpoint_m3s"] == pytest.approx(0.1), 20
        )
        wait_until(
            lambda: any(r["source"] == "fallback" and r["zone"] == ZONE for r in audit_rows(audit)),
            20,
        )
        assert any(
            r["outcome"] == "relinquished" or r["source"] == "relinquish" for r in audit_rows(audit)
        )
        # The controller returns: each zone is handed back when it is commanded; the other one
        # stays on its fallback meanwhile, and the status says so.
        ctl.heartbeat()
        back = ctl.command(airflow_m3s=0.45, t_heat_c=21.5, t_cool_c=24.5)
        wait_until(
            lambda: listener.statuses[-1].fallback_zones == (OTHER_ZONE,),
            20,
            message="one zone handed back",
        )
        assert listener.statuses[-1].state is GatewayState.DEGRADED
        ctl.command(OTHER_ZONE, airflow_m3s=0.5, t_heat_c=20.0, t_cool_c=26.0)
        wait_until(
            lambda: listener.statuses[-1].state is GatewayState.ONLINE, 20, message="online again"
        )
        assert listener.statuses[-1].fallback_zones == ()
        wait_until(
            lambda: rig.building.state()["vav-e1"]["airflow_setpoint_m3s"] == pytest.approx(0.45),
            20,
        )
        assert any(r["command_id"] == back.command_id for r in audit_rows(audit))
    finally:
        ctl.stop()


def test_sigterm_stops_the_agent_cleanly(rig: Rig, listener: Listener) -> None:
    agent = rig.agent()
    wait_until(lambda: listener.telemetry, 20, message="agent running")
    os.kill(agent.pid, signal.SIGTERM)
    wait_until(lambda: not agent.is_running, 10, message="agent exits")
    assert agent.returncode == 0
    wait_until(lambda: listener.statuses[-1].state is GatewayState.OFFLINE, 10)
