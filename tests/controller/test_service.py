"""Tests for controller.service in-process: telemetry in, commands out, ownership and forwarding.

No broker: a fake client records what the service publishes, messages are handed to
`on_message` directly and control steps are run with `run_site`; the clocks are fake.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.properties import Properties

from controller.historian import HistoryQueue, expand
from controller.mqtt import Message, Session, SessionError
from controller.service import MEMBER_TIMEOUT_PERIODS, ControllerService, SiteRun, owner
from controller.service_config import ControllerConfig, ControllerFile
from controller.site import Site, load_site
from controller.wire import (
    CommandSet,
    ControllerState,
    ControllerStatus,
    GatewayState,
    GatewayStatus,
    Mode,
    Quantity,
    Reading,
    Telemetry,
    command_topic,
    controller_status_topic,
    decode_commands,
    decode_controller_status,
    encode,
    gateway_status_topic,
    inbox_topic,
    member_topic,
    telemetry_topic,
)

REPO = Path(__file__).resolve().parents[2]
OFFICE = REPO / "config" / "sites" / "helsinki-office.toml"
SITE = load_site(OFFICE)
NAME = SITE.site.name
ZONES = tuple(z.name for z in SITE.zone)
TZ = ZoneInfo("Europe/Helsinki")
NOW = datetime(2027, 3, 10, 10, 0, tzinfo=TZ).timestamp()  # a Wednesday morning, open hours
PERIOD_S = 60.0
LEASE_S = 3 * PERIOD_S
# The gateways of the tests and the zones each reports.
GW_A = ("open-office-south", "office-e1", "meeting-small-1")
GW_B = ("lecture-hall", "cafeteria")
T = TypeVar("T")


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Sent:
    def __init__(
        self, topic: str, payload: bytes, qos: int, retain: bool, properties: Properties | None
    ) -> None:
        self.topic, self.payload, self.qos = topic, payload, qos
        self.retain, self.properties = retain, properties


class FakeClient:
    """What the service needs of its MQTT session (controller.mqtt.Session): publish, recorded."""

    def __init__(self, messages: list[Message] | None = None) -> None:
        self.sent: list[Sent] = []
        self._messages = messages or []

    async def publish(
        self,
        topic: str,
        payload: bytes | None = None,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
        *_args: Any,
        **_kwargs: Any,  # timeout
    ) -> None:
        self.sent.append(Sent(topic, payload or b"", qos, retain, properties))

    async def batches(self) -> AsyncIterator[list[Message]]:
        yield self._messages

    def to(self, topic: str) -> list[Sent]:
        return [s for s in self.sent if s.topic == topic]

    def commands(self, gateway: str, site: str = NAME) -> list[CommandSet]:
        return [decode_commands(s.payload) for s in self.to(command_topic(site, gateway))]


def renamed(name: str) -> Site:
    return SITE.model_copy(update={"site": SITE.site.model_copy(update={"name": name})})


def config(name: str = "ctl-a", group: str | None = None, sites: int = 0) -> ControllerConfig:
    """A controller of the Helsinki office, or of `sites` copies of it named site-0, site-1..."""
    file = ControllerFile.model_validate(
        {
            "controller": {
                "name": name,
                "sites": [str(OFFICE)],
                "period_s": PERIOD_S,
                "lease_periods": 3.0,
                **({"share_group": group} if group else {}),
            }
        }
    )
    served = {f"site-{i}": renamed(f"site-{i}") for i in range(sites)} if sites else {NAME: SITE}
    return ControllerConfig(Path("ctl.toml"), file, served)


def make_service(
    cfg: ControllerConfig, clock: Clock, *, rebalance: bool = True
) -> tuple[ControllerService, FakeClient]:
    service = ControllerService(
        cfg, HistoryQueue(1_000_000), clock=clock, mono=clock, rng=random.Random(1)
    )
    client = FakeClient()
    service._client = cast("Session", client)
    if rebalance:
        service._rebalance()
    return service, client


def telemetry(
    gateway: str,
    zones: tuple[str, ...],
    t: float,
    seq: int,
    *,
    counters: dict[str, tuple[float, float]] | None = None,
) -> bytes:
    readings = []
    for z in zones:
        cin, cout = (counters or {}).get(z, (0.0, 0.0))
        readings += [
            Reading(zone=z, point=Quantity.CO2_PPM, t=t, value=520.0),
            Reading(zone=z, point=Quantity.T_ZONE_C, t=t, value=21.5),
            Reading(zone=z, point=Quantity.PEOPLE_IN, t=t, value=cin),
            Reading(zone=z, point=Quantity.PEOPLE_OUT, t=t, value=cout),
        ]
    msg = Telemetry.of(gateway=gateway, boot_t=NOW - 86_400, seq=seq, t=t, readings=tuple(readings))
    return encode(msg)


async def send(
    service: ControllerService,
    gateway: str,
    zones: tuple[str, ...],
    t: float,
    seq: int,
    *,
    counters: dict[str, tuple[float, float]] | None = None,
) -> None:
    """Hand the service a gateway's telemetry of the Helsinki office as the broker would."""
    payload = telemetry(gateway, zones, t, seq, counters=counters)
    await service.on_message(telemetry_topic(NAME, gateway), payload, None)


