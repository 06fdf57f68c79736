"""A building for the edge agent under test: virtual Modbus devices, a gateway file, MQTT."""

from __future__ import annotations

import json
import queue
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from controller.wire import (
    CommandSet,
    ControllerState,
    ControllerStatus,
    GatewayStatus,
    Mode,
    Telemetry,
    ZoneCommand,
    command_topic,
    controller_status_topic,
    decode_gateway_status,
    decode_telemetry,
    encode,
    gateway_status_topic,
    telemetry_topic,
)
from tests.servers import REPO_ROOT, wait_until

SITE = "helsinki-office"
GATEWAY = "gw-test"
ZONE = "office-e1"
OTHER_ZONE = "meeting-medium-1"


def fast_profiles(directory: Path) -> Path:
    """The shipped profiles, with the VAV's rate limits raised so tests see targets reached."""
    directory.mkdir(parents=True, exist_ok=True)
    for src in (REPO_ROOT / "config" / "devices").glob("*.toml"):
        text = src.read_text(encoding="utf-8")
        if src.name == "vav-ahu.toml":
            text = text.replace("max_rate_per_s = 0.02", "max_rate_per_s = 50.0")
        (directory / src.name).write_text(text, encoding="utf-8")
    return directory


@dataclass
class Building:
    """Virtual devices behind Modbus TCP (VAVs) and RTU (room sensors, counter)."""

    directory: Path
    tcp_port: int
    rtu_server_end: str
    rtu_client_end: str
    dead_on_rtu: bool = False

    @property
    def spec_path(self) -> Path:
        return self.directory / "devices.json"

    @property
    def control(self) -> Path:
        return self.directory / "control.json"

    @property
    def state_path(self) -> Path:
        return self.directory / "state.json"

    def write_spec(self) -> None:
        spec = {
            "buses": [
                {
                    "kind": "tcp",
                    "port": self.tcp_port,
                    "devices": [
                        {"name": "vav-e1", "id": 1, "profile": "vav-ahu"},
                        {"name": "vav-m1", "id": 2, "profile": "vav-ahu"},
                    ],
                },
                {
                    "kind": "rtu",
                    "device": self.rtu_server_end,
                    "baudrate": 19200,
                    "devices": [
                        {"name": "rs-e1", "id": 11, "profile": "room-sensor",
                         "values": {"co2_ppm": 650, "t_zone_c": 21.5, "rh_pct": 35}},
                        {"name": "rs-m1", "id": 12, "profile": "room-sensor",
                         "values": {"co2_ppm": 480, "t_zone_c": 21.0, "rh_pct": 30}},
                        {"name": "pc-m1", "id": 21, "profile": "people-counter",
                         "values": {"people_in": 100, "people_out": 100}},
                    ],
                },
            ],
            "control": str(self.control),
            "state": str(self.state_path),
        }  # fmt: skip
        self.spec_path.write_text(json.dumps(spec), encoding="utf-8")

    def set(self, values: dict[str, dict[str, float]], silent: tuple[str, ...] = ()) -> None:
        doc = {"values": values, "silent": list(silent)}
        tmp = self.control.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc), encoding="utf-8")
        tmp.replace(self.control)

    def state(self) -> dict[str, dict[str, float]]:
        try:
            doc: dict[str, dict[str, float]] = json.loads(self.state_path.read_text("utf-8"))
        except (OSError, ValueError):
            return {}
        return doc


