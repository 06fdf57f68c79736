"""Edge agent: Modbus requests per poll cycle, poll-cycle time, and the daemon's CPU and memory.

    python bench/edge_agent.py [--json] [--quick]

Every server is real and started here (temp dir, free ports on 127.0.0.1, stopped by PID):
virtual Modbus devices (`python -m sim.devices`, the shipped profiles in config/devices/),
socat pseudo-terminal pairs for RTU, mosquitto, and the agent daemon itself.

1. Requests per poll cycle for a gateway of about 200 points (room sensors, people counters,
   VAV setpoint sets, zone by zone as in the Helsinki office): the read planner's coalesced plan
   (`plan_reads` with each profile's quirks) against one request per point, then verified live:
   the requests a counting bus actually sent per cycle (and the plans the devices ended up
   with), and the agent's own `ilma_agent_modbus_requests_total` in part 3.
2. Poll-cycle time for those 200 points on one bus, over Modbus TCP and over RTU (socat pty
   pair; the virtual line takes the bytes' time at 19,200 and 9,600 baud): `ModbusDevice.poll()`
   on all devices of the bus at once, as the agent's `_poll` does; coalesced against the
   reference of one request per point (same quirks, same run); median and p95 over up to 20
   cycles (at least 5, fewer than 20 where a case would overrun its time budget).
3. The agent daemon polling about 500 points at 1 Hz on four TCP buses and publishing their
   readings to mosquitto (a site of 37 zones generated from the office, every zone mapped to its
   devices): CPU of one core from /proc/PID/stat (utime + stime), peak RSS (VmHWM), telemetry
   received by a paho subscriber, over 60 s (30 s with --quick) after a warm-up.
   Goals: peak RSS < 80 MB and CPU < 10 % of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pymodbus
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from bacnet_modbus.modbus import BusAddress, BusKind, ModbusBus, ModbusDevice  # noqa: E402
from bacnet_modbus.planner import ReadRequest, plan_reads  # noqa: E402
from controller.site import Site, load_site  # noqa: E402
from controller.standards import ZoneKind  # noqa: E402
from controller.wire import decode_telemetry, telemetry_topic  # noqa: E402
from sensors.profiles import (  # noqa: E402
    DeviceProfile,
    RegisterPoint,
    RequestQuirks,
    Table,
    load_profiles,
)
from sim.building import replicate  # noqa: E402
from tests.servers import (  # noqa: E402
    HOST,
    Mosquitto,
    PtyPair,
    ServerProcess,
    free_port,
    port_open,
    wait_until,
)

GOAL_RSS_MB = 80.0
GOAL_CPU_PCT = 10.0
POLL_ZONES = 15  # the office's first 15 zones: 39 devices, 201 points
AGENT_ZONES = 37  # two copies of the office and three zones more: 98 devices, 503 points
AGENT_TCP_BUSES = 4  # like one BMS gateway per floor; the device server is never the limit
RTU_BAUDS = (19_200, 9_600)
CYCLES = 20
SITE_FILE = ROOT / "config" / "sites" / "helsinki-office.toml"
PROFILES = ROOT / "config" / "devices"
GATEWAY = "bench-gw"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Plausible values for the virtual devices (their defaults would be range limits: -20 °C).
VALUES: dict[str, dict[str, float]] = {
    "room-sensor": {"co2_ppm": 620.0, "t_zone_c": 21.5, "rh_pct": 35.0},
    "people-counter": {"people_in": 120.0, "people_out": 112.0, "people_count": 8.0},
    "vav-ahu": {"airflow_m3s": 0.25, "t_supply_c": 18.0},
}
# The zone quantities each profile gives (every quantity a gateway file can map to a zone).
READS = {
    "room-sensor": ("co2_ppm", "t_zone_c", "rh_pct"),
    "people-counter": ("people_in", "people_out", "people_count"),
    "vav-ahu": ("airflow_m3s", "t_supply_c"),
}


# --- the gateway: devices zone by zone --------------------------------------------------------


@dataclass(frozen=True)
class DeviceSpec:
    """One device of the generated gateway, serving zone `zone`."""

    name: str
    profile: str
    zone: str


def gateway_devices(site: Site, n_zones: int) -> list[DeviceSpec]:
    """Per zone a room sensor and a VAV setpoint set; a people counter at the door of every
    zone but private offices (one or two people: the CO2 sensor tells enough)."""
    devices: list[DeviceSpec] = []
    for k, z in enumerate(site.zone[:n_zones]):
        devices.append(DeviceSpec(f"rs-{k}", "room-sensor", z.name))
        if z.kind is not ZoneKind.OFFICE:
            devices.append(DeviceSpec(f"pc-{k}", "people-counter", z.name))
        devices.append(DeviceSpec(f"vav-{k}", "vav-ahu", z.name))
    return devices


def per_point_plan(
    points: dict[str, RegisterPoint], quirks: RequestQuirks
) -> tuple[ReadRequest, ...]:
    """The reference: one read request per point, by table and address."""
    tables = list(Table)
    order = sorted(points.items(), key=lambda kv: (tables.index(kv[1].table), kv[1].address))
    return tuple(r for name, p in order for r in plan_reads({name: p}, quirks))


class PerPointDevice(ModbusDevice):
    """A device read without coalescing: one request per point (same quirks and pauses)."""

    def __post_init__(self) -> None:
        self._plan = per_point_plan(self.profile.points, self.quirks)


class CountingBus(ModbusBus):
    """A bus that counts the read requests it actually sends (refused ones included)."""

    def __init__(self, name: str, address: BusAddress, timeout_s: float = 1.0) -> None:
        super().__init__(name, address, timeout_s)
        self.sent = 0

    async def read(self, table: Table, address: int, count: int, device_id: int) -> list[int]:
        self.sent += 1
        return await super().read(table, address, count, device_id)


def plan_counts(
    devices: Sequence[DeviceSpec], profiles: dict[str, DeviceProfile]
) -> dict[str, Any]:
    """Points and planned requests per cycle, per profile and in total."""
    by_profile: dict[str, dict[str, int]] = {}
    for d in devices:
        p = profiles[d.profile]
        row = by_profile.setdefault(d.profile, {"devices": 0, "points": 0, "coalesced": 0})
        row["devices"] += 1
        row["points"] += len(p.points)
        row["coalesced"] += len(plan_reads(p.points, p.request))
    points = sum(r["points"] for r in by_profile.values())
    coalesced = sum(r["coalesced"] for r in by_profile.values())
    return {
        "devices": len(devices),
        "points": points,
        "per_point_requests": points,
        "coalesced_requests": coalesced,
        "ratio": points / coalesced,
        "by_profile": by_profile,
    }


# --- part 2: poll cycles ------------------------------------------------------------------------


def make_devices(
    specs: Sequence[DeviceSpec],
    profiles: dict[str, DeviceProfile],
    bus: ModbusBus,
    per_point: bool,
) -> list[ModbusDevice]:
    cls = PerPointDevice if per_point else ModbusDevice
    return [
        cls(d.name, bus, i + 1, profiles[d.profile], profiles[d.profile].request)
        for i, d in enumerate(specs)
    ]


@dataclass
class CycleRun:
    """Cycles of one mode on one bus."""

    walls_s: list[float] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)  # requests on the wire, per cycle
    counted: list[int] = field(default_factory=list)  # PollResult.requests (the agent's metric)
    first_sent: int = 0  # the first cycle: connect, and devices that refuse reads across gaps

    def summary(self) -> dict[str, Any]:
        walls = np.array(self.walls_s) * 1e3
        return {
            "cycles": len(self.walls_s),
            "median_ms": float(np.median(walls)),
            "p95_ms": float(np.percentile(walls, 95)),
            "min_ms": float(walls.min()),
            "requests_per_cycle": float(np.mean(self.sent)),
            "counted_per_cycle": float(np.mean(self.counted)),
            "first_cycle_requests": self.first_sent,
        }


async def one_cycle(devices: Sequence[ModbusDevice], bus: CountingBus) -> tuple[float, int, int]:
    """All devices of the bus polled at once, as the agent's `_poll` does: wall time, requests
    sent, requests the polls counted. Raises if any point went unread."""
    before = bus.sent
    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(d.poll(), name=f"poll-{d.name}") for d in devices]
    wall = time.perf_counter() - t0
    results = [t.result() for t in tasks]
    missing = sum(1 for r in results for v in r.values.values() if math.isnan(v))
    if missing or any(r.skipped for r in results):
        errors = sum(r.errors for r in results)
        raise RuntimeError(f"bus {bus.name}: {errors} failed requests, {missing} points unread")
    return wall, bus.sent - before, sum(r.requests for r in results)


async def run_cycles(
    devices: Sequence[ModbusDevice], bus: CountingBus, cycles: int, budget_s: float
) -> CycleRun:
    """One cycle to settle (connect, split refused reads), then up to `cycles` within about
    `budget_s` (at least 5)."""
    run = CycleRun()
    _, run.first_sent, _ = await one_cycle(devices, bus)
    n = cycles
    while len(run.walls_s) < n:
        wall, sent, counted = await one_cycle(devices, bus)
        run.walls_s.append(wall)
        run.sent.append(sent)
        run.counted.append(counted)
        if len(run.walls_s) == 1:
            n = max(5, min(cycles, int(budget_s / wall)))
    return run


async def wait_answering(bus: ModbusBus, device_id: int, timeout_s: float = 15.0) -> None:
    """Until the virtual device answers (a serial server opens its pty some time after start)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            async with bus.lock:
                await bus.read(Table.INPUT, 0, 1, device_id)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
        else:
            return