def prop(properties: Properties | None, name: str) -> Any:
    """An MQTT 5 property by name (paho sets them as attributes)."""
    assert properties is not None
    return getattr(properties, name)


def member(name: str, t: float, state: ControllerState = ControllerState.ONLINE) -> bytes:
    return encode(ControllerStatus(controller=name, state=state, t=t, period_s=PERIOD_S))


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    async def guarded() -> T:
        async with asyncio.timeout(30):  # only against a hang: nothing waits on time
            return await main()

    return asyncio.run(guarded())


def z(zone: str) -> int:
    return ZONES.index(zone)


# --- commands ----------------------------------------------------------------------------------


def test_commands_go_to_the_gateway_that_reported_each_zone() -> None:
    clock = Clock()
    service, client = make_service(config(), clock)

    async def main() -> None:
        await send(service, "gw-a", GW_A, NOW, 0)
        await send(service, "gw-b", GW_B, NOW, 0)
        clock.now += 1.0
        await service.run_site(NAME)

    run(main)
    (a,), (b,) = client.commands("gw-a"), client.commands("gw-b")
    assert [c.zone for c in a.commands] == list(GW_A)
    assert [c.zone for c in b.commands] == list(GW_B)
    for cs, sent in ((a, client.to(command_topic(NAME, "gw-a"))[0]),
                     (b, client.to(command_topic(NAME, "gw-b"))[0])):  # fmt: skip
        assert cs.controller == "ctl-a"
        assert (cs.t, cs.lease_s, cs.valid_until) == (NOW + 1, LEASE_S, NOW + 1 + LEASE_S)
        assert (sent.qos, sent.retain) == (1, False)
        assert prop(sent.properties, "MessageExpiryInterval") == math.ceil(LEASE_S)
        for c in cs.commands:
            assert isinstance(c.mode, Mode)
            assert c.airflow_m3s >= 0.0
            assert c.t_heat_c <= c.t_cool_c
    assert a.seq != b.seq
    # No other gateway was told anything, and the heartbeat is retained.
    assert {s.topic for s in client.sent} == {
        command_topic(NAME, "gw-a"),
        command_topic(NAME, "gw-b"),
        controller_status_topic(NAME),
    }
    (beat,) = client.to(controller_status_topic(NAME))
    assert (beat.qos, beat.retain) == (1, True)
    status = decode_controller_status(beat.payload)
    assert (status.controller, status.state, status.t) == ("ctl-a", ControllerState.ONLINE, NOW + 1)
    assert service.counters.commands == len(GW_A) + len(GW_B)
    assert service.counters.runs == 1


def test_a_zone_that_moves_to_another_gateway_takes_its_commands_along() -> None:
    clock = Clock()
    service, client = make_service(config(), clock)

    async def main() -> None:
        await send(service, "gw-a", GW_A, NOW, 0)
        await send(service, "gw-b", GW_B, NOW, 0)
        await service.run_site(NAME)
        client.sent.clear()
        clock.now += 60.0
        await send(service, "gw-b", ("office-e1",), clock.now, 1)
        await service.run_site(NAME)

    run(main)
    (a,), (b,) = client.commands("gw-a"), client.commands("gw-b")
    assert [c.zone for c in a.commands] == ["open-office-south", "meeting-small-1"]
    assert [c.zone for c in b.commands] == ["office-e1", "lecture-hall", "cafeteria"]


