"""The edge agent as a process, continued: MQTT sensors, reloads, bad commands, its metrics.

Same rig as test_edge_agent.py: mosquitto, virtual Modbus devices over TCP and RTU (socat), the
agent as `python -m edge_agent.daemon`; the tests play the building, the controller, the
sensors on the broker and the operator (SIGHUP, a scrape of the metrics endpoint).
"""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from controller.wire import GatewayState, command_topic
from tests.fixtures_servers import MosquittoFactory, ServerProcessFactory
from tests.integration.agent_harness import (
    GATEWAY,
    OTHER_ZONE,
    SITE,
    ZONE,
    Building,
    Controller,
    Listener,
    audit_rows,
    contiguous,
    gateway_toml,
)
from tests.servers import Mosquitto, PtyPair, ServerProcess, free_port, wait_until

pytestmark = pytest.mark.xdist_group("edge-agent-more")

COUNTER_TOPIC = "sensors/door-e1/counts"
# A door counter on the broker for the zone whose room sensor has no counter.
MQTT_COUNTER = f"""
[[mqtt_sensor]]
topic = "{COUNTER_TOPIC}"
zone = "{ZONE}"
fields = {{ people_in = "in", people_out = "out" }}
"""
# One more zone of the site, read from the sensor in office-e1's room (a reload adds it).
EXTRA_ZONE = """
[[zone]]
name = "office-e2"
fallback = "relinquish"
read = { co2_ppm = "rs-e1/co2_ppm" }
"""


@dataclass
class Rig:
    directory: Path
    broker: Mosquitto
    building: Building
    devices: ServerProcess
    config: Path
    start_agent: ServerProcessFactory
    metrics_port: int

    def agent(self) -> ServerProcess:
        return self.start_agent("edge_agent.daemon", ["--config", str(self.config)])

    def rewrite(
        self,
        extra: str = "",
        *,
        cycle_s: float = 0.25,
        extra_devices: str = "",
        fallback_after_s: float = 300.0,
    ) -> None:
        """The harness' gateway file, with `extra` TOML tables appended (after [log], where a
        new [[table]] header starts at the top level)."""
        path = gateway_toml(
            self.directory,
            self.building,
            self.broker.port,
            cycle_s=cycle_s,
            fallback_after_s=fallback_after_s,
            extra_devices=extra_devices,
            metrics_port=self.metrics_port,
        )
        if extra:
            path.write_text(path.read_text("utf-8") + extra, encoding="utf-8")
        self.config = path

    def metrics(self) -> dict[str, Metric]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return {m.name: m for m in text_string_to_metric_families(text)}

    def rejected(self, kind: str) -> float | None:
        """ilma_agent_rejected_payloads_total{kind=...}; None before the first of its kind."""
        return self.sample(
            "ilma_agent_rejected_payloads", "ilma_agent_rejected_payloads_total", kind=kind
        )

    def sample(self, family: str, sample: str, **labels: str) -> float | None:
        for s in self.metrics()[family].samples:
            if s.name == sample and s.labels == labels:
                return float(s.value)
        return None


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
    r = Rig(
        tmp_path,
        broker,
        building,
        devices,
        tmp_path / "gateway.toml",
        server_process_factory,
        free_port(),
    )
    r.rewrite()
    return r


@pytest.fixture
def listener(rig: Rig) -> Iterator[Listener]:
    lst = Listener(rig.broker.port)
    lst.start()
    try:
        yield lst
    finally:
        lst.stop()


class Publisher:
    """A sensor (or a broken controller) on the broker."""

    def __init__(self, port: int) -> None:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-sensor")
        c.connect("127.0.0.1", port)
        c.loop_start()
        wait_until(c.is_connected, 10, message="publisher connected")
        self.client = c

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def publisher(rig: Rig) -> Iterator[Publisher]:
    p = Publisher(rig.broker.port)
    try:
        yield p
    finally:
        p.stop()


def _online(listener: Listener) -> bool:
    """The agent has said it is online: it has subscribed to its topics before saying so."""
    return any(s.state is GatewayState.ONLINE for s in listener.statuses)