async def measure_buses(
    buses: Sequence[tuple[str, BusAddress]],
    specs: Sequence[DeviceSpec],
    profiles: dict[str, DeviceProfile],
    cycles: int,
    budget_s: float,
) -> list[dict[str, Any]]:
    timeout_s = max(profiles[d.profile].request.timeout_s for d in specs)
    rows = []
    for label, address in buses:
        bus = CountingBus(label, address, timeout_s)
        modes: dict[str, dict[str, Any]] = {}
        live_plan: dict[str, int] = {}
        try:
            await wait_answering(bus, 1)
            for mode, per_point in (("coalesced", False), ("per_point", True)):
                devices = make_devices(specs, profiles, bus, per_point)
                modes[mode] = (await run_cycles(devices, bus, cycles, budget_s)).summary()
                if not per_point:
                    for d in devices:  # the plans after the devices had their say
                        live_plan[d.profile.name] = live_plan.get(d.profile.name, 0) + len(d.plan)
        finally:
            bus.close()
        rows.append(
            {
                "bus": label,
                "baudrate": address.baudrate if address.kind is BusKind.RTU else None,
                **modes,
                "speedup": modes["per_point"]["median_ms"] / modes["coalesced"]["median_ms"],
                "live_plan_by_profile": live_plan,
            }
        )
    return rows