def test_every_period_renews_the_lease_with_a_new_seq() -> None:
    clock = Clock()
    service, client = make_service(config(), clock)

    async def main() -> None:
        await send(service, "gw-a", GW_A, NOW, 0)
        for _ in range(3):
            await service.run_site(NAME)
            clock.now += PERIOD_S

    run(main)
    sets = client.commands("gw-a")
    assert [cs.valid_until for cs in sets] == [NOW + k * PERIOD_S + LEASE_S for k in range(3)]
    assert len({cs.seq for cs in sets}) == 3
    assert [cs.seq for cs in sets] == sorted(cs.seq for cs in sets)


def test_history_records_readings_at_corrected_times_and_each_command() -> None:
    clock = Clock()
    service, _ = make_service(config(), clock)
    behind = 120.0  # the gateway's clock

    async def main() -> None:
        payload = telemetry("gw-a", ("office-e1",), NOW - behind, 0)
        await service.on_message(telemetry_topic(NAME, "gw-a"), payload, None)
        await service.run_site(NAME)

    run(main)
    records = expand(service.history.take(100_000))
    readings = [r for r in records if r.measurement == "reading"]
    assert len(readings) == 4
    assert {r.t_ns for r in readings} == {int(NOW * 1e9)}
    assert dict(readings[0].tags) == {
        "site": NAME, "zone": "office-e1", "point": "co2_ppm", "gateway": "gw-a",
    }  # fmt: skip
    commands = [r for r in records if r.measurement == "command"]
    assert sorted(dict(r.tags)["zone"] for r in commands) == sorted(ZONES)


# --- the event path ----------------------------------------------------------------------------


def test_an_occupancy_step_marks_an_event_zone_and_commands_its_gateway_at_once() -> None:
    clock = Clock()
    service, client = make_service(config(), clock)
    hall = z("lecture-hall")

    async def main() -> None:
        await send(service, "gw-a", GW_A, NOW, 0)
        await send(service, "gw-b", GW_B, NOW, 0)
        # Zones heard of for the first time are events too: their gateways get commands now.
        assert service.runs[NAME].event_zones == {z(n) for n in GW_A + GW_B}
        await service.run_site(NAME)
        assert service.runs[NAME].event_zones == set()
        service._wake.clear()
        empty = client.commands("gw-b")[-1]
        client.sent.clear()

        clock.now += 5.0
        await send(service, "gw-b", GW_B, clock.now, 1, counters={"lecture-hall": (40.0, 0.0)})
        assert service.runs[NAME].event_zones == {hall}
        assert service._wake.is_set()  # the control task wakes at once
        await service.run_site(NAME, event=True)
        assert service.counters.event_runs == 1
        assert bool(service.runs[NAME].occupied[hall])
        # Only the gateway of the zone that changed; no heartbeat on an event.
        assert {s.topic for s in client.sent} == {command_topic(NAME, "gw-b")}
        (now_full,) = client.commands("gw-b")
        before = {c.zone: c for c in empty.commands}["lecture-hall"]
        after = {c.zone: c for c in now_full.commands}["lecture-hall"]
        assert after.airflow_m3s > before.airflow_m3s
        assert now_full.t == clock.now

        # One more person: still occupied, no event.
        clock.now += 5.0
        await send(service, "gw-b", GW_B, clock.now, 2, counters={"lecture-hall": (41.0, 0.0)})
        assert service.runs[NAME].event_zones == set()
        # Everybody out: an event again.
        clock.now += 5.0
        await send(service, "gw-b", GW_B, clock.now, 3, counters={"lecture-hall": (41.0, 41.0)})
        assert service.runs[NAME].event_zones == {hall}

    run(main)


