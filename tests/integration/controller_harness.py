"""Simulated gateways and a command recorder around a controller under test (paho, mosquitto)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import tomli_w
from paho.mqtt.enums import CallbackAPIVersion

from controller.site import Site, load_site
from controller.wire import (
    CommandSet,
    Quantity,
    Reading,
    Telemetry,
    command_topic,
    decode_commands,
    encode,
    member_topic,
    telemetry_topic,
)
from sim.building import replicate
from tests.servers import REPO_ROOT, wait_until

OFFICE = REPO_ROOT / "config" / "sites" / "helsinki-office.toml"


def write_site(directory: Path, name: str, n_zones: int) -> tuple[Path, Site]:
    """A site of n_zones (copies of the Helsinki office's zones) named `name`, as a TOML file."""
    site = replicate(load_site(OFFICE), n_zones)
    doc = site.model_dump(mode="json", exclude_none=True)
    doc["site"]["name"] = name
    path = directory / f"{name}.toml"
    plain = _plain(doc)
    assert isinstance(plain, dict)
    path.write_text(tomli_w.dumps(plain), encoding="utf-8")
    return path, load_site(path)


def _plain(value: object) -> object:
    """JSON-dumped model → TOML-writable (TOML has no null)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def controller_toml(
    directory: Path,
    name: str,
    sites: list[Path],
    broker_port: int,
    *,
    period_s: float = 1.0,
    share_group: str | None = None,
    influx_url: str | None = None,
    metrics_port: int | None = None,
) -> Path:
    doc: dict[str, object] = {
        "controller": {
            "name": name,
            "sites": [str(p) for p in sites],
            "period_s": period_s,
            "lease_periods": 3.0,
            **({"share_group": share_group} if share_group else {}),
        },
        "broker": {
            "host": "127.0.0.1",
            "port": broker_port,
            "keepalive_s": 5,
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 0.5,
        },
        "historian": {
            "sqlite": {"path": str(directory / f"{name}-history.sqlite")},
            **({"influxdb": {"url": influx_url, "flush_interval_s": 0.2}} if influx_url else {}),
        },
        "log": {"level": "DEBUG"},
        **({"metrics": {"port": metrics_port}} if metrics_port else {}),
    }
    path = directory / f"{name}.toml"
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return path


@dataclass
class Gateways:
    """Gateways that publish telemetry for their zones, and hear their commands."""

    port: int
    site: str
    zones_by_gateway: dict[str, list[str]]
    commands: dict[str, list[tuple[float, CommandSet]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    counters: dict[str, tuple[float, float]] = field(default_factory=dict)  # zone → (in, out)
    co2: dict[str, float] = field(default_factory=dict)
    seq: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    boot_t: float = field(default_factory=time.time)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _client: mqtt.Client | None = None

    def start(self) -> None:
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"gws-{self.site}", protocol=mqtt.MQTTv5
        )
        c.max_inflight_messages_set(1000)
        c.on_message = self._on_message
        c.connect("127.0.0.1", self.port)
        c.loop_start()
        wait_until(c.is_connected, 10, message="gateways connected")
        for gw in self.zones_by_gateway:
            c.subscribe(command_topic(self.site, gw), qos=1)
        self._client = c

    def _on_message(self, _c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        gw = m.topic.split("/")[4]
        cs = decode_commands(bytes(m.payload))
        with self._lock:
            self.commands[gw].append((time.monotonic(), cs))

    def publish_all(self) -> None:
        """One telemetry message per gateway with every zone's CO2, temperature and counters."""
        assert self._client is not None
        now = time.time()
        infos = []
        for gw, zones in self.zones_by_gateway.items():
            readings = []
            for z in zones:
                cin, cout = self.counters.get(z, (100.0, 100.0))
                readings += [
                    Reading(zone=z, point=Quantity.CO2_PPM, t=now, value=self.co2.get(z, 450.0)),
                    Reading(zone=z, point=Quantity.T_ZONE_C, t=now, value=21.5),
                    Reading(zone=z, point=Quantity.PEOPLE_IN, t=now, value=cin),
                    Reading(zone=z, point=Quantity.PEOPLE_OUT, t=now, value=cout),
                ]
            msg = Telemetry.of(
                gateway=gw, boot_t=self.boot_t, seq=self.seq[gw], t=now, readings=tuple(readings)
            )
            self.seq[gw] += 1
            infos.append(self._client.publish(telemetry_topic(self.site, gw), encode(msg), qos=1))
        for info in infos:
            info.wait_for_publish(10)

    def publish_zone(self, gw: str, zone: str) -> None:
        """One zone's counters alone (what a gateway sends when only they changed)."""
        assert self._client is not None
        now = time.time()
        cin, cout = self.counters[zone]
        msg = Telemetry.of(
            gateway=gw, boot_t=self.boot_t, seq=self.seq[gw], t=now,
            readings=(Reading(zone=zone, point=Quantity.PEOPLE_IN, t=now, value=cin),
                      Reading(zone=zone, point=Quantity.PEOPLE_OUT, t=now, value=cout)),
        )  # fmt: skip
        self.seq[gw] += 1
        self._client.publish(telemetry_topic(self.site, gw), encode(msg), qos=1).wait_for_publish(
            10
        )

    def zones_commanded(self) -> set[str]:
        with self._lock:
            return {
                c.zone
                for entries in self.commands.values()
                for _, cs in entries
                for c in cs.commands
            }

    def latest(self, gw: str) -> list[tuple[float, CommandSet]]:
        with self._lock:
            return list(self.commands[gw])

    def stop(self) -> None:
        if self._client is not None:
            self._client.loop_stop()
            self._client.disconnect()
            self._client = None


class MemberWatch:
    """The retained member statuses of the controllers (availability, Last Will)."""

    def __init__(self, port: int, names: list[str]) -> None:
        self.last: dict[str, bytes] = {}
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="member-watch", protocol=mqtt.MQTTv5)
        c.on_message = lambda _c, _u, m: self.last.__setitem__(
            m.topic.split("/")[3], bytes(m.payload)
        )
        c.connect("127.0.0.1", port)
        c.loop_start()
        wait_until(c.is_connected, 10)
        for n in names:
            c.subscribe(member_topic(n), qos=1)
        self.client = c

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