def bus_json(kind: str, specs: Sequence[DeviceSpec], prefix: str, **bus: object) -> dict[str, Any]:
    """One bus of a `sim.devices` spec; device ids count from 1 in the order given."""
    devices = [
        {
            "name": f"{prefix}{d.name}",
            "id": i + 1,
            "profile": d.profile,
            "values": VALUES[d.profile],
        }
        for i, d in enumerate(specs)
    ]
    return {"kind": kind, **bus, "devices": devices}


def poll_benchmark(
    work: Path,
    specs: Sequence[DeviceSpec],
    profiles: dict[str, DeviceProfile],
    cycles: int,
    budget_s: float,
) -> list[dict[str, Any]]:
    """Part 2: all devices on one TCP bus, and again on one emulated RTU line per baud rate."""
    with contextlib.ExitStack() as stack:
        ptys = [stack.enter_context(PtyPair(work / f"pty-{baud}")) for baud in RTU_BAUDS]
        tcp_port = free_port()
        rtu = [
            bus_json(
                "rtu", specs, f"rtu{baud}-", device=str(pty.a), baudrate=baud, emulate_baud=True
            )
            for baud, pty in zip(RTU_BAUDS, ptys, strict=True)
        ]
        spec_path = work / "poll-devices.json"
        spec = {"buses": [bus_json("tcp", specs, "tcp-", port=tcp_port), *rtu]}
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        stack.enter_context(
            ServerProcess(
                "sim.devices",
                ["--spec", str(spec_path)],
                directory=work / "poll-devices",
                ready=lambda: port_open(HOST, tcp_port),
            )
        )
        buses = [("tcp", BusAddress(BusKind.TCP, host=HOST, port=tcp_port))] + [
            (f"rtu {baud}", BusAddress(BusKind.RTU, device=str(pty.b), baudrate=baud))
            for baud, pty in zip(RTU_BAUDS, ptys, strict=True)
        ]
        return asyncio.run(measure_buses(buses, specs, profiles, cycles, budget_s))