def test_a_counter_step_in_a_zone_without_counter_readings_is_no_event() -> None:
    clock = Clock()
    service, _ = make_service(config(), clock)

    async def main() -> None:
        await send(service, "gw-a", GW_A, NOW, 0)
        await service.run_site(NAME)
        # Only IN arrives (OUT is missing): no count, so no event from a half reading.
        only_in = Telemetry.of(
            gateway="gw-a", boot_t=NOW - 86_400, seq=1, t=NOW + 1,
            readings=(
                Reading(zone="office-e1", point=Quantity.PEOPLE_IN, t=NOW + 1, value=5.0),
                Reading(zone="office-e1", point=Quantity.PEOPLE_OUT, t=NOW + 1, value=None,
                        quality=1),
            ),
        )  # fmt: skip
        await service.on_message(telemetry_topic(NAME, "gw-a"), encode(only_in), None)
        assert service.runs[NAME].event_zones == set()

    run(main)


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"",
        b"\xff\xfe",
        b'{"v": 1, "gateway": "gw-a", "boot_t": 1, "seq": -1, "t": 1, "readings": []}',
        b'{"v": 2, "gateway": "gw-a", "boot_t": 1, "seq": 1, "t": 1, "readings": []}',
        b'{"v": 1, "gateway": "gw a", "boot_t": 1, "seq": 1, "t": 1, "readings": []}',
        b"[1, 2, 3]",
    ],
)
def test_a_malformed_telemetry_payload_is_counted_and_dropped(payload: bytes) -> None:
    clock = Clock()
    service, client = make_service(config(), clock)

    async def main() -> None:
        topic = telemetry_topic(NAME, "gw-a")
        await service.on_message(topic, payload, None)
        await service.on_message(topic, payload, None)
        assert (service.counters.rejected, service.counters.messages) == (2, 0)
        # The service keeps working.
        await service.on_message(topic, telemetry("gw-a", GW_A, NOW, 0), None)
        await service.run_site(NAME)

    run(main)
    assert service.counters.messages == 1
    assert service.counters.readings == 4 * len(GW_A)
    assert [c.zone for c in client.commands("gw-a")[0].commands] == list(GW_A)


def test_readings_of_zones_the_site_does_not_have_are_counted_and_warned_of_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    service, _ = make_service(config(), clock)

    async def main() -> None:
        topic = telemetry_topic(NAME, "gw-a")
        await service.on_message(topic, telemetry("gw-a", (*GW_A, "attic"), NOW, 0), None)
        await service.on_message(topic, telemetry("gw-a", ("attic",), NOW + 10, 1), None)

    with caplog.at_level("WARNING", logger="controller.service"):
        run(main)
    assert service.counters.unknown_zone_readings == 8  # four quantities, twice
    assert service.counters.readings == 4 * len(GW_A)
    warned = [r for r in caplog.records if "zones its file does not have" in r.getMessage()]
    assert len(warned) == 1


def test_the_receive_loop_counts_bad_messages_and_goes_on() -> None:
    clock = Clock()
    service, _ = make_service(config(), clock)
    good = telemetry("gw-a", GW_A, NOW, 0)
    messages: list[Message] = [
        ("ilma/v1/x", b"{}", None),  # not an ilma topic
        (telemetry_topic(NAME, "gw-a"), b"{", None),
        (inbox_topic("ctl-a"), good, None),  # no original topic
        (gateway_status_topic(NAME, "gw-a"), b"nope", None),
        (member_topic("ctl-b"), b"nope", None),
        (telemetry_topic(NAME, "gw-a"), good, None),
    ]

    class Source:
        async def batches(self) -> AsyncIterator[list[Message]]:
            yield messages[:3]  # as read from the socket: several at a time
            yield messages[3:]

    run(lambda: service._receive(cast("Session", Source())))
    assert service.counters.rejected == 5
    assert service.counters.messages == 1
    assert service.runs[NAME].ingest.zones_of("gw-a") == [z(n) for n in sorted(GW_A, key=z)]


def test_gateway_status_is_taken_and_changes_nothing_else() -> None:
    clock = Clock()
    service, client = make_service(config(), clock)
    status = GatewayStatus(gateway="gw-a", state=GatewayState.DEGRADED, t=NOW,
                           fallback_zones=("office-e1",))  # fmt: skip

    async def main() -> None:
        await service.on_message(gateway_status_topic(NAME, "gw-a"), encode(status), None)

    run(main)
    assert service._gateway_state == {(NAME, "gw-a"): GatewayState.DEGRADED}
    assert client.sent == []
    assert service.counters.rejected == 0


