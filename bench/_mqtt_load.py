"""MQTT load for bench/controller.py: a fast publisher of a prepared message stream, a bare
subscriber that only counts, and simulated gateways that time their commands.

The publisher and the counter run as processes of their own (`python -m bench._mqtt_load
publish|count ...`), so neither shares an interpreter (and its GIL) with what it measures:

- ``publish STREAM --port P``: loads the stream file, connects, prints ``ready``, waits for a
  line on stdin, publishes every message at QoS 1 as fast as paho goes (see MAX_INFLIGHT),
  waits for every PUBACK and prints one JSON line with its times (time.monotonic, which is
  one clock for all processes on Linux).
- ``count FILTER --port P --skip W --n N [--aiomqtt]``: subscribes at QoS 1 (MQTT 5, as the
  controller), prints ``ready`` at the SUBACK, counts and does nothing else with a message,
  and prints one JSON line once W + N messages are in (or at its timeout): the time and the
  CPU time of the N after the W. With paho the counting is its `on_message`; with
  `--aiomqtt` it is the controller's client and loop (`async for m in client.messages`).

A stream file holds one message a line: topic, a tab, the payload (compact JSON: no tab, no
newline).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import socket
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from controller.wire import (  # noqa: E402
    CommandSet,
    Mode,
    Quantity,
    Reading,
    Telemetry,
    command_topic,
    decode_commands,
    encode,
    telemetry_topic,
)

HOST = "127.0.0.1"
# Messages a publisher keeps unacknowledged. Small on purpose: paho's work per PUBACK grows with
# the window (measured here with 4.5 kB payloads: 20 → about 18 k msgs/s acknowledged, 1,000 →
# 10 k/s, 5,000 → 4 k/s), and 20 round trips in flight already keep loopback busy.
MAX_INFLIGHT = 20


def write_stream(path: Path, messages: Iterable[tuple[str, bytes]]) -> int:
    """Write (topic, payload) pairs to a stream file; the number written."""
    n = 0
    with path.open("wb") as f:
        for topic, payload in messages:
            f.write(topic.encode() + b"\t" + payload + b"\n")
            n += 1
    return n


def read_stream(path: Path) -> list[tuple[str, bytes]]:
    out = []
    with path.open("rb") as f:
        for line in f:
            topic, _, payload = line.rstrip(b"\n").partition(b"\t")
            out.append((topic.decode(), payload))
    return out


def new_client(client_id: str) -> mqtt.Client:
    """A paho MQTT 5 client that queues without bound and keeps MAX_INFLIGHT in flight."""
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
    )
    c.max_inflight_messages_set(MAX_INFLIGHT)
    c.max_queued_messages_set(0)  # unbounded: publish() only queues
    return c


def connect(c: mqtt.Client, port: int, timeout_s: float = 10.0) -> None:
    """Connect and start the network thread; raise TimeoutError without a CONNACK."""
    c.connect(HOST, port)
    c.loop_start()
    deadline = time.monotonic() + timeout_s
    while not c.is_connected():
        if time.monotonic() > deadline:
            c.loop_stop()
            raise TimeoutError(f"no CONNACK from 127.0.0.1:{port}")
        time.sleep(0.005)


def close(c: mqtt.Client) -> None:
    c.disconnect()
    c.loop_stop()


# --- the publisher process -----------------------------------------------------------------------


def publish_main(stream: Path, port: int) -> int:
    messages = read_stream(stream)
    c = new_client(f"bench-pub-{port}")
    connect(c, port)
    try:
        print("ready", flush=True)
        sys.stdin.readline()  # the go
        t0 = time.monotonic()
        infos = [c.publish(topic, payload, qos=1) for topic, payload in messages]
        t_queued = time.monotonic()
        for info in infos:
            info.wait_for_publish(120)
        t_acked = time.monotonic()
        acked = sum(info.is_published() for info in infos)
    finally:
        close(c)
    print(
        json.dumps(
            {
                "t0": t0,
                "t_queued": t_queued,
                "t_acked": t_acked,
                "sent": len(messages),
                "acked": acked,
            }
        ),
        flush=True,
    )
    return 0


# --- the counting subscriber processes ---------------------------------------------------------


@dataclass
class _Count:
    """Counts messages; at the first after `skip` (the warm-up) it notes the time and the CPU
    time of this process, and again once message `skip + n` is in."""

    skip: int
    n: int
    count: int = 0
    t_start: float = math.nan
    cpu_start: float = math.nan
    t_done: float = math.nan
    cpu_done: float = math.nan
    done: threading.Event = field(default_factory=threading.Event)

    def one(self) -> None:
        if self.count == self.skip:  # the first timed message
            self.t_start, self.cpu_start = time.monotonic(), time.process_time()
        self.count += 1
        if self.count == self.skip + self.n:
            self.t_done, self.cpu_done = time.monotonic(), time.process_time()
            self.done.set()

    def report(self) -> None:
        print(
            json.dumps(
                {
                    "count": self.count,
                    "t_start": self.t_start,
                    "t_done": self.t_done,
                    "cpu_s": self.cpu_done - self.cpu_start,
                }
            ),
            flush=True,
        )


def count_paho(topic_filter: str, port: int, state: _Count, timeout_s: float) -> None:
    """paho with an on_message that only counts."""

    def on_message(_c: mqtt.Client, _u: object, _m: mqtt.MQTTMessage) -> None:
        state.one()

    def on_subscribe(
        _c: mqtt.Client,
        _u: object,
        _mid: int,
        _codes: list[ReasonCode],
        _p: Properties | None,
    ) -> None:
        print("ready", flush=True)

    c = new_client(f"bench-count-{port}")
    c.on_message = on_message
    c.on_subscribe = on_subscribe
    connect(c, port)
    try:
        c.subscribe(topic_filter, qos=1)
        state.done.wait(timeout_s)
    finally:
        close(c)


async def count_aiomqtt(topic_filter: str, port: int, state: _Count, timeout_s: float) -> None:
    """aiomqtt (the controller's client, set up as the controller does) that only counts."""
    client = aiomqtt.Client(
        HOST,
        port,
        identifier=f"bench-count-aio-{port}",
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=True,
        max_queued_outgoing_messages=100_000,
    )
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s), client:
            await client.subscribe(topic_filter, qos=1)
            print("ready", flush=True)
            async for _message in client.messages:
                state.one()
                if state.done.is_set():
                    break