# --- part 3: the agent daemon -------------------------------------------------------------------


def toml_value(v: object) -> str:
    """A TOML value (inline form) for JSON-like data."""
    if isinstance(v, bool):
        out = "true" if v else "false"
    elif isinstance(v, int):
        out = str(v)
    elif isinstance(v, float):
        out = repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else f"{v}")
    elif isinstance(v, str):
        out = json.dumps(v, ensure_ascii=False)  # JSON string escapes are valid TOML
    elif isinstance(v, list | tuple):
        out = "[" + ", ".join(toml_value(x) for x in v) + "]"
    elif isinstance(v, dict):
        out = "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    else:
        raise TypeError(f"no TOML for {type(v).__name__}")
    return out


def to_toml(doc: dict[str, Any]) -> str:
    """Plain keys, then tables, then arrays of tables: all a site file needs."""

    def is_tables(v: object) -> bool:
        return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)

    lines = [
        f"{k} = {toml_value(v)}"
        for k, v in doc.items()
        if not isinstance(v, dict) and not is_tables(v)
    ]
    for k, v in doc.items():
        if isinstance(v, dict):
            lines += ["", f"[{k}]", *(f"{kk} = {toml_value(vv)}" for kk, vv in v.items())]
    for k, v in doc.items():
        if is_tables(v):
            for item in v:
                lines += ["", f"[[{k}]]", *(f"{kk} = {toml_value(vv)}" for kk, vv in item.items())]
    return "\n".join(lines) + "\n"


def write_site(site: Site, path: Path) -> None:
    path.write_text(to_toml(site.model_dump(mode="json", exclude_none=True)), encoding="utf-8")
    load_site(path)  # the agent would refuse a bad file; fail here, with the reason


@dataclass(frozen=True)
class Gateway:
    """The generated gateway: devices, which TCP bus each is on, and the buses' ports."""

    specs: tuple[DeviceSpec, ...]
    bus_of: dict[str, int]
    ports: tuple[int, ...]

    @property
    def mapped_readings(self) -> int:
        return sum(len(READS[d.profile]) for d in self.specs)

    def toml(self, site_path: Path, work: Path, broker_port: int, metrics_port: int) -> str:
        """The gateway file: every zone mapped to its devices' readings and setpoints."""
        text = [
            "[gateway]",
            f'name = "{GATEWAY}"',
            f"site = {toml_value(str(site_path))}",
            f"profiles = {toml_value(str(PROFILES))}",
            "cycle_s = 1.0",
            f'\n[broker]\nhost = "{HOST}"\nport = {broker_port}',
            "\n[fallback]",
            "after_s = 3600.0  # no controller here: stay out of fallback during the run",
            f"\n[buffer]\npath = {toml_value(str(work / 'buffer.sqlite'))}",
            f"\n[audit]\npath = {toml_value(str(work / 'audit.sqlite'))}",
            f'\n[metrics]\nhost = "{HOST}"\nport = {metrics_port}',
            '\n[log]\nformat = "text"\nlevel = "INFO"',
        ]
        for i, port in enumerate(self.ports):
            text += ["", "[[bus]]", f'name = "bms-{i}"', 'kind = "tcp"', f'host = "{HOST}"']
            text.append(f"port = {port}")
        ids: dict[int, int] = {}
        zones: dict[str, list[DeviceSpec]] = {}
        for d in self.specs:
            b = self.bus_of[d.name]
            ids[b] = ids.get(b, 0) + 1  # as bus_json numbers them
            text += ["", "[[device]]", f'name = "{d.name}"', f'bus = "bms-{b}"']
            text += [f"device_id = {ids[b]}", f'profile = "{d.profile}"']
            zones.setdefault(d.zone, []).append(d)
        for zone, devices in zones.items():
            reads = {q: f"{d.name}/{q}" for d in devices for q in READS[d.profile]}
            vav = next(d.name for d in devices if d.profile == "vav-ahu")
            writes = {
                "airflow_m3s": f"{vav}/airflow_setpoint_m3s",
                "t_heat_c": f"{vav}/t_heat_setpoint_c",
                "t_cool_c": f"{vav}/t_cool_setpoint_c",
                "mode": f"{vav}/occupancy_mode",
            }
            text += ["", "[[zone]]", f'name = "{zone}"', 'fallback = "local"']
            text += [f"read = {toml_value(reads)}", f"write = {toml_value(writes)}"]
        return "\n".join(text) + "\n"