@pytest.mark.parametrize("group", [None, "ilma"])
def test_telemetry_of_a_site_not_served_is_ignored(group: str | None) -> None:
    clock = Clock()
    service, client = make_service(config(group=group), clock)
    service.members["ctl-b"] = NOW

    async def main() -> None:
        payload = telemetry("gw-a", GW_A, NOW, 0)
        await service.on_message(telemetry_topic("another-site", "gw-a"), payload, None)
        await service.on_message(gateway_status_topic("another-site", "gw-a"), b"junk", None)

    run(main)
    assert client.sent == []
    assert service.counters == type(service.counters)()
    assert all(g is None for r in service.runs.values() for g in r.ingest.gateway_of_zone)


# --- ownership ---------------------------------------------------------------------------------

member_names = st.text(st.sampled_from("abcdefgh-0123"), min_size=1, max_size=6)


@given(st.sets(member_names, min_size=1, max_size=8), st.text(max_size=20), st.randoms())
def test_owner_is_deterministic_and_one_of_the_members(
    members: set[str], site: str, rnd: random.Random
) -> None:
    ordered = sorted(members)
    shuffled = ordered.copy()
    rnd.shuffle(shuffled)
    chosen = owner(site, ordered)
    assert chosen in members
    assert owner(site, shuffled) == chosen
    assert owner(site, iter(shuffled)) == chosen  # any iterable


def test_owner_spreads_many_sites_evenly() -> None:
    members = ["ctl-a", "ctl-b", "ctl-c", "ctl-d"]
    load = Counter(owner(f"site-{i}", members) for i in range(4000))
    assert set(load) == set(members)
    # 1000 each expected; the binomial spread is ~27, so this is far outside chance.
    assert all(850 <= n <= 1150 for n in load.values()), load


@settings(max_examples=200)
@given(
    st.sets(member_names, min_size=2, max_size=8),
    st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=40, unique=True),
    st.data(),
)
def test_removing_a_member_moves_only_its_sites(
    members: set[str], sites: list[str], data: st.DataObject
) -> None:
    gone = data.draw(st.sampled_from(sorted(members)))
    rest = members - {gone}
    for site in sites:
        before = owner(site, members)
        after = owner(site, rest)
        if before != gone:
            assert after == before
        else:
            assert after in rest
    # And adding it back moves back exactly its sites.
    assert [owner(s, rest | {gone}) for s in sites] == [owner(s, members) for s in sites]


# --- membership --------------------------------------------------------------------------------


def test_membership_changes_start_and_stop_site_runs() -> None:
    clock = Clock()
    cfg = config(group="ilma", sites=8)
    service, _ = make_service(cfg, clock)
    service.connected.set()
    everything = set(cfg.sites)
    assert set(service.runs) == everything
    kept_b = {s for s in everything if owner(s, ["ctl-a", "ctl-b"]) == "ctl-a"}
    assert kept_b  # the site names split between the two
    assert kept_b != everything
    runs = dict(service.runs)

    async def main() -> None:
        await service.on_message(member_topic("ctl-b"), member("ctl-b", NOW), None)
        assert set(service.runs) == kept_b
        assert all(service.runs[s] is runs[s] for s in kept_b)  # kept sites keep their state
        # Its own status (the retained one of this process) and repeats change nothing.
        await service.on_message(member_topic("ctl-a"), member("ctl-a", NOW), None)
        await service.on_message(member_topic("ctl-b"), member("ctl-b", NOW + 1), None)
        assert set(service.runs) == kept_b
        assert sorted(service.live_members()) == ["ctl-a", "ctl-b"]
        # A third member.
        three = {s for s in everything if owner(s, ["ctl-a", "ctl-b", "ctl-c"]) == "ctl-a"}
        await service.on_message(member_topic("ctl-c"), member("ctl-c", NOW), None)
        assert set(service.runs) == three
        # b's Will: offline; its sites come back (fresh), a's stay as they were.
        await service.on_message(
            member_topic("ctl-b"), member("ctl-b", NOW, ControllerState.OFFLINE), None
        )
        with_c = {s for s in everything if owner(s, ["ctl-a", "ctl-c"]) == "ctl-a"}
        assert set(service.runs) == with_c
        await service.on_message(
            member_topic("ctl-c"), member("ctl-c", NOW, ControllerState.OFFLINE), None
        )
        assert set(service.runs) == everything
        assert all(service.runs[s] is runs[s] for s in three)
        assert all(isinstance(service.runs[s], SiteRun) for s in everything)

    run(main)


