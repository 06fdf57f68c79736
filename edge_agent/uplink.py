"""The agent's MQTT session: telemetry up through a disk buffer, commands down, birth and Last Will.

Every telemetry message goes through the disk buffer (edge_agent.buffer) and leaves it only when
the broker has acknowledged it (QoS 1 PUBACK): one path, in order, at least once, and nothing
lost to a broker outage, a crash or a reboot. A message that waited through an outage is sent
flagged as replayed, at a bounded rate. The session reconnects forever with capped, jittered
backoff and re-announces itself (retained birth message) after every reconnect; its Last Will
tells the controller when the gateway vanishes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections.abc import Awaitable, Callable

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from controller.broker import backoff_s, tls_context
from controller.wire import (
    GatewayState,
    GatewayStatus,
    WireError,
    command_topic,
    controller_status_topic,
    decode_telemetry,
    encode,
    gateway_status_topic,
)
from edge_agent.buffer import DiskBuffer
from edge_agent.config import GatewayConfig
from edge_agent.metrics import AgentMetrics

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 10.0
BATCH = 50  # messages taken from the buffer at a time
# The broker keeps the session (subscriptions, queued commands within their expiry) this long
# across a disconnect.
SESSION_EXPIRY_S = 3600

MessageHandler = Callable[[aiomqtt.Message, float], Awaitable[None]]


def mark_replayed(payload: bytes) -> bytes:
    """The telemetry payload with every reading flagged as replayed."""
    try:
        t = decode_telemetry(payload)
    except WireError:
        return payload  # not ours to judge: send as stored
    flagged = t.readings.model_copy(update={"replayed": (True,) * len(t)})
    return encode(t.model_copy(update={"readings": flagged}))


class RateLimiter:
    """A token bucket: at most `rate` acquisitions per second, bursts up to one second's worth."""

    def __init__(self, rate: float, mono: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.mono = mono
        self.tokens = rate
        self.at = mono()

    async def acquire(self) -> None:
        while True:
            now = self.mono()
            # The bucket holds at least one token, or a rate below 1/s would never release.
            self.tokens = min(max(self.rate, 1.0), self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return
            await asyncio.sleep((1.0 - self.tokens) / self.rate)


class Uplink:
    """One MQTT session at a time, forever."""

    def __init__(
        self,
        cfg: GatewayConfig,
        buffer: DiskBuffer,
        metrics: AgentMetrics,
        on_message: MessageHandler,
        status: Callable[[], GatewayStatus],
        *,
        sensor_topics: tuple[str, ...] = (),
        clock: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self.buffer = buffer
        self.metrics = metrics
        self.on_message = on_message
        self.status = status
        self.sensor_topics = sensor_topics
        self.clock = clock
        self.mono = mono
        self.rng = rng or random.Random()  # noqa: S311  (jitter, not secrets)
        self.connected = asyncio.Event()
        self.connected_since = float("inf")  # wall time the current session began
        self._wake = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._failures = 0
        site, gw = cfg.site.site.name, cfg.name
        self.status_topic = gateway_status_topic(site, gw)
        self.command_topic = command_topic(site, gw)
        self.controller_topic = controller_status_topic(site)

    # --- telemetry in -------------------------------------------------------------------------

    async def submit(self, topic: str, payload: bytes) -> None:
        """Store a message durably; the sender takes it from there."""
        dropped = await asyncio.to_thread(self.buffer.append, [(topic, payload, 1, self.clock())])
        if dropped:  # the buffer logs when it fills up and when it has room again
            log.debug("buffer full: dropped the %d oldest messages", dropped)
        self._gauge_buffer()
        self._wake.set()

    def _gauge_buffer(self) -> None:
        self.metrics.buffer_depth.set(self.buffer.depth)
        self.metrics.buffer_dropped.set(self.buffer.dropped)

    # --- the session --------------------------------------------------------------------------

    def _client_for(self, will: aiomqtt.Will) -> aiomqtt.Client:
        b = self.cfg.file.broker
        connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        connect.SessionExpiryInterval = SESSION_EXPIRY_S
        return aiomqtt.Client(
            b.host,
            b.port,
            identifier=self.cfg.client_id(),
            username=b.username,
            password=b.password.read() if b.password else None,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=will,
            clean_start=False,
            properties=connect,
            keepalive=b.keepalive_s,
            tls_context=tls_context(b),
            timeout=PUBLISH_TIMEOUT_S,
            # Nagle's algorithm meets delayed ACKs: 40 ms stalls on small messages (bench).
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
            logger=logging.getLogger("edge_agent.mqtt"),
        )

    async def run(self) -> None:
        """Connect, serve, and reconnect after any loss, forever (until cancelled)."""
        while True:
            offline = GatewayStatus(
                gateway=self.cfg.name, state=GatewayState.OFFLINE, t=self.clock()
            )
            will = aiomqtt.Will(self.status_topic, encode(offline), qos=1, retain=True)
            try:
                async with self._client_for(will) as client:
                    await self._serve(client)
            except* aiomqtt.MqttError as group:
                self._lost(group.exceptions[0])
            finally:
                self._client = None
                self.connected.clear()
                self.connected_since = float("inf")
                self.metrics.connected.set(0)
            await asyncio.sleep(self._backoff())

    def _lost(self, exc: BaseException) -> None:
        self._failures += 1
        if self._failures == 1:
            log.warning("broker %s:%d unreachable or lost: %s; buffering on disk",
                        self.cfg.file.broker.host, self.cfg.file.broker.port, exc)  # fmt: skip
        else:
            log.debug("broker still unreachable (%d tries): %s", self._failures, exc)

    def _backoff(self) -> float:
        return backoff_s(self.cfg.file.broker, self._failures, self.rng)

    async def _serve(self, client: aiomqtt.Client) -> None:
        self._client = client
        self.connected_since = self.clock()
        if self._failures:
            log.info("broker connection back after %d failed tries", self._failures)
        self._failures = 0
        await client.subscribe(self.command_topic, qos=1)
        await client.subscribe(self.controller_topic, qos=1)
        for topic in self.sensor_topics:
            await client.subscribe(topic, qos=1)
        await self.publish_status()
        self.connected.set()
        self.metrics.connected.set(1)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._receive(client), name="uplink-receive")
            tg.create_task(self._send(client), name="uplink-send")

    async def publish_status(self) -> None:
        """The retained birth/state message (again after every reconnect and state change)."""
        client = self._client
        if client is not None:
            await client.publish(self.status_topic, encode(self.status()), qos=1, retain=True)

    async def goodbye(self) -> None:
        """A clean shutdown: say offline (the Will is only for unclean ends)."""
        client = self._client
        if client is None:
            return
        offline = GatewayStatus(gateway=self.cfg.name, state=GatewayState.OFFLINE, t=self.clock())
        try:
            await client.publish(self.status_topic, encode(offline), qos=1, retain=True, timeout=2)
        except aiomqtt.MqttError as exc:
            log.debug("could not say goodbye: %s", exc)

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            await self.on_message(message, self.mono())

    async def _send(self, client: aiomqtt.Client) -> None:
        replay_rate = RateLimiter(self.cfg.file.buffer.replay_per_s, self.mono)
        while True:
            self._wake.clear()
            batch = await asyncio.to_thread(self.buffer.peek, BATCH)
            if not batch:
                await self._wake.wait()
                continue
            sent: list[int] = []
            try:
                for m in batch:
                    # Late by more than a cycle: it waited out an outage (the first cycle of
                    # an agent, done while it connects, is not a replay).
                    replay = m.created_s < self.connected_since - self.cfg.file.gateway.cycle_s
                    if replay:
                        await replay_rate.acquire()
                    payload = mark_replayed(m.payload) if replay else m.payload
                    await client.publish(m.topic, payload, qos=m.qos, timeout=PUBLISH_TIMEOUT_S)
                    sent.append(m.id)
                    self.metrics.published.inc()
                    if replay:
                        self.metrics.replayed.inc()
            finally:
                # Acknowledged messages leave the buffer even when the session broke mid-batch.
                if sent:
                    await asyncio.to_thread(self.buffer.remove, sent)
                    self._gauge_buffer()