def cpu_s(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process so far (all its threads)."""
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    fields = stat[stat.rindex(")") + 2 :].split()  # from field 3 (state) on
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # utime (14), stime (15)


def status_mb(pid: int, key: str) -> float:
    """A /proc/PID/status memory figure (VmHWM, VmRSS, RssAnon, ...) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def scrape(port: int) -> dict[str, float]:
    """The agent's Prometheus samples, summed over labels."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as response:
        text = response.read().decode("utf-8")
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
    return out


@dataclass(frozen=True)
class Arrival:
    mono: float  # when it arrived (monotonic s)
    readings: int
    good: int  # readings with quality 0
    latency_s: float  # arrival (wall clock) - the cycle's time in the message


class Subscriber:
    """A paho client on the gateway's telemetry topic."""

    def __init__(self, port: int, topic: str) -> None:
        self.topic = topic
        self.arrivals: list[Arrival] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-subscriber")
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect(HOST, port)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, *_: object) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_message(self, _c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        now, mono = time.time(), time.monotonic()
        t = decode_telemetry(bytes(m.payload))
        with self._lock:
            good = sum(1 for r in t.rows if r.quality == 0)
            self.arrivals.append(Arrival(mono, len(t), good, now - t.t))

    def since(self, t0: float, t1: float) -> list[Arrival]:
        with self._lock:
            return [a for a in self.arrivals if t0 <= a.mono < t1]

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def delta(m0: dict[str, float], m1: dict[str, float], name: str) -> float:
    return m1.get(name, 0.0) - m0.get(name, 0.0)


def agent_benchmark(
    work: Path, site: Site, profiles: dict[str, DeviceProfile], window_s: float, warmup_s: float
) -> dict[str, Any]:
    """Part 3: the daemon at 1 Hz against virtual devices on several TCP buses, publishing."""
    big = replicate(site, AGENT_ZONES)
    site_path = work / "site.toml"
    write_site(big, site_path)
    specs = tuple(gateway_devices(big, AGENT_ZONES))
    zone_index = {z.name: k for k, z in enumerate(big.zone)}
    gw = Gateway(
        specs,
        {d.name: zone_index[d.zone] % AGENT_TCP_BUSES for d in specs},
        tuple(free_port() for _ in range(AGENT_TCP_BUSES)),
    )
    agent_dir = work / "agent"
    agent_dir.mkdir()
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(Mosquitto(work / "mosquitto"))
        spec = {
            "buses": [
                bus_json("tcp", [d for d in specs if gw.bus_of[d.name] == b], "", port=port)
                for b, port in enumerate(gw.ports)
            ]
        }
        spec_path = work / "agent-devices.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        devices = stack.enter_context(
            ServerProcess(
                "sim.devices",
                ["--spec", str(spec_path)],
                directory=work / "agent-devices",
                ready=lambda: all(port_open(HOST, p) for p in gw.ports),
            )
        )
        metrics_port = free_port()
        gateway_path = agent_dir / "gateway.toml"
        gateway_path.write_text(
            gw.toml(site_path, agent_dir, broker.port, metrics_port), encoding="utf-8"
        )
        subscriber = Subscriber(broker.port, telemetry_topic(big.site.name, GATEWAY))
        stack.callback(subscriber.stop)
        agent = stack.enter_context(
            ServerProcess(
                "edge_agent.daemon",
                ["--config", str(gateway_path)],
                directory=agent_dir,
                ready=lambda: port_open(HOST, metrics_port),
            )
        )
        # The metrics port opens before the first cycle: imports and configuration only.
        rss_started = status_mb(agent.pid, "VmRSS")
        wait_until(lambda: subscriber.arrivals, 30, message="first telemetry")
        time.sleep(warmup_s)
        pids = {"agent": agent.pid, "devices": devices.pid, "mosquitto": broker.pid}
        cpu0 = {k: cpu_s(p) for k, p in pids.items()}
        m0 = scrape(metrics_port)
        rss_window_start = status_mb(agent.pid, "VmRSS")
        t0 = time.monotonic()
        rss_max = rss_window_start
        while time.monotonic() - t0 < window_s:
            time.sleep(0.5)
            rss_max = max(rss_max, status_mb(agent.pid, "VmRSS"))
        t1 = time.monotonic()
        cpu1 = {k: cpu_s(p) for k, p in pids.items()}
        m1 = scrape(metrics_port)
        memory = {k: status_mb(agent.pid, k) for k in ("VmHWM", "VmRSS", "RssAnon", "RssFile")}
        threads = sum(1 for _ in Path(f"/proc/{agent.pid}/task").iterdir())
        arrivals = subscriber.since(t0, t1)
        log_lines = agent.stderr_text().splitlines()
    wall = t1 - t0
    gaps = np.diff([t0, *(a.mono for a in arrivals), t1])
    latency_ms = np.array([a.latency_s for a in arrivals]) * 1e3
    cycles = delta(m0, m1, "ilma_agent_cycle_seconds_count")
    polls = delta(m0, m1, "ilma_agent_poll_latency_seconds_count")
    cpu = {k: (sum(cpu1[k]) - sum(cpu0[k])) / wall * 100 for k in pids}
    user_pct = (cpu1["agent"][0] - cpu0["agent"][0]) / wall * 100
    per_cycle = 1 / cycles if cycles else math.nan
    return {
        "zones": AGENT_ZONES,
        "tcp_buses": AGENT_TCP_BUSES,
        "plan": plan_counts(specs, profiles),
        "mapped_readings": gw.mapped_readings,
        "window_s": round(wall, 1),
        "warmup_s": warmup_s,
        "cpu_pct_one_core": cpu["agent"],
        "cpu_user_pct": user_pct,
        "cpu_system_pct": cpu["agent"] - user_pct,
        "goal_cpu_pct": GOAL_CPU_PCT,
        "peak_rss_mb": memory["VmHWM"],
        "goal_rss_mb": GOAL_RSS_MB,
        "rss_after_start_mb": rss_started,
        "rss_window_start_mb": rss_window_start,
        "rss_max_in_window_mb": rss_max,
        "rss_anon_mb": memory["RssAnon"],
        "rss_file_mb": memory["RssFile"],
        "threads": threads,
        "cycles": int(cycles),
        "cycle_mean_ms": delta(m0, m1, "ilma_agent_cycle_seconds_sum") * per_cycle * 1e3,
        "requests_per_cycle": delta(m0, m1, "ilma_agent_modbus_requests_total") * per_cycle,
        "request_errors": int(delta(m0, m1, "ilma_agent_modbus_errors_total")),
        "device_polls_per_cycle": polls * per_cycle / len(specs),
        "messages": len(arrivals),
        "messages_per_s": len(arrivals) / wall,
        "readings_per_s": sum(a.readings for a in arrivals) / wall,
        "readings_per_message": float(np.mean([a.readings for a in arrivals])),
        "good_readings_share": sum(a.good for a in arrivals)
        / max(1, sum(a.readings for a in arrivals)),
        "latency_median_ms": float(np.median(latency_ms)),
        "latency_p95_ms": float(np.percentile(latency_ms, 95)),
        "max_gap_s": float(gaps.max()),
        "gaps_over_1_5_s": int((gaps > 1.5).sum()),
        "other_cpu_pct": {"devices": cpu["devices"], "mosquitto": cpu["mosquitto"]},
        "agent_warnings": sum(1 for line in log_lines if " WARNING " in line or " ERROR " in line),
    }