def _good(listener: Listener, zone: str, point: str) -> list[float | None]:
    return [
        r.value
        for t in listener.telemetry
        for r in t.rows
        if r.zone == zone and r.point == point and r.quality == 0
    ]


def _log_lines(agent: ServerProcess, text: str) -> list[str]:
    return [line for line in agent.stderr_text().splitlines() if text in line]


# --- (a) an MQTT people counter ---------------------------------------------------------------


def test_an_mqtt_people_counter_reaches_telemetry_and_bad_payloads_are_counted(
    rig: Rig, listener: Listener, publisher: Publisher
) -> None:
    rig.rewrite(MQTT_COUNTER)
    agent = rig.agent()
    wait_until(lambda: _online(listener), 20, message="agent online")
    publisher.publish(COUNTER_TOPIC, b'{"in": 12, "out": 9}')
    wait_until(lambda: 12.0 in _good(listener, ZONE, "people_in"), 20, message="people_in")
    assert 9.0 in _good(listener, ZONE, "people_out")
    # The counter's rows belong to its zone only; the Modbus counter of the other zone is there.
    assert 12.0 not in listener.values(OTHER_ZONE, "people_in")
    wait_until(lambda: 100.0 in listener.values(OTHER_ZONE, "people_in"), 20)

    # Malformed payloads: counted, logged once, dropped; the agent keeps publishing.
    publisher.publish(COUNTER_TOPIC, b"{")
    publisher.publish(COUNTER_TOPIC, b'{"in": "x"}')
    wait_until(lambda: rig.rejected("sensor") == 2.0, 20, message="two rejected payloads")
    warnings = _log_lines(agent, "WARNING edge_agent.agent: dropped a malformed sensor")
    assert len(warnings) == 1, warnings
    assert COUNTER_TOPIC in warnings[0]
    seen = len(listener.telemetry)
    wait_until(lambda: len(listener.telemetry) >= seen + 4, 20, message="publishing goes on")
    # The bad messages changed nothing; a good one afterwards is taken.
    assert _good(listener, ZONE, "people_in") == [12.0]
    publisher.publish(COUNTER_TOPIC, b'{"in": 15, "out": 9}')
    wait_until(lambda: 15.0 in _good(listener, ZONE, "people_in"), 20, message="next count")
    assert agent.is_running
    # Never flagged as the rejected payloads of another kind.
    assert rig.rejected("commands") is None


# A device behind a TCP port that takes connections and never answers (nobody accepts them:
# the kernel completes the handshake): the agent's first poll of it waits out its 2 s timeout,
# and so does the first cycle's telemetry.
SILENT_DEVICE = """
[[bus]]
name = "silent"
kind = "tcp"
host = "127.0.0.1"
port = {port}

[[device]]
name = "vav-silent"
bus = "silent"
device_id = 9
profile = "vav-ahu"
request = {{ timeout_s = 2.0, retries = 0 }}
"""