def test_a_member_status_too_old_does_not_count() -> None:
    clock = Clock()
    cfg = config(group="ilma", sites=8)
    service, _ = make_service(cfg, clock)
    service.connected.set()
    stale = NOW - MEMBER_TIMEOUT_PERIODS * PERIOD_S - 1.0

    async def main() -> None:
        await service.on_message(member_topic("ctl-b"), member("ctl-b", stale), None)

    run(main)
    assert service.live_members() == ["ctl-a"]
    assert set(service.runs) == set(cfg.sites)


def test_membership_before_the_session_is_ready_waits_for_it() -> None:
    clock = Clock()
    cfg = config(group="ilma", sites=8)
    service, _ = make_service(cfg, clock, rebalance=False)

    async def main() -> None:
        await service.on_message(member_topic("ctl-b"), member("ctl-b", NOW), None)
        assert service.runs == {}  # learnt, but no claim before the session is ready
        await service.on_message(member_topic("ctl-x"), b"{broken", None)

    run(main)
    assert service.live_members() == ["ctl-a", "ctl-b"]
    assert service.counters.rejected == 1
    service._rebalance()
    assert set(service.runs) == {s for s in cfg.sites if owner(s, ["ctl-a", "ctl-b"]) == "ctl-a"}


# --- forwarding --------------------------------------------------------------------------------


def test_telemetry_of_another_members_site_is_forwarded_and_ingested_there() -> None:
    clock = Clock()
    cfg_a, cfg_b = config("ctl-a", group="ilma", sites=8), config("ctl-b", group="ilma", sites=8)
    a, client_a = make_service(cfg_a, clock)
    b, client_b = make_service(cfg_b, clock)
    site = next(s for s in cfg_a.sites if owner(s, ["ctl-a", "ctl-b"]) == "ctl-b")
    topic = telemetry_topic(site, "gw-a")
    payload = telemetry("gw-a", GW_A, NOW, 0)

    async def main() -> None:
        for svc, other in ((a, "ctl-b"), (b, "ctl-a")):
            svc.connected.set()
            await svc.on_message(member_topic(other), member(other, NOW), None)
        assert site not in a.runs
        assert site in b.runs
        await a.on_message(topic, payload, None)
        (fwd,) = client_a.sent
        assert fwd.topic == inbox_topic("ctl-b")
        assert fwd.payload == payload  # as received: b decodes it
        assert fwd.qos == 1
        assert prop(fwd.properties, "UserProperty") == [("topic", topic)]
        assert (a.counters.forwarded, a.counters.messages) == (1, 0)
        # b's inbox.
        await b.on_message(fwd.topic, fwd.payload, fwd.properties)
        assert b.counters.messages == 1
        assert b.runs[site].ingest.zones_of("gw-a") == sorted(z(n) for n in GW_A)
        await b.run_site(site)

    run(main)
    (cs,) = client_b.commands("gw-a", site)
    assert [c.zone for c in cs.commands] == list(GW_A)
    assert cs.controller == "ctl-b"


def test_without_a_share_group_nothing_is_forwarded() -> None:
    clock = Clock()
    service, client = make_service(config(), clock)
    service.members["ctl-b"] = NOW  # even if it heard of another process
    service.runs.clear()  # and did not run the site (yet)

    async def main() -> None:
        await send(service, "gw-a", GW_A, NOW, 0)

    run(main)
    assert client.sent == []
    assert service.counters.forwarded == 0