# --- output -------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "platform": platform.platform(),
        "processor": model,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "pymodbus": pymodbus.__version__,
    }


def print_requests(p: dict[str, Any], tcp: dict[str, Any], a: dict[str, Any]) -> None:
    print(
        f"1. Modbus read requests per poll cycle: {p['devices']} devices, {p['points']} points "
        f"({POLL_ZONES} zones of the Helsinki office)"
    )
    print(f"{'':<16}{'devices':>8}{'points':>8}{'per point':>11}{'planned':>9}{'live':>6}")
    for name, r in p["by_profile"].items():
        live = tcp["live_plan_by_profile"][name]
        print(
            f"{name:<16}{r['devices']:>8}{r['points']:>8}{r['points']:>11}"
            f"{r['coalesced']:>9}{live:>6}"
        )
    c, pp = tcp["coalesced"], tcp["per_point"]
    print(
        f"{'total':<16}{p['devices']:>8}{p['points']:>8}{p['per_point_requests']:>11}"
        f"{p['coalesced_requests']:>9}{p['live_coalesced_requests']:>6.0f}"
    )
    print(
        f"fewer requests: {p['ratio']:.2f}× planned, {p['live_ratio']:.2f}× live "
        f"({pp['requests_per_cycle']:.0f} against {c['requests_per_cycle']:.0f} requests on the "
        f"wire per cycle, TCP; the first cycle sent {c['first_cycle_requests']})"
    )
    if p["live_coalesced_requests"] != p["coalesced_requests"]:
        print(
            "  live ≠ planned: a device answered a read across its unmapped registers with "
            "exception 2 (illegal data address); the client split that read for good"
        )
    ap = a["plan"]
    print(
        f"the agent (part 3, {ap['devices']} devices, {ap['points']} points): "
        f"{a['requests_per_cycle']:.1f} requests per cycle (ilma_agent_modbus_requests_total); "
        f"planned {ap['coalesced_requests']}, per point {ap['per_point_requests']}"
    )


