"""The agent's MQTT session: telemetry up through a disk buffer, commands down, birth and Last Will.

Every telemetry message goes through the disk buffer (edge_agent.buffer) and leaves it only when
the broker has acknowledged it (QoS 1 PUBACK): one path, in order, at least once, and nothing
lost to a broker outage, a crash or a reboot. A message that waited through an outage is sent
flagged as replayed, at a bounded rate. The session reconnects forever with capped, jittered
backoff and re-announces itself (retained birth message) after every reconnect; its Last Will
tells the controller when the gateway vanishes.

When the buffer itself fails (disk full, I/O error, a damaged file) the agent goes on: a message
the buffer cannot take is held in memory, a bounded few, and sent live; a damaged file is moved
aside and the buffer starts anew.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import socket
import time
from collections.abc import Awaitable, Callable, Sequence

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
from edge_agent.buffer import (
    BufferCorruptError,
    Buffered,
    BufferStoreError,
    DiskBuffer,
    after_store_failure,
)
from edge_agent.config import GatewayConfig
from edge_agent.metrics import AgentMetrics

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 10.0
BATCH = 50  # messages taken from the buffer at a time
# The broker keeps the session (subscriptions, queued commands within their expiry) this long
# across a disconnect.
SESSION_EXPIRY_S = 3600
# Messages the buffer could not store, held in memory for the sender: ten minutes of telemetry at
# a 10 s cycle, a few hundred KiB at most. Past that the oldest go (counted): memory is what a
# gateway must not run out of.
UNBUFFERED_MAX = 60

Message = tuple[str, bytes, int, float]  # topic, payload, qos, created_s (as the buffer takes it)

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
        self._unbuffered: collections.deque[Message] = collections.deque()
        self._client: aiomqtt.Client | None = None
        self._failures = 0
        site, gw = cfg.site.site.name, cfg.name
        self.status_topic = gateway_status_topic(site, gw)
        self.command_topic = command_topic(site, gw)
        self.controller_topic = controller_status_topic(site)

    # --- telemetry in -------------------------------------------------------------------------

    async def submit(self, topic: str, payload: bytes) -> None:
        """Store a message durably; the sender takes it from there.

        Never raises for the buffer's sake: the cycle that calls this also writes setpoints and
        runs the fallback, which must not stop because a disk is full. A message the buffer
        cannot take is held in memory (bounded) and sent live.
        """
        message: Message = (topic, payload, 1, self.clock())
        try:
            dropped = await asyncio.to_thread(self.buffer.append, [message])
        except BufferStoreError as exc:
            await self._store_failed("append", exc)
            self._hold(message)
        else:
            if dropped:  # the buffer logs when it fills up and when it has room again
                log.debug("buffer full: dropped the %d oldest messages", dropped)
        self._gauge_buffer()
        self._wake.set()

    def _hold(self, message: Message) -> None:
        if len(self._unbuffered) >= UNBUFFERED_MAX:
            self._unbuffered.popleft()
            self.metrics.unbuffered.labels("dropped").inc()
        self._unbuffered.append(message)

    async def _store_failed(self, op: str, exc: BufferStoreError) -> None:
        corrupt = isinstance(exc, BufferCorruptError)
        await after_store_failure(
            self.metrics.store_errors, "buffer", op, exc,
            reopen=self.buffer.reopen if corrupt else None,
        )  # fmt: skip

    def _gauge_buffer(self) -> None:
        try:
            self.metrics.buffer_depth.set(self.buffer.depth)
            self.metrics.buffer_dropped.set(self.buffer.dropped)
        except BufferStoreError:  # not open after a failed reopen: the gauges keep their last
            pass

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
            await self._send_unbuffered(client, replay_rate)
            batch = await self._peek()
            if not batch:
                await self._wake.wait()
                continue
            sent: list[int] = []
            removed = True
            try:
                for m in batch:
                    await self._publish(
                        client, replay_rate, (m.topic, m.payload, m.qos, m.created_s)
                    )
                    sent.append(m.id)
            finally:
                # Acknowledged messages leave the buffer even when the session broke mid-batch.
                if sent:
                    removed = await self._remove(sent)
            if not removed:
                # They stay and go again (at least once), but not in a tight loop: one batch
                # per cycle until the buffer takes removals again.
                await self._wake.wait()

    async def _publish(
        self, client: aiomqtt.Client, replay_rate: RateLimiter, message: Message
    ) -> None:
        topic, payload, qos, created_s = message
        # Late by more than a cycle: it waited out an outage (the first cycle of an agent, done
        # while it connects, is not a replay).
        replay = created_s < self.connected_since - self.cfg.file.gateway.cycle_s
        if replay:
            await replay_rate.acquire()
        payload = mark_replayed(payload) if replay else payload
        await client.publish(topic, payload, qos=qos, timeout=PUBLISH_TIMEOUT_S)
        self.metrics.published.inc()
        if replay:
            self.metrics.replayed.inc()

    async def _send_unbuffered(self, client: aiomqtt.Client, replay_rate: RateLimiter) -> None:
        """Send the messages the buffer could not take, before what it holds: they are the
        newest, and held only in memory."""
        while self._unbuffered:
            message = self._unbuffered.popleft()
            try:
                await self._publish(client, replay_rate, message)
            except BaseException:
                # Not acknowledged: it stays first in line for the next session.
                if len(self._unbuffered) < UNBUFFERED_MAX:
                    self._unbuffered.appendleft(message)
                else:
                    self.metrics.unbuffered.labels("dropped").inc()
                raise
            self.metrics.unbuffered.labels("sent").inc()

    async def _peek(self) -> list[Buffered]:
        """The next batch, or none while the buffer cannot be read (tried again next cycle)."""
        try:
            return await asyncio.to_thread(self.buffer.peek, BATCH)
        except BufferStoreError as exc:
            await self._store_failed("peek", exc)
            return []

    async def _remove(self, ids: Sequence[int]) -> bool:
        """Remove acknowledged messages; False if the buffer would not (they will go again)."""
        try:
            await asyncio.to_thread(self.buffer.remove, ids)
        except BufferStoreError as exc:
            await self._store_failed("remove", exc)
            return False
        finally:
            self._gauge_buffer()
        return True