def count_main(
    topic_filter: str, port: int, skip: int, n: int, timeout_s: float, *, use_aiomqtt: bool
) -> int:
    state = _Count(skip, n)
    if use_aiomqtt:
        asyncio.run(count_aiomqtt(topic_filter, port, state, timeout_s))
    else:
        count_paho(topic_filter, port, state, timeout_s)
    state.report()
    return 0 if state.done.is_set() else 1


# --- simulated gateways that time their commands (in the bench's own process) -----------------


@dataclass
class Arrival:
    t: float  # time.monotonic() when paho handed the message over, before decoding
    commands: CommandSet


class GatewayFleet:
    """Gateways of one site: every zone's CO2, temperature and counters published per gateway
    every `period_s` in the background (spread over the period), one zone's counters on demand,
    and every CommandSet kept with its arrival time."""

    def __init__(
        self, port: int, site: str, zones_by_gateway: dict[str, list[str]], period_s: float = 1.0
    ) -> None:
        self.port = port
        self.site = site
        self.zones_by_gateway = zones_by_gateway
        self.period_s = period_s
        self.counters: dict[str, tuple[float, float]] = {
            z: (100.0, 100.0) for zones in zones_by_gateway.values() for z in zones
        }
        self.boot_t = time.time()
        self.published = 0
        self.background = 0  # messages of the background thread
        self._seq: dict[str, int] = defaultdict(int)
        self._rng = random.Random(7)
        self._lock = threading.Lock()  # counters, seq and publish order
        self._arrived = threading.Condition()
        self._arrivals: dict[str, list[Arrival]] = defaultdict(list)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = new_client(f"bench-gws-{site}")
        self._client.on_message = self._on_message
        # The probe is one small segment after large ones: keep Nagle's algorithm out of the
        # figure (it is the bench's gateway socket, not the controller's).
        self._client.on_socket_open = _no_delay

    def start(self) -> None:
        connect(self._client, self.port)
        for gw in self.zones_by_gateway:
            self._client.subscribe(command_topic(self.site, gw), qos=1)

    def start_background(self) -> None:
        self._thread = threading.Thread(target=self._background, name="gateway-telemetry")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        close(self._client)

    def _on_message(self, _c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        t = time.monotonic()
        gw = m.topic.split("/")[4]
        cs = decode_commands(bytes(m.payload))
        with self._arrived:
            self._arrivals[gw].append(Arrival(t, cs))
            self._arrived.notify_all()

    def arrivals(self, gw: str) -> list[Arrival]:
        with self._arrived:
            return list(self._arrivals[gw])

    def _publish(self, gw: str, readings: Sequence[Reading], now: float) -> mqtt.MQTTMessageInfo:
        msg = Telemetry.of(
            gateway=gw, boot_t=self.boot_t, seq=self._seq[gw], t=now, readings=tuple(readings)
        )
        self._seq[gw] += 1
        self.published += 1
        return self._client.publish(telemetry_topic(self.site, gw), encode(msg), qos=1)

    def publish_gateway(self, gw: str) -> mqtt.MQTTMessageInfo:
        """The gateway's every zone: CO2, temperature and both counters."""
        with self._lock:
            now = time.time()
            readings = []
            for z in self.zones_by_gateway[gw]:
                cin, cout = self.counters[z]
                people = cin - cout
                co2 = 430.0 + 60.0 * people + self._rng.gauss(0.0, 8.0)
                readings += [
                    # One CO2 sensor in fifty is away at any moment: a missing value.
                    Reading(
                        zone=z,
                        point=Quantity.CO2_PPM,
                        t=now,
                        value=None if self._rng.random() < 0.02 else round(co2, 1),
                    ),
                    Reading(
                        zone=z,
                        point=Quantity.T_ZONE_C,
                        t=now,
                        value=round(21.5 + self._rng.gauss(0.0, 0.3), 2),
                    ),
                    Reading(zone=z, point=Quantity.PEOPLE_IN, t=now, value=cin),
                    Reading(zone=z, point=Quantity.PEOPLE_OUT, t=now, value=cout),
                ]
            return self._publish(gw, readings, now)

    def publish_all(self) -> None:
        infos = [self.publish_gateway(gw) for gw in self.zones_by_gateway]
        for info in infos:
            info.wait_for_publish(10)

    def _background(self) -> None:
        gateways = list(self.zones_by_gateway)
        step = self.period_s / len(gateways)
        next_at = time.monotonic()
        while not self._stop.is_set():
            for gw in gateways:
                delay = next_at - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                self.publish_gateway(gw)
                self.background += 1
                next_at += step

    def step_zone(self, gw: str, zone: str, people: int) -> float:
        """`people` walk into `zone` (out of it when negative): its counters alone are
        published at once, as a gateway does when only they changed. The time.monotonic() of
        the publish call."""
        with self._lock:
            cin, cout = self.counters[zone]
            if people >= 0:
                cin += people
            else:
                cout -= people
            self.counters[zone] = (cin, cout)
            now = time.time()
            readings = (
                Reading(zone=zone, point=Quantity.PEOPLE_IN, t=now, value=cin),
                Reading(zone=zone, point=Quantity.PEOPLE_OUT, t=now, value=cout),
            )
            sent = time.monotonic()
            self._publish(gw, readings, now)
        return sent

    def wait_command(
        self, gw: str, zone: str, after: float, occupied: bool, timeout_s: float
    ) -> Arrival | None:
        """The first CommandSet of `gw` that arrived after `after` and commands `zone` as
        occupied (or as not occupied), or None at the timeout."""
        deadline = time.monotonic() + timeout_s
        with self._arrived:
            seen = 0
            while True:
                entries = self._arrivals[gw]
                for a in entries[seen:]:
                    if a.t >= after and _commands_zone(a.commands, zone, occupied=occupied):
                        return a
                seen = len(entries)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._arrived.wait(left)


def _commands_zone(cs: CommandSet, zone: str, *, occupied: bool) -> bool:
    return any(c.zone == zone and (c.mode is Mode.OCCUPIED) == occupied for c in cs.commands)


def _no_delay(_c: mqtt.Client, _u: object, sock: object) -> None:
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("publish", help="publish a stream file at QoS 1, as fast as paho goes")
    p.add_argument("stream", type=Path)
    p.add_argument("--port", type=int, required=True)
    c = sub.add_parser("count", help="count the messages of a topic filter (QoS 1)")
    c.add_argument("filter")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--skip", type=int, default=0, help="warm-up messages before the timed ones")
    c.add_argument("--n", type=int, required=True, help="timed messages")
    c.add_argument("--timeout", type=float, default=300.0)
    c.add_argument("--aiomqtt", action="store_true", help="count with aiomqtt instead of paho")
    args = parser.parse_args(argv)
    if args.command == "publish":
        return publish_main(args.stream, args.port)
    return count_main(
        args.filter, args.port, args.skip, args.n, args.timeout, use_aiomqtt=args.aiomqtt
    )


if __name__ == "__main__":
    sys.exit(main())