def test_a_retained_sensor_message_with_a_negative_timestamp_does_not_stop_the_agent(
    rig: Rig, listener: Listener, publisher: Publisher
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        rig.rewrite(
            MQTT_COUNTER + 'time_field = "ts"\n', extra_devices=SILENT_DEVICE.format(port=port)
        )
        # Retained: the broker hands it to the agent as it subscribes, during its first cycle.
        publisher.client.publish(
            COUNTER_TOPIC, b'{"in": 12, "out": 9, "ts": -1}', qos=1, retain=True
        ).wait_for_publish(5)
        agent = rig.agent()
        wait_until(
            lambda: len(listener.telemetry) >= 4 or not agent.is_running,
            20,
            message="four cycles published, or the agent gone",
        )
    assert agent.is_running, agent.stderr_text()[-3000:]


# --- (b) SIGHUP ------------------------------------------------------------------------------


def test_a_reload_with_a_broken_file_keeps_the_running_configuration(
    rig: Rig, listener: Listener
) -> None:
    agent = rig.agent()
    wait_until(lambda: len(listener.telemetry) >= 2, 20, message="agent running")
    boot = listener.telemetry[0].boot_t
    # An operator's typo: a zone the site does not have, and a read-only setpoint.
    text = rig.config.read_text("utf-8")
    rig.config.write_text(
        text.replace(f'name = "{OTHER_ZONE}"', 'name = "attic"').replace(
            "vav-m1/t_cool_setpoint_c", "vav-m1/t_supply_c"
        ),
        encoding="utf-8",
    )
    os.kill(agent.pid, signal.SIGHUP)
    wait_until(lambda: _log_lines(agent, "reload refused"), 20, message="reload refused")
    (refused,) = _log_lines(agent, "reload refused")
    assert "ERROR" in refused
    log = agent.stderr_text()
    assert "zone[1].name" in log
    assert "zone[1].write.t_cool_c" in log
    # The agent runs on, on the old configuration: the same boot, the same zones.
    seen = len(listener.telemetry)
    wait_until(lambda: len(listener.telemetry) >= seen + 4, 20, message="still publishing")
    assert agent.is_running
    assert {t.boot_t for t in listener.telemetry} == {boot}
    assert any(r.zone == OTHER_ZONE for t in listener.telemetry[seen:] for r in t.rows)
    assert not _log_lines(agent, "configuration reloaded")


def test_a_reload_applies_a_changed_file_without_losing_the_buffer(
    rig: Rig, listener: Listener
) -> None:
    agent = rig.agent()
    wait_until(lambda: len(listener.telemetry) >= 3, 20, message="agent running")
    first_boot = listener.telemetry[0].boot_t
    # The broker goes away: the cycles pile up in the disk buffer.
    rig.broker.stop()
    time.sleep(1.5)  # ~6 cycles of 0.25 s
    # Meanwhile the operator adds a zone and a slower cycle, and reloads.
    rig.rewrite(EXTRA_ZONE, cycle_s=0.3)
    os.kill(agent.pid, signal.SIGHUP)
    wait_until(lambda: _log_lines(agent, "configuration reloaded"), 20, message="reloaded")
    time.sleep(0.5)  # the new agent buffers a cycle or two as well
    rig.broker.start()
    # The new configuration is live: the added zone is read and published.
    wait_until(
        lambda: any(r.zone == "office-e2" for t in listener.telemetry for r in t.rows),
        30,
        message="the added zone in telemetry",
    )
    assert agent.is_running
    boots = sorted({t.boot_t for t in listener.telemetry})
    assert boots[0] == first_boot
    assert len(boots) == 2, "one agent before the reload, one after"
    # Oldest first: by the time the new agent's telemetry arrives, everything the old agent
    # buffered during the outage has been delivered, none of it lost.
    old = [t for t in listener.telemetry if t.boot_t == first_boot]
    seqs = [t.seq for t in old]
    assert min(seqs) == 0
    assert contiguous(seqs), f"a gap in the old agent's sequence: {sorted(set(seqs))}"
    replayed = [t for t in old if len(t) and all(r.replayed for r in t.rows)]
    assert len(replayed) >= 3, "the cycles of the outage came out of the buffer, as replays"
    assert all(r.zone != "office-e2" for t in old for r in t.rows)


# --- (c) a malformed command -----------------------------------------------------------------


def test_a_malformed_command_is_counted_and_dropped_and_a_good_one_applied(
    rig: Rig, listener: Listener, publisher: Publisher
) -> None:
    agent = rig.agent()
    wait_until(lambda: _online(listener), 20, message="agent online")
    ctl = Controller(rig.broker.port)
    try:
        ctl.heartbeat()
        topic = command_topic(SITE, GATEWAY)
        publisher.publish(topic, b"not json")
        publisher.publish(topic, b'{"v": 1, "controller": "ctl-test", "seq": 1}')
        wait_until(lambda: rig.rejected("commands") == 2.0, 20, message="two rejected commands")
        warnings = _log_lines(agent, "WARNING edge_agent.agent: dropped a malformed commands")
        assert len(warnings) == 1, warnings
        audit = rig.directory / "audit.sqlite"
        assert audit_rows(audit) == []  # nothing was attempted
        assert rig.building.state()["vav-e1"]["airflow_setpoint_m3s"] == pytest.approx(0.1)
        good = ctl.command(airflow_m3s=0.4, t_heat_c=21.5, t_cool_c=24.5)
        wait_until(
            lambda: rig.building.state()["vav-e1"]["airflow_setpoint_m3s"] == pytest.approx(0.4),
            20,
            message="the good command applied",
        )
        wait_until(
            lambda: any(
                r["command_id"] == good.command_id and r["outcome"] == "applied"
                for r in audit_rows(audit)
            ),
            20,
        )
        assert agent.is_running
    finally:
        ctl.stop()


# --- (d) the Prometheus endpoint -------------------------------------------------------------

DEVICES = ("vav-e1", "vav-m1", "rs-e1", "rs-m1", "pc-m1")


def test_the_metrics_endpoint_serves_the_documented_metrics(rig: Rig, listener: Listener) -> None:
    # No controller: after a second both zones go to their fallback and the agent writes.
    rig.rewrite(fallback_after_s=1.0)
    agent = rig.agent()
    wait_until(lambda: len(listener.telemetry) >= 4, 20, message="agent running")
    wait_until(
        lambda: rig.sample("ilma_agent_fallback_zones", "ilma_agent_fallback_zones") == 2,
        20,
        message="both zones on their fallback",
    )
    wait_until(
        lambda: rig.sample("ilma_agent_writes", "ilma_agent_writes_total", outcome="applied"),
        20,
        message="a write",
    )
    m = rig.metrics()
    # README: poll latency, requests and errors per device, device up, last good reading per
    # point, buffer depth and drops, published and replayed messages, write decisions by
    # outcome, rejected payloads, readings beyond the wire, zones on fallback; and the
    # connection and the cycle time.
    documented = {
        "ilma_agent_poll_latency_seconds": "histogram",
        "ilma_agent_modbus_requests": "counter",
        "ilma_agent_modbus_errors": "counter",
        "ilma_agent_device_up": "gauge",
        "ilma_agent_point_last_seen_timestamp_seconds": "gauge",
        "ilma_agent_buffer_messages": "gauge",
        "ilma_agent_buffer_dropped": "gauge",
        "ilma_agent_published_messages": "counter",
        "ilma_agent_replayed_messages": "counter",
        "ilma_agent_writes": "counter",
        "ilma_agent_rejected_payloads": "counter",
        "ilma_agent_readings_beyond_wire": "counter",
        "ilma_agent_fallback_zones": "gauge",
        "ilma_agent_broker_connected": "gauge",
        "ilma_agent_cycle_seconds": "histogram",
    }
    assert {name: m[name].type for name in documented if name in m} == documented

    def value(family: str, sample: str, **labels: str) -> float:
        v = rig.sample(family, sample, **labels)
        assert v is not None, (sample, labels)
        return v

    for device in DEVICES:
        assert value("ilma_agent_device_up", "ilma_agent_device_up", device=device) == 1.0
        assert (
            value("ilma_agent_modbus_requests", "ilma_agent_modbus_requests_total", device=device)
            >= 1
        )
        assert (
            value(
                "ilma_agent_poll_latency_seconds",
                "ilma_agent_poll_latency_seconds_count",
                device=device,
            )
            >= 1
        )
    for zone, point in ((ZONE, "co2_ppm"), (ZONE, "t_zone_c"), (OTHER_ZONE, "people_in")):
        seen = value(
            "ilma_agent_point_last_seen_timestamp_seconds",
            "ilma_agent_point_last_seen_timestamp_seconds",
            zone=zone,
            point=point,
        )
        # The time of a good reading (the agent's clock), no older than the first one sent.
        first = min(
            r.t
            for t in listener.telemetry
            for r in t.rows
            if r.zone == zone and r.point == point and r.quality == 0
        )
        assert seen >= first
    assert value("ilma_agent_published_messages", "ilma_agent_published_messages_total") >= 4
    assert value("ilma_agent_replayed_messages", "ilma_agent_replayed_messages_total") == 0
    assert value("ilma_agent_buffer_dropped", "ilma_agent_buffer_dropped") == 0
    assert value("ilma_agent_buffer_messages", "ilma_agent_buffer_messages") >= 0
    assert value("ilma_agent_broker_connected", "ilma_agent_broker_connected") == 1
    assert value("ilma_agent_writes", "ilma_agent_writes_total", outcome="applied") >= 1
    assert value("ilma_agent_cycle_seconds", "ilma_agent_cycle_seconds_count") >= 4
    assert agent.is_running