@pytest.mark.parametrize("case", ["member aged out", "before the first rebalance"])
def test_telemetry_is_never_forwarded_to_its_own_inbox(case: str) -> None:
    clock = Clock()
    cfg = config("ctl-a", group="ilma", sites=8)
    if case == "member aged out":
        service, client = make_service(cfg, clock)
        service.connected.set()
        service.members["ctl-b"] = NOW
        service._rebalance()
        site = next(s for s in cfg.sites if owner(s, ["ctl-a", "ctl-b"]) == "ctl-b")
        assert site not in service.runs
        # ctl-b goes silent without a Will; a few periods later it is no longer a live member.
        clock.now += (MEMBER_TIMEOUT_PERIODS + 1) * PERIOD_S
        assert service.live_members() == ["ctl-a"]
    else:
        service, client = make_service(cfg, clock, rebalance=False)
        site = next(iter(cfg.sites))  # alone, it owns every site
    topic = telemetry_topic(site, "gw-a")
    payload = telemetry("gw-a", GW_A, clock.now, 0)

    async def main() -> None:
        await service.on_message(topic, payload, None)
        # What the broker would hand back if it went to this process's inbox.
        for _ in range(3):
            looped = client.to(inbox_topic("ctl-a"))
            if looped:
                await service.on_message(looped[-1].topic, payload, looped[-1].properties)

    run(main)
    assert client.to(inbox_topic("ctl-a")) == []  # fails: forwarded to itself, over and over


# --- the rest of a session ---------------------------------------------------------------------


def test_a_duplicate_is_counted_and_recorded_once() -> None:
    clock = Clock()
    service, _ = make_service(config(), clock)

    async def main() -> None:
        await send(service, "gw-a", GW_A, NOW, 0)
        clock.now += 3.0
        await send(service, "gw-a", GW_A, NOW, 0)  # the broker's redelivery

    run(main)
    c = service.counters
    assert (c.messages, c.duplicates, c.readings) == (2, 1, 4 * len(GW_A))
    assert len(service.history) == 4 * len(GW_A)


def test_a_gateways_repeated_status_is_taken_once() -> None:
    clock = Clock()
    service, _ = make_service(config(), clock)
    online = GatewayStatus(gateway="gw-a", state=GatewayState.ONLINE, t=NOW)

    async def main() -> None:
        for _ in range(2):
            await service.on_message(gateway_status_topic(NAME, "gw-a"), encode(online), None)
        await service.on_message(gateway_status_topic(NAME, "gw-a"), b"{}", None)

    run(main)
    assert service._gateway_state == {(NAME, "gw-a"): GatewayState.ONLINE}
    assert service.counters.rejected == 1


def test_without_a_session_a_control_step_still_runs_and_records() -> None:
    clock = Clock()
    service, _ = make_service(config(), clock)

    async def main() -> None:
        await send(service, "gw-a", GW_A, NOW, 0)
        service._client = None  # the broker went away
        await service.run_site(NAME)
        await service.goodbye()
        await service._announce()

    run(main)
    assert service.counters.runs == 1
    assert service.counters.commands == 0
    assert any(r.measurement == "command" for r in expand(service.history.take(10_000)))


def test_announce_and_goodbye_are_the_retained_member_status() -> None:
    clock = Clock()
    service, client = make_service(config(group="ilma"), clock)

    async def main() -> None:
        await service._announce()
        clock.now += 5.0
        await service.goodbye()

    run(main)
    hello, bye = client.to(member_topic("ctl-a"))
    assert (hello.qos, hello.retain, bye.qos, bye.retain) == (1, True, 1, True)
    assert decode_controller_status(hello.payload).state is ControllerState.ONLINE
    assert decode_controller_status(hello.payload).period_s == PERIOD_S
    assert decode_controller_status(bye.payload).state is ControllerState.OFFLINE
    assert decode_controller_status(bye.payload).t == NOW + 5.0


def test_goodbye_on_a_broken_session_is_quiet() -> None:
    class Broken(FakeClient):
        async def publish(self, *_args: Any, **_kwargs: Any) -> None:
            raise SessionError("gone")

    service, _ = make_service(config(), Clock())
    service._client = cast("Session", Broken())
    run(service.goodbye)