def gateway_toml(
    directory: Path,
    building: Building,
    broker_port: int,
    *,
    cycle_s: float = 0.25,
    fallback_after_s: float = 300.0,
    extra_devices: str = "",
    metrics_port: int | None = None,
) -> Path:
    """A gateway file for the building, in `directory`."""
    profiles = fast_profiles(directory / "profiles")
    metrics = f"[metrics]\nport = {metrics_port}\n" if metrics_port else ""
    text = f"""
[gateway]
name = "{GATEWAY}"
site = "{REPO_ROOT / "config" / "sites" / "helsinki-office.toml"}"
profiles = "{profiles}"
cycle_s = {cycle_s}

[broker]
host = "127.0.0.1"
port = {broker_port}
reconnect_min_s = 0.1
reconnect_max_s = 0.5
keepalive_s = 5

[[bus]]
name = "bms"
kind = "tcp"
host = "127.0.0.1"
port = {building.tcp_port}

[[bus]]
name = "rs485"
kind = "rtu"
device = "{building.rtu_client_end}"
baudrate = 19200

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

[[device]]
name = "rs-e1"
bus = "rs485"
device_id = 11
profile = "room-sensor"
request = {{ timeout_s = 0.3, retries = 0 }}

[[device]]
name = "rs-m1"
bus = "rs485"
device_id = 12
profile = "room-sensor"
request = {{ timeout_s = 0.3, retries = 0 }}

[[device]]
name = "pc-m1"
bus = "rs485"
device_id = 21
profile = "people-counter"
request = {{ timeout_s = 0.3, retries = 0 }}
{extra_devices}
[[zone]]
name = "{ZONE}"
fallback = "local"
read = {{ co2_ppm = "rs-e1/co2_ppm", t_zone_c = "rs-e1/t_zone_c", rh_pct = "rs-e1/rh_pct" }}
write = {{ airflow_m3s = "vav-e1/airflow_setpoint_m3s", t_heat_c = "vav-e1/t_heat_setpoint_c", t_cool_c = "vav-e1/t_cool_setpoint_c", mode = "vav-e1/occupancy_mode" }}

[[zone]]
name = "{OTHER_ZONE}"
fallback = "relinquish"
read = {{ co2_ppm = "rs-m1/co2_ppm", t_zone_c = "rs-m1/t_zone_c", people_in = "pc-m1/people_in", people_out = "pc-m1/people_out" }}
write = {{ airflow_m3s = "vav-m1/airflow_setpoint_m3s", t_heat_c = "vav-m1/t_heat_setpoint_c", t_cool_c = "vav-m1/t_cool_setpoint_c" }}

[fallback]
after_s = {fallback_after_s}

[buffer]
path = "{directory / "buffer.sqlite"}"
max_messages = 100000
replay_per_s = 200

[audit]
path = "{directory / "audit.sqlite"}"

{metrics}
[log]
level = "DEBUG"
"""  # noqa: E501
    path = directory / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class Listener:
    """A persistent MQTT session that records what the agent says (survives broker restarts
    with a persistent broker: clean_session false, QoS 1)."""

    port: int
    client_id: str = "test-listener"
    telemetry: list[Telemetry] = field(default_factory=list)
    statuses: list[GatewayStatus] = field(default_factory=list)
    raw: queue.Queue[tuple[str, bytes]] = field(default_factory=queue.Queue)

    _client: mqtt.Client | None = None

    def start(self) -> None:
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False,
            protocol=mqtt.MQTTv311,
        )  # fmt: skip
        c.on_message = self._on_message
        c.on_connect = self._on_connect
        c.reconnect_delay_set(1, 1)
        c.connect("127.0.0.1", self.port, keepalive=5)
        c.loop_start()
        self._client = c
        wait_until(c.is_connected, 10, message="listener connected")

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe(
            [(telemetry_topic(SITE, GATEWAY), 1), (gateway_status_topic(SITE, GATEWAY), 1)]
        )

    def _on_message(self, _c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        payload = bytes(m.payload)
        self.raw.put((m.topic, payload))
        if m.topic.endswith("/telemetry"):
            self.telemetry.append(decode_telemetry(payload))
        else:
            self.statuses.append(decode_gateway_status(payload))

    def stop(self) -> None:
        if self._client is not None:
            self._client.loop_stop()
            self._client.disconnect()
            self._client = None

    def values(self, zone: str, point: str) -> list[float | None]:
        return [
            r.value for t in self.telemetry for r in t.rows if r.zone == zone and r.point == point
        ]


class Controller:
    """A stand-in for the central controller: heartbeats and commands, published by paho."""

    def __init__(self, port: int) -> None:
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="test-controller", protocol=mqtt.MQTTv5
        )
        c.connect("127.0.0.1", port)
        c.loop_start()
        wait_until(c.is_connected, 10, message="controller connected")
        self.client = c
        self.seq = 0

    def heartbeat(self, online: bool = True) -> None:
        status = ControllerStatus(
            controller="ctl-test",
            state=ControllerState.ONLINE if online else ControllerState.OFFLINE,
            t=time.time(),
            period_s=1.0,
        )
        self.client.publish(
            controller_status_topic(SITE), encode(status), qos=1, retain=True
        ).wait_for_publish(5)

    def command(
        self,
        zone: str = ZONE,
        *,
        airflow_m3s: float = 0.3,
        t_heat_c: float = 21.0,
        t_cool_c: float = 24.0,
        mode: Mode = Mode.OCCUPIED,
        lease_s: float = 60.0,
        issued: float | None = None,
    ) -> CommandSet:
        self.seq += 1
        t = time.time() if issued is None else issued
        cs = CommandSet(
            controller="ctl-test", seq=self.seq, t=t, lease_s=lease_s, valid_until=t + lease_s,
            commands=(ZoneCommand(zone=zone, mode=mode, airflow_m3s=airflow_m3s, t_heat_c=t_heat_c,
                                  t_cool_c=t_cool_c, reason="test"),),
        )  # fmt: skip
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.MessageExpiryInterval = max(1, int(lease_s))
        self.client.publish(
            command_topic(SITE, GATEWAY), encode(cs), qos=1, properties=props
        ).wait_for_publish(5)
        return cs

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def audit_rows(path: Path) -> list[dict[str, Any]]:
    """The audit log's records, read straight from its SQLite file (as an operator would)."""
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("select * from records order by id")]
    finally:
        db.close()


def buffer_depth(path: Path) -> int:
    """Messages in an agent's disk buffer (the agent must not be running: it locks the file)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        (n,) = db.execute("select count(*) from messages").fetchone()
        return int(n)
    finally:
        db.close()


def contiguous(seqs: list[int]) -> bool:
    unique = sorted(set(seqs))
    return unique == list(range(unique[0], unique[-1] + 1)) if unique else True
