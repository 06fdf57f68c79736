"""An MQTT 5 session for asyncio on paho-mqtt, lean enough for the controller's telemetry rate.

aiomqtt hands every message through an asyncio queue, a future per acknowledgement and a
Message object of its own, and asks the event loop to watch the socket for writing for every
PUBACK: on the controller's telemetry stream that costs ~100 µs of CPU per message against
~45 µs for paho alone (bench/controller.py); paho on its own thread loses as much again to the
GIL. This session drives paho from the event loop itself: when the socket is readable it reads
every packet waiting (paho acknowledges each QoS 1 message as it reads it) and hands the
messages over as one batch (`batches()`), so the service pays the loop's overhead per read,
not per message. Publishes are awaited for their acknowledgement (QoS 1 PUBACK). A lost
connection ends the session with SessionError; reconnecting (with backoff) is the caller's loop,
as with aiomqtt.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import socket
import ssl
import sys
import termios
from collections import deque
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.matcher import MQTTMatcher
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from sensors.errors import IlmaError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
# Messages read in one turn of the event loop at most, then the other tasks get theirs (250
# messages take about 25 ms to ingest; the batch gains little beyond ~50).
MAX_PACKETS_PER_READ = 250
# Bytes taken from the socket per recv(): about a hundred telemetry messages.
READ_CHUNK = 256 * 1024


class SessionError(IlmaError, ConnectionError):
    """The broker connection failed or ended."""


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


# (topic, payload, properties): the MQTT 5 properties only when the message has user properties,
# else None. paho parses a Properties object (two dicts of ~30 entries) for every PUBLISH; kept
# alive in a batch of hundreds of messages they tripled the garbage collector's work (the
# controller forwards with a user property and reads none other).
Message = tuple[str, bytes, Properties | None]


class Session:
    """One connection's life: `async with Session(...) as s:`, then subscribe, publish and
    iterate `s.messages()` (or `s.batches()`); leaving the block disconnects. Everything runs
    on the event loop's thread (only the blocking TCP connect goes to an executor)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
        will: Will | None = None,
        keepalive_s: int = 30,
        session_expiry_s: int = 0,
        clean_start: bool = True,
        max_inflight: int = 1000,
    ) -> None:
        self.host, self.port = host, port
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if username is not None:
            c.username_pw_set(username, password)
        if tls is not None:
            c.tls_set_context(tls)
        if will is not None:
            c.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        c.max_inflight_messages_set(max_inflight)
        c.max_queued_messages_set(0)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        c.on_socket_open = _no_delay
        # Without this paho sends each packet the moment it is queued: a PUBACK per received
        # message, each its own send() and TCP segment. The session writes what paho queued
        # itself, after every read, publish, subscribe, keepalive and disconnect (_flush).
        c.on_socket_register_write = _written_by_session
        c._on_message_filtered = _NoTopicCallbacks()
        self._client = c
        self._keepalive_s = keepalive_s
        self._clean_start = clean_start
        self._session_expiry_s = session_expiry_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: BufferedSocket | None = None  # paho's socket, wrapped at connect
        self._connected: asyncio.Future[None] | None = None
        self._lost: asyncio.Future[None] | None = None
        self._inbox: deque[Message] = deque()
        self._inbox_ready = asyncio.Event()
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._misc: asyncio.Task[None] | None = None
        self._writing = False
        self._reread = False  # a read of what waits in the buffers is scheduled

    # --- paho's callbacks (on the loop's thread, inside loop_read) ----------------------------

    def _on_connect(
        self, _c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object
    ) -> None:
        fut = self._connected
        if fut is not None and not fut.done():
            if reason.is_failure:
                fut.set_exception(SessionError(f"{self.host}:{self.port} refused: {reason}"))
            else:
                fut.set_result(None)

    def _on_disconnect(
        self, _c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object
    ) -> None:
        self._set_lost(f"disconnected: {reason}")

    def _on_message(self, _c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        props = getattr(m, "properties", None)
        if getattr(props, "UserProperty", None) is None:
            props = None
        self._inbox.append((m.topic, bytes(m.payload), props))

    def _on_publish(
        self, _c: mqtt.Client, _u: object, mid: int, reason: ReasonCode, _p: object
    ) -> None:
        # No future: a QoS 0 publish (done when written), or one whose wait timed out. A QoS 1
        # acknowledgement cannot come before its future exists: both happen on this thread and
        # publish() registers it before it first yields.
        fut = self._acks.pop(mid, None)
        if fut is not None:
            _resolve(fut, None if not reason.is_failure else str(reason))

    # --- driving paho -------------------------------------------------------------------------

    def _readable(self) -> None:
        """Read the packets that have arrived, then write what paho still has queued."""
        c = self._client
        inbox = self._inbox
        before = len(inbox)
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        more = True
        # paho reads at most as many packets per loop_read as it has QoS > 0 messages in flight
        # (at least one): read on while bytes wait, not one packet per turn of the event loop,
        # but hand the loop back after MAX_PACKETS_PER_READ messages.
        sock = self._sock
        # The read's acknowledgements leave together in as few segments as fit, not one each
        # (on loopback the sender pays the receiver's side of every segment too).
        _cork(sock, on=True)
        try:
            while more and len(inbox) - before < MAX_PACKETS_PER_READ:
                rc = c.loop_read()
                more = rc == MQTTErrorCode.MQTT_ERR_SUCCESS and _more_to_read(self._sock)
            if inbox:
                self._inbox_ready.set()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._set_lost(f"read failed: {mqtt.error_string(rc)}")
                return
            self._flush()
        finally:
            _cork(sock, on=False)
            # Stopped at the cap (or by an exception) with bytes waiting. Those in the kernel's
            # buffer wake the reader again; those read into ours (or decrypted by TLS) would
            # not: come back for them, once (a re-read pending per read that stopped would add
            # up, turn after turn).
            if more and _buffered(sock) and self._loop and not self._reread:
                self._reread = True
                self._loop.call_soon(self._readable_again)

    def _readable_again(self) -> None:
        self._reread = False
        if _buffered(self._sock):
            self._readable()

    def _flush(self) -> None:
        """Write what paho has queued; if the socket is full, finish when it is writable."""
        c = self._client
        if not c.want_write():
            return
        rc = c.loop_write()
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._set_lost(f"write failed: {mqtt.error_string(rc)}")
            return
        loop = self._loop
        if c.want_write() and not self._writing and loop is not None and self._sock is not None:
            self._writing = True
            loop.add_writer(self._sock, self._writable)

    def _writable(self) -> None:
        c = self._client
        rc = c.loop_write()
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._set_lost(f"write failed: {mqtt.error_string(rc)}")
        if not c.want_write() or rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._stop_writing()

    def _stop_writing(self) -> None:
        if self._writing and self._loop is not None and self._sock is not None:
            self._loop.remove_writer(self._sock)
        self._writing = False

    async def _keepalive(self) -> None:
        """paho's timers: PINGREQ when idle, and a connection whose PINGRESP never came."""
        while True:
            await asyncio.sleep(1.0)
            rc = self._client.loop_misc()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._set_lost(f"keepalive: {mqtt.error_string(rc)}")
                return
            self._flush()

    def _set_lost(self, why: str) -> None:
        for fut in (self._connected, self._lost):
            if fut is not None and not fut.done():
                fut.set_exception(SessionError(f"{self.host}:{self.port} {why}"))
        self._inbox_ready.set()  # wake the reader so it sees the loss
        pending, self._acks = self._acks, {}
        for fut in pending.values():
            _resolve(fut, why)
        self._detach()

    def _detach(self) -> None:
        loop, sock = self._loop, self._sock
        if loop is not None and sock is not None and not loop.is_closed():
            loop.remove_reader(sock)
            self._stop_writing()
        self._sock = None

    async def __aenter__(self) -> Session:
        loop = self._loop = asyncio.get_running_loop()
        self._connected = loop.create_future()
        self._lost = loop.create_future()
        self._lost.add_done_callback(lambda f: f.exception())  # retrieved: no "never retrieved"
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if self._session_expiry_s:
            props.SessionExpiryInterval = self._session_expiry_s
        try:
            # The TCP (and TLS) handshake blocks: an executor thread does it, never the loop.
            rc = await loop.run_in_executor(None, self._connect_blocking, props)
        except (OSError, ValueError) as exc:
            raise SessionError(f"{self.host}:{self.port} unreachable: {exc}") from exc
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise SessionError(f"{self.host}:{self.port}: {mqtt.error_string(rc)}")
        sock = self._client.socket()
        assert isinstance(sock, BufferedSocket)  # noqa: S101  (wrapped in _connect_blocking)
        self._sock = sock
        loop.add_reader(sock, self._readable)
        self._flush()
        self._misc = loop.create_task(self._keepalive(), name="mqtt-keepalive")
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await self._connected
        except TimeoutError as exc:
            await self._close()
            raise SessionError(
                f"{self.host}:{self.port}: no CONNACK within {CONNECT_TIMEOUT_S} s"
            ) from exc
        except BaseException:
            await self._close()
            raise
        return self

    def _connect_blocking(self, props: Properties) -> MQTTErrorCode:
        c = self._client
        rc = c.connect(
            self.host,
            self.port,
            keepalive=self._keepalive_s,
            clean_start=self._clean_start,
            properties=props,
        )
        sock = c.socket()
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and sock is not None:
            # paho takes any socket-like object (its SocketLike protocol; its websocket
            # transport is one) but sets it only in connect(): the session wraps the one made.
            c._sock = BufferedSocket(sock)
        return rc

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        if self._misc is not None:
            self._misc.cancel()
            await asyncio.gather(self._misc, return_exceptions=True)
            self._misc = None
        if self._sock is not None:
            self._client.disconnect()  # queues DISCONNECT; _flush writes it
            self._flush()
        # Whoever still waits on this session (a reader of batches(), a publish waiting for
        # its acknowledgement) learns that it ended, whether or not DISCONNECT got out.
        self._set_lost("closed")
        sock = self._client.socket()
        if sock is not None:
            sock.close()
        self._loop = None

    @property
    def is_lost(self) -> bool:
        return self._lost is not None and self._lost.done()

    async def batches(self) -> AsyncGenerator[list[Message], None]:
        """The messages as they were read from the socket together, in order, until the
        session is lost (then SessionError). A consumer that takes a batch at once pays the
        event loop's overhead per read, not per message."""
        inbox = self._inbox
        while True:
            if inbox:
                batch = list(inbox)
                inbox.clear()
                yield batch
                continue
            if self._lost is not None and self._lost.done():
                self._lost.result()  # raises SessionError
            self._inbox_ready.clear()
            await self._inbox_ready.wait()

    async def messages(self) -> AsyncGenerator[Message, None]:
        """Every message, in order, until the session is lost (then SessionError)."""
        async for batch in self.batches():
            for message in batch:
                yield message

    async def subscribe(self, topic: str, qos: int = 1) -> None:
        result, _mid = self._client.subscribe(topic, qos=qos)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise SessionError(f"subscribe {topic!r}: {mqtt.error_string(result)}")
        self._flush()

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
        ack_timeout_s: float | None = 10.0,
    ) -> None:
        """Publish; with QoS 1 return when the broker acknowledged it (SessionError if it
        never does within `ack_timeout_s`)."""
        if self._lost is not None and self._lost.done():
            self._lost.result()
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise SessionError(f"publish to {topic!r}: {mqtt.error_string(info.rc)}")
        if qos == 0:
            self._flush()
            return
        assert self._loop is not None  # noqa: S101  (inside the session)
        fut: asyncio.Future[None] = self._loop.create_future()
        # Registered before the write: a write that fails resolves it (with the loss).
        self._acks[info.mid] = fut
        self._flush()
        try:
            async with asyncio.timeout(ack_timeout_s):
                await fut
        except TimeoutError as exc:
            self._acks.pop(info.mid, None)
            raise SessionError(f"no acknowledgement for {topic!r} in {ack_timeout_s} s") from exc