def test_the_control_loop_runs_every_period_and_events_in_between() -> None:
    """Driven by the service's wake-up event and a fake monotonic clock: nothing sleeps."""
    clock = Clock()
    service, client = make_service(config(), clock)

    async def settle() -> None:
        for _ in range(10):
            await asyncio.sleep(0)

    async def main() -> None:
        await send(service, "gw-a", GW_A, NOW, 0)
        task = asyncio.create_task(service._control(), name="controller-control")
        try:
            await settle()
            # At once: the first period (every site, its heartbeat, the member status).
            assert service.counters.runs == 1
            assert service.counters.event_runs == 0
            assert len(client.to(controller_status_topic(NAME))) == 1
            assert len(client.to(member_topic("ctl-a"))) == 1
            # Within the period: a zone event runs alone, without a heartbeat.
            clock.now += 10.0
            await send(service, "gw-b", GW_B, clock.now, 0)  # new zones: an event
            await settle()
            assert (service.counters.runs, service.counters.event_runs) == (2, 1)
            assert len(client.to(controller_status_topic(NAME))) == 1
            assert len(client.commands("gw-b")) == 1
            # A wake-up with nothing to do runs nothing.
            service._wake.set()
            await settle()
            assert service.counters.runs == 2
            # The next period.
            clock.now = NOW + PERIOD_S
            service._wake.set()
            await settle()
            assert (service.counters.runs, service.counters.event_runs) == (3, 1)
            assert len(client.to(controller_status_topic(NAME))) == 2
            assert len(client.commands("gw-a")) == 2
            # After a long stall, one run, not one per missed period.
            clock.now += 10 * PERIOD_S
            service._wake.set()
            await settle()
            service._wake.set()
            await settle()
            assert service.counters.runs == 4
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    run(main)


def test_a_batch_read_together_counts_and_records_as_one_by_one() -> None:
    """What the socket delivered together (two gateways, a redelivery, a bad payload, a
    counter step) is taken as a batch: the same counts, state, history and event as singly."""
    topic_a, topic_b = telemetry_topic(NAME, "gw-a"), telemetry_topic(NAME, "gw-b")
    step = {GW_A[1]: (3.0, 0.0)}
    batch: list[Message] = [
        (topic_a, telemetry("gw-a", GW_A, NOW, 0), None),
        (topic_b, telemetry("gw-b", GW_B, NOW, 0), None),
        (topic_a, telemetry("gw-a", GW_A, NOW, 0), None),  # the broker's redelivery
        (topic_b, b"{", None),
        (topic_a, telemetry("gw-a", GW_A, NOW + 1, 1, counters=step), None),
    ]
    results = []
    for together in (True, False):
        clock = Clock()
        service, _ = make_service(config(), clock)

        async def main(service: ControllerService = service, together: bool = together) -> None:
            if together:
                await service.on_messages(batch)
            else:
                for m in batch:
                    await service.on_message(*m)

        run(main)
        run_ = service.runs[NAME]
        c = service.counters
        results.append(
            (
                (c.messages, c.duplicates, c.rejected, c.readings, len(service.history)),
                np.nan_to_num(run_.ingest.value, nan=-1.0).tolist(),
                run_.ingest.gateway_of_zone,
                sorted(run_.event_zones),
            )
        )
    assert results[0][0] == (
        4,
        1,
        1,
        4 * (2 * len(GW_A) + len(GW_B)),
        4 * (2 * len(GW_A) + len(GW_B)),
    )
    assert results[0] == results[1]


def test_a_forward_that_fails_midway_loses_nothing_already_taken() -> None:
    """The batch's telemetry of this process's own site, read before a forward to another
    member failed, is ingested and queued for history all the same (the broker has it as
    acknowledged)."""
    clock = Clock()
    service, client = make_service(config("ctl-a", group="g", sites=4), clock, rebalance=False)
    service.members["ctl-b"] = clock.now
    service._rebalance()
    service.connected.set()
    members = ["ctl-a", "ctl-b"]
    mine = [s for s in service.cfg.sites if owner(s, members) == "ctl-a"]
    theirs = [s for s in service.cfg.sites if owner(s, members) == "ctl-b"]
    assert mine
    assert theirs

    async def failing_publish(*_a: object, **_k: object) -> None:
        raise SessionError("no acknowledgement")

    client.publish = failing_publish  # type: ignore[method-assign]
    batch: list[Message] = [
        (telemetry_topic(mine[0], "gw-a"), telemetry("gw-a", GW_A, NOW, 0), None),
        (telemetry_topic(theirs[0], "gw-a"), telemetry("gw-a", GW_A, NOW, 0), None),
    ]

    async def main() -> None:
        with pytest.raises(SessionError):
            await service.on_messages(batch)

    run(main)
    assert service.counters.messages == 1
    assert len(service.history) == 4 * len(GW_A)
    assert service.runs[mine[0]].ingest.zones_of("gw-a") == sorted(z(n) for n in GW_A)
