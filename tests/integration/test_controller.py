"""The controller service against a real mosquitto: 1,000 zones, the event path, Last Will and
restart, two processes sharing sites; the historian against a real VictoriaMetrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.historian import HistoryQueue, InfluxSink, Record, Writer
from controller.service import owner
from controller.service_config import InfluxDB
from controller.wire import ControllerState, Mode, decode_controller_status
from tests.fixtures_servers import ServerProcessFactory
from tests.integration.controller_harness import (
    Gateways,
    MemberWatch,
    controller_toml,
    write_site,
)
from tests.servers import Mosquitto, VictoriaMetrics, wait_until

pytestmark = pytest.mark.xdist_group("controller")

N_GATEWAYS = 10
ZONES_PER_GATEWAY = 100


@pytest.fixture
def big_site(tmp_path: Path) -> tuple[Path, list[str]]:
    path, site = write_site(tmp_path, "city-hall", N_GATEWAYS * ZONES_PER_GATEWAY)
    return path, [z.name for z in site.zone]


def _gateways(port: int, site: str, zones: list[str]) -> Gateways:
    by_gw = {
        f"gw-{g}": zones[g * ZONES_PER_GATEWAY : (g + 1) * ZONES_PER_GATEWAY]
        for g in range(N_GATEWAYS)
    }
    gws = Gateways(port, site, by_gw)
    gws.start()
    return gws


@pytest.fixture
def gateways(mosquitto: Mosquitto, big_site: tuple[Path, list[str]]) -> Iterator[Gateways]:
    gws = _gateways(mosquitto.port, "city-hall", big_site[1])
    try:
        yield gws
    finally:
        gws.stop()


def test_every_zone_gets_its_command_every_period(
    tmp_path: Path,
    mosquitto: Mosquitto,
    big_site: tuple[Path, list[str]],
    gateways: Gateways,
    server_process_factory: ServerProcessFactory,
) -> None:
    config = controller_toml(tmp_path, "ctl-a", [big_site[0]], mosquitto.port, period_s=1.0)
    server_process_factory("controller.daemon", ["--config", str(config)])
    # The gateways publish every half period; after a few periods every zone has a command.
    deadline = time.monotonic() + 30
    while gateways.zones_commanded() != set(big_site[1]) and time.monotonic() < deadline:
        gateways.publish_all()
        time.sleep(0.5)
    assert gateways.zones_commanded() == set(big_site[1])
    # Then every gateway gets a full command set each period.
    start = time.monotonic()
    for _ in range(8):
        gateways.publish_all()
        time.sleep(0.5)
    for gw, zones in gateways.zones_by_gateway.items():
        recent = [cs for at, cs in gateways.latest(gw) if at >= start]
        assert len(recent) >= 2, f"{gw}: {len(recent)} command sets in ~4 periods"
        assert {c.zone for c in recent[-1].commands} == set(zones)
        assert all(cs.lease_s == pytest.approx(3.0) for cs in recent)
        assert all(cs.valid_until == pytest.approx(cs.t + cs.lease_s) for cs in recent)
        assert all(c.reason for cs in recent for c in cs.commands)


def test_an_occupancy_step_brings_its_command_at_once(
    tmp_path: Path,
    mosquitto: Mosquitto,
    big_site: tuple[Path, list[str]],
    gateways: Gateways,
    server_process_factory: ServerProcessFactory,
) -> None:
    # A long period: a command that arrives well within it came by the event path.
    period = 60.0
    config = controller_toml(tmp_path, "ctl-a", [big_site[0]], mosquitto.port, period_s=period)
    server_process_factory("controller.daemon", ["--config", str(config)])

    def first_commands() -> bool:
        gateways.publish_all()  # until the controller is up and subscribed
        return all(gateways.latest(gw) for gw in gateways.zones_by_gateway)

    wait_until(first_commands, 30, interval_s=0.5, message="commands for the gateways heard of")
    zone = gateways.zones_by_gateway["gw-3"][7]
    before = len(gateways.latest("gw-3"))
    stepped_at = time.monotonic()
    gateways.counters[zone] = (105.0, 100.0)  # five people walk in
    gateways.publish_zone("gw-3", zone)

    def occupied_command() -> bool:
        for _, cs in gateways.latest("gw-3")[before:]:
            for c in cs.commands:
                if c.zone == zone and c.mode is Mode.OCCUPIED and "occupancy" in c.reason:
                    return True
        return False

    wait_until(occupied_command, period / 4, message="the event-path command")
    arrived = next(
        at
        for at, cs in gateways.latest("gw-3")[before:]
        if any(c.zone == zone for c in cs.commands)
    )
    assert arrived - stepped_at < period / 4
    # Only the gateway of the zone that changed got an event command.
    assert all(len(gateways.latest(gw)) == 1 for gw in gateways.zones_by_gateway if gw != "gw-3")


def test_a_killed_controller_leaves_its_will_and_a_restarted_one_resumes(
    tmp_path: Path,
    mosquitto: Mosquitto,
    big_site: tuple[Path, list[str]],
    gateways: Gateways,
    server_process_factory: ServerProcessFactory,
) -> None:
    config = controller_toml(tmp_path, "ctl-a", [big_site[0]], mosquitto.port, period_s=1.0)
    watch = MemberWatch(mosquitto.port, ["ctl-a"])
    try:
        first = server_process_factory("controller.daemon", ["--config", str(config)])

        def commanded() -> bool:
            gateways.publish_all()
            return bool(gateways.latest("gw-0"))

        wait_until(commanded, 30, interval_s=0.5, message="commands")
        wait_until(lambda: _state(watch, "ctl-a") is ControllerState.ONLINE, 10)
        first.kill()  # SIGKILL: no goodbye; the broker publishes the Will (keepalive 5 s)
        wait_until(lambda: _state(watch, "ctl-a") is ControllerState.OFFLINE, 30, message="Will")
        server_process_factory("controller.daemon", ["--config", str(config)])
        restarted = time.monotonic()
        wait_until(lambda: _state(watch, "ctl-a") is ControllerState.ONLINE, 30)

        def resumed() -> bool:
            gateways.publish_all()
            return all(
                any(at > restarted for at, _ in gateways.latest(gw))
                for gw in gateways.zones_by_gateway
            )

        wait_until(resumed, 30, interval_s=0.5, message="commands from the restarted controller")
    finally:
        watch.stop()


def _state(watch: MemberWatch, name: str) -> ControllerState | None:
    payload = watch.last.get(name)
    return None if payload is None else decode_controller_status(payload).state


def test_two_controllers_share_the_sites_and_take_over(
    tmp_path: Path,
    mosquitto: Mosquitto,
    server_process_factory: ServerProcessFactory,
) -> None:
    # Four sites; pick names the two members split between them.
    names = [f"site-{i}" for i in range(12)]
    a_sites = [n for n in names if owner(n, ["ctl-a", "ctl-b"]) == "ctl-a"][:2]
    b_sites = [n for n in names if owner(n, ["ctl-a", "ctl-b"]) == "ctl-b"][:2]
    sites = a_sites + b_sites
    paths = [write_site(tmp_path, n, 50)[0] for n in sites]
    zones = [f"{z}" for z in _zone_names(paths[0])]
    fleets = {s: _gateways_small(mosquitto.port, s, zones) for s in sites}
    ctl = {
        name: controller_toml(
            tmp_path, name, paths, mosquitto.port, period_s=1.0, share_group="ilma"
        )
        for name in ("ctl-a", "ctl-b")
    }
    try:
        a = server_process_factory("controller.daemon", ["--config", str(ctl["ctl-a"])])
        server_process_factory("controller.daemon", ["--config", str(ctl["ctl-b"])])

        def all_commanded(after: float) -> bool:
            for f in fleets.values():
                f.publish_all()
            return all(
                {c.zone for at, cs in f.latest("gw-0") if at > after for c in cs.commands}
                == set(zones)
                for f in fleets.values()
            )

        t0 = time.monotonic()
        wait_until(lambda: all_commanded(t0), 40, interval_s=0.5, message="all sites commanded")
        # Each site is run by exactly one controller: the one rendezvous hashing names.
        settled = time.monotonic()
        for _ in range(6):
            for f in fleets.values():
                f.publish_all()
            time.sleep(0.5)
        for s, f in fleets.items():
            senders = {cs.controller for at, cs in f.latest("gw-0") if at > settled}
            expected = "ctl-a" if s in a_sites else "ctl-b"
            assert senders == {expected}, f"{s} commanded by {senders}"
        # ctl-a dies; its sites move to ctl-b once its Will is out.
        a.kill()
        t1 = time.monotonic()
        wait_until(lambda: all_commanded(t1 + 8), 60, interval_s=0.5, message="take-over")
        for s in a_sites:
            late = {cs.controller for at, cs in fleets[s].latest("gw-0") if at > t1 + 8}
            assert late == {"ctl-b"}
    finally:
        for f in fleets.values():
            f.stop()


def _zone_names(path: Path) -> list[str]:
    from controller.site import load_site  # noqa: PLC0415

    return [z.name for z in load_site(path).zone]


def _gateways_small(port: int, site: str, zones: list[str]) -> Gateways:
    g = Gateways(port, site, {"gw-0": zones})
    g.start()
    return g


# --- the historian against a real VictoriaMetrics ---------------------------------------------


def _records(n: int, t0_ns: int, zone: str = "z1") -> list[Record]:
    return [
        Record(
            "reading",
            (("site", "s 1"), ("zone", zone), ("point", "co2_ppm")),
            (("value", 400.0 + i), ("quality", 0), ("replayed", False)),
            t0_ns + i * 1_000_000_000,
        )
        for i in range(n)
    ]


def _values(vm: VictoriaMetrics, zone: str) -> list[float]:
    series = vm.export(f'{{__name__="reading_value",zone="{zone}"}}')
    return sorted(v for s in series for v in s["values"])


def test_history_reads_back_with_its_tags(victoria_metrics: VictoriaMetrics) -> None:
    sink = InfluxSink(InfluxDB(url=victoria_metrics.url))
    try:
        t0 = (int(time.time()) - 600) * 1_000_000_000
        sink.write(_records(5, t0))
        series = victoria_metrics.wait_for_series(
            '{__name__="reading_value",zone="z1"}', lambda s: sum(len(x["values"]) for x in s) >= 5
        )
        metric = series[0]["metric"]
        assert metric["site"] == "s 1"  # a space in a tag survives the line protocol
        assert metric["point"] == "co2_ppm"
        assert sorted(v for s in series for v in s["values"]) == [400.0, 401.0, 402.0, 403.0, 404.0]
        assert min(t for s in series for t in s["timestamps"]) == t0 // 1_000_000
    finally:
        sink.close()


def test_a_database_outage_loses_nothing_within_the_queue_bound(
    victoria_metrics: VictoriaMetrics,
) -> None:
    t0 = (int(time.time()) - 3600) * 1_000_000_000

    async def scenario() -> tuple[int, int]:
        queue = HistoryQueue(max_records=1000)
        sink = InfluxSink(InfluxDB(url=victoria_metrics.url))
        writer = Writer(queue, sink, batch_size=100, flush_interval_s=0.05, backoff_max_s=0.5)
        task = asyncio.create_task(writer.run(), name="writer")
        try:
            victoria_metrics.stop()
            queue.put(_records(600, t0, zone="outage"))  # within the bound
            await asyncio.sleep(1.0)  # failing and retrying
            assert writer.failures > 0
            victoria_metrics.start()
            async with asyncio.timeout(30):
                await queue.drained()
            return queue.written, queue.dropped
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            sink.close()

    written, dropped = asyncio.run(scenario())
    assert (written, dropped) == (600, 0)
    victoria_metrics.wait_for_series(
        '{__name__="reading_value",zone="outage"}',
        lambda s: sum(len(x["values"]) for x in s) >= 600,
    )
    assert _values(victoria_metrics, "outage") == [400.0 + i for i in range(600)]


def test_beyond_the_queue_bound_the_oldest_are_dropped_and_counted(
    victoria_metrics: VictoriaMetrics,
) -> None:
    t0 = (int(time.time()) - 7200) * 1_000_000_000

    async def scenario() -> tuple[int, int]:
        queue = HistoryQueue(max_records=200)
        sink = InfluxSink(InfluxDB(url=victoria_metrics.url))
        writer = Writer(queue, sink, batch_size=50, flush_interval_s=0.05, backoff_max_s=0.5)
        task = asyncio.create_task(writer.run(), name="writer")
        try:
            victoria_metrics.stop()
            for chunk in range(10):  # 500 records while the database is away
                queue.put(_records(50, t0 + chunk * 50 * 1_000_000_000, zone="overflow")[:50])
                await asyncio.sleep(0.05)
            victoria_metrics.start()
            async with asyncio.timeout(30):
                await queue.drained()
            return queue.written, queue.dropped
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            sink.close()

    written, dropped = asyncio.run(scenario())
    assert written + dropped == 500
    assert dropped >= 500 - 200 - 50  # the bound, plus at most the batch the writer held
    victoria_metrics.wait_for_series(
        '{__name__="reading_value",zone="overflow"}',
        lambda s: sum(len(x["values"]) for x in s) >= written,
    )
    assert len(_values(victoria_metrics, "overflow")) == written