class _NoTopicCallbacks(MQTTMatcher):
    """paho's registry of per-topic callbacks (message_callback_add; the session has none),
    answering that it is empty without work. paho asks it about every message it receives,
    and the stock matcher answers with a generator that refers to itself: a reference cycle per
    message, left to the cyclic garbage collector (bench/controller.py: with it, ~8 µs more CPU
    per telemetry message, and young collections of 20-40 ms)."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]

    def __setitem__(self, key: str, value: object) -> None:
        raise NotImplementedError("controller.mqtt.Session takes no per-topic callbacks")

    def iter_match(self, topic: str) -> Iterator[object]:  # noqa: ARG002  (paho's signature)
        return iter(())


class BufferedSocket:
    """paho's socket, read in large chunks: paho reads a packet in three or four recv() calls
    (the type byte, each byte of the length, the rest), each a system call; this serves them
    from one recv_into() of up to READ_CHUNK bytes (bench/controller.py: ~4 µs less CPU per
    telemetry message, with the writer's larger batches). Writes and everything else go to the
    socket."""

    def __init__(self, sock: Any) -> None:  # noqa: ANN401  (paho's socket type)
        self.sock = sock
        # Read into one buffer made once (a fresh 256 KiB object per recv() would be mmapped
        # and unmapped by malloc every time).
        self._buf = bytearray(READ_CHUNK)
        self._view = memoryview(self._buf)
        self._pos = self._end = 0

    @property
    def buffered(self) -> int:
        """Bytes read from the socket and not yet taken."""
        return self._end - self._pos

    def recv(self, size: int) -> bytes:
        pos = self._pos
        if pos >= self._end:
            # Nothing waiting raises BlockingIOError (ssl: SSLWantReadError), which paho expects.
            self._end = self.sock.recv_into(self._view)
            self._pos = pos = 0
            if self._end == 0:
                return b""  # the peer closed
        out = bytes(self._view[pos : min(pos + size, self._end)])
        self._pos = pos + len(out)
        return out

    def pending(self) -> int:
        """Bytes readable without waiting for the network (paho's name, from ssl)."""
        inner = self.sock.pending() if isinstance(self.sock, ssl.SSLSocket) else 0
        return self.buffered + inner

    def send(self, data: bytes | bytearray) -> int:
        return int(self.sock.send(data))

    def fileno(self) -> int:
        return int(self.sock.fileno())

    def close(self) -> None:
        self.sock.close()

    def setblocking(self, flag: bool) -> None:
        self.sock.setblocking(flag)

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.sock.setsockopt(level, option, value)


def _buffered(sock: BufferedSocket | None) -> bool:
    """Whether bytes wait above the kernel: in the session's read buffer, or decrypted by TLS."""
    return sock is not None and sock.pending() > 0


def _more_to_read(sock: BufferedSocket | None) -> bool:
    """Whether bytes are waiting: in the session's buffer, the TLS layer's, or the kernel's."""
    if sock is None:
        return False
    if sock.pending():
        return True
    waiting = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    return int.from_bytes(waiting, sys.byteorder) > 0


def _written_by_session(_c: mqtt.Client, _u: object, _sock: object) -> None:
    """paho's hook for an external loop to watch for writability: the session flushes itself."""


def _cork(sock: BufferedSocket | None, *, on: bool) -> None:
    """Hold small writes back while on (Linux TCP_CORK); turning it off sends what is held."""
    cork = getattr(socket, "TCP_CORK", None)
    if sock is None or cork is None:
        return
    with contextlib.suppress(OSError):  # a socket already closed: nothing to hold or send
        sock.setsockopt(socket.IPPROTO_TCP, cork, 1 if on else 0)


def _no_delay(_c: mqtt.Client, _u: object, sock: Any) -> None:  # noqa: ANN401  (paho's socket type)
    # Nagle's algorithm meets delayed ACKs: 40 ms stalls on small messages.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _resolve(fut: asyncio.Future[None], error: str | None) -> None:
    if fut.done():
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(SessionError(error))