def print_cycles(points: int, rows: list[dict[str, Any]]) -> None:
    print(
        f"\n2. poll-cycle time, {points} points on one bus, all devices polled at once "
        "(ModbusDevice.poll); reference: one request per point, same quirks, same run"
    )
    print(
        f"{'bus':<11}{'mode':<11}{'cycles':>7}{'median ms':>11}{'p95 ms':>9}"
        f"{'req/cycle':>11}{'speedup':>9}"
    )
    for r in rows:
        for mode in ("coalesced", "per_point"):
            s = r[mode]
            speed = f"{r['speedup']:>8.1f}×" if mode == "coalesced" else ""
            print(
                f"{r['bus']:<11}{mode.replace('_', '-'):<11}{s['cycles']:>7}"
                f"{s['median_ms']:>11.1f}{s['p95_ms']:>9.1f}{s['requests_per_cycle']:>11.0f}"
                f"{speed}"
            )
    print(
        "(RTU: socat pty pair; the virtual line takes each frame's time at its baud rate, 8N1, "
        "3.5 characters of silence each way; the profiles' pauses between requests included)"
    )


def print_agent(a: dict[str, Any]) -> None:
    ap = a["plan"]
    print(
        f"\n3. the agent daemon: {ap['points']} points on {ap['devices']} devices "
        f"({a['tcp_buses']} TCP buses), {a['zones']} zones, cycle 1 s, publishing to mosquitto; "
        f"{a['window_s']:.0f} s after {a['warmup_s']:.0f} s of warm-up"
    )
    cpu_ok = "met" if a["cpu_pct_one_core"] < GOAL_CPU_PCT else "MISSED"
    rss_ok = "met" if a["peak_rss_mb"] < GOAL_RSS_MB else "MISSED"
    o = a["other_cpu_pct"]

    def row(name: str, *parts: str) -> None:
        print(f"  {name:<11}{''.join(parts)}")

    row(
        "CPU",
        f"{a['cpu_pct_one_core']:.1f} % of one core ",
        f"(goal < {GOAL_CPU_PCT:.0f} %: {cpu_ok}); ",
        f"user {a['cpu_user_pct']:.1f} %, system {a['cpu_system_pct']:.1f} %",
    )
    row("peak RSS", f"{a['peak_rss_mb']:.1f} MB VmHWM ", f"(goal < {GOAL_RSS_MB:.0f} MB: {rss_ok})")
    row(
        "RSS",
        f"{a['rss_after_start_mb']:.1f} MB after start (imports, config), ",
        f"{a['rss_window_start_mb']:.1f} → {a['rss_max_in_window_mb']:.1f} MB in the window; ",
        f"{a['rss_anon_mb']:.1f} MB anonymous, {a['rss_file_mb']:.1f} MB mapped files; ",
        f"{a['threads']} threads",
    )
    row(
        "cycle",
        f"{a['cycle_mean_ms']:.1f} ms mean over {a['cycles']} cycles; ",
        f"{a['requests_per_cycle']:.1f} requests per cycle; ",
        f"{a['device_polls_per_cycle']:.2f} polls per device and cycle ",
        "(1.00: every device is due every cycle); ",
        f"{a['request_errors']} errors",
    )
    row(
        "telemetry",
        f"{a['messages_per_s']:.2f} messages/s, {a['readings_per_s']:.0f} readings/s ",
        f"({a['readings_per_message']:.0f} per message of {a['mapped_readings']} mapped, ",
        f"{a['good_readings_share']:.0%} good); ",
        f"cycle start → subscriber {a['latency_median_ms']:.0f} ms median, ",
        f"{a['latency_p95_ms']:.0f} ms p95",
    )
    row(
        "gaps",
        f"longest {a['max_gap_s']:.2f} s between messages, ",
        f"{a['gaps_over_1_5_s']} over 1.5 s",
    )
    row(
        "others",
        f"virtual devices {o['devices']:.1f} %, mosquitto {o['mosquitto']:.1f} % of one core; ",
        f"agent warnings logged: {a['agent_warnings']}",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--quick", action="store_true", help="fewer cycles, a 30 s agent window")
    args = parser.parse_args()
    site = load_site(SITE_FILE)
    profiles = load_profiles(PROFILES)
    specs = gateway_devices(site, POLL_ZONES)
    requests = plan_counts(specs, profiles)
    cycles = CYCLES // 2 if args.quick else CYCLES
    budget_s = 12.0 if args.quick else 25.0
    with tempfile.TemporaryDirectory(prefix="ilma-bench-") as tmp:
        work = Path(tmp)
        poll = poll_benchmark(work, specs, profiles, cycles, budget_s)
        agent = agent_benchmark(
            work, site, profiles, window_s=30.0 if args.quick else 60.0, warmup_s=5.0
        )
    tcp = next(r for r in poll if r["bus"] == "tcp")
    requests["live_per_point_requests"] = tcp["per_point"]["requests_per_cycle"]
    requests["live_coalesced_requests"] = tcp["coalesced"]["requests_per_cycle"]
    requests["live_ratio"] = (
        requests["live_per_point_requests"] / requests["live_coalesced_requests"]
    )
    out: dict[str, Any] = {
        "machine": machine(),
        "requests": requests,
        "poll_cycle": poll,
        "agent": agent,
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    m = out["machine"]
    print(
        f"machine: {m['platform']}, {m['cpus']} × {m['processor']}, Python {m['python']}, "
        f"pymodbus {m['pymodbus']}\n"
    )
    print_requests(requests, tcp, agent)
    print_cycles(requests["points"], poll)
    print_agent(agent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
