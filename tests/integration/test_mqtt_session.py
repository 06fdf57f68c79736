"""controller.mqtt.Session against a real mosquitto: order, acknowledgements, loss, Will."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ssl
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import trustme
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from controller import mqtt as session_module
from controller.mqtt import BufferedSocket, Session, SessionError, Will
from tests.fixtures_servers import MosquittoFactory
from tests.servers import Mosquitto, free_port, port_open, wait_until


def _session(port: int, name: str = "s1", **kw: object) -> Session:
    return Session("127.0.0.1", port, client_id=name, keepalive_s=5, **kw)  # type: ignore[arg-type]


def test_messages_arrive_in_order_and_publishes_are_acknowledged(mosquitto: Mosquitto) -> None:
    n = 3000

    async def main() -> list[bytes]:
        async with (
            _session(mosquitto.port, "reader") as reader,
            _session(mosquitto.port, "writer") as writer,
        ):
            await reader.subscribe("t/#", qos=1)
            await asyncio.sleep(0.2)  # the SUBACK
            # Concurrent QoS 1 publishes, each awaited for its PUBACK.
            await asyncio.gather(
                *(writer.publish(f"t/{i % 7}", str(i).encode(), qos=1) for i in range(n))
            )
            got: list[bytes] = []
            async with asyncio.timeout(20), contextlib.aclosing(reader.messages()) as stream:
                async for _topic, payload, _props in stream:
                    got.append(payload)
                    if len(got) == n:
                        break
            return got

    got = asyncio.run(main())
    assert [int(p) for p in got] == list(range(n))


def test_a_broker_that_goes_away_ends_the_session(mosquitto: Mosquitto) -> None:
    async def main() -> None:
        async with _session(mosquitto.port) as s:
            await s.subscribe("x", qos=1)
            mosquitto.stop()

            async def read_all() -> None:
                async with asyncio.timeout(15):
                    async for _ in s.messages():
                        pass

            with pytest.raises(SessionError):
                await read_all()
            with pytest.raises(SessionError):
                await s.publish("x", b"1", qos=1)

    asyncio.run(main())


def test_no_broker_is_a_session_error() -> None:
    async def main() -> None:
        with pytest.raises(SessionError):
            async with _session(free_port()):
                pass

    asyncio.run(main())


def test_the_will_is_published_when_the_session_dies(mosquitto: Mosquitto) -> None:
    seen: list[bytes] = []
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="watcher", protocol=mqtt.MQTTv5)
    watcher.on_message = lambda _c, _u, m: seen.append(bytes(m.payload))
    watcher.connect("127.0.0.1", mosquitto.port)
    watcher.loop_start()
    try:
        wait_until(watcher.is_connected, 10)
        watcher.subscribe("will/topic", qos=1)

        async def main() -> None:
            s = _session(mosquitto.port, "mortal", will=Will("will/topic", b"gone", retain=False))
            await s.__aenter__()
            # Die without a DISCONNECT: close the socket under paho's feet.
            sock = s._client.socket()
            assert sock is not None
            sock.close()
            await asyncio.sleep(0.5)
            await s.__aexit__(None, None, None)

        asyncio.run(main())
        wait_until(lambda: seen == [b"gone"], 10, message="the Will")
    finally:
        watcher.loop_stop()
        watcher.disconnect()


def test_a_broker_that_accepts_but_never_answers_is_a_session_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A plain SessionError (what the controller retries with backoff), not a TimeoutError
    that would end the service."""
    monkeypatch.setattr("controller.mqtt.CONNECT_TIMEOUT_S", 0.3)

    async def main() -> None:
        held: list[asyncio.StreamWriter] = []

        async def mute(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            held.append(w)  # accept, read nothing, answer nothing

        server = await asyncio.start_server(mute, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(SessionError, match="no CONNACK"):
                async with _session(port):
                    pass
        finally:
            for w in held:
                w.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def test_closing_the_session_ends_its_reader(mosquitto: Mosquitto) -> None:
    async def main() -> None:
        async with _session(mosquitto.port) as s:
            await s.subscribe("x", qos=1)

            async def read_all() -> None:
                async for _ in s.batches():
                    pass

            reader = asyncio.create_task(read_all())
            await asyncio.sleep(0.1)
        with pytest.raises(SessionError):
            async with asyncio.timeout(5):
                await reader

    asyncio.run(main())


async def _read(s: Session, n: int, timeout_s: float = 20) -> list[bytes]:
    got: list[bytes] = []
    async with asyncio.timeout(timeout_s), contextlib.aclosing(s.messages()) as stream:
        async for _topic, payload, _props in stream:
            got.append(payload)
            if len(got) == n:
                break
    return got


def _publish_all(port: int, messages: list[tuple[str, bytes]]) -> None:
    """Publish with a plain paho client (QoS 1), waiting for every acknowledgement."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bulk", protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(100)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        infos = [c.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(20)
    finally:
        c.loop_stop()
        c.disconnect()


def test_what_waits_in_the_read_buffer_past_the_read_cap_is_still_delivered(
    mosquitto: Mosquitto,
) -> None:
    """Many small messages land in one read chunk; the session hands over at most
    MAX_PACKETS_PER_READ per turn, and with the kernel's buffer empty nothing would wake it for
    the rest: it must come back for them itself."""
    n = 10 * session_module.MAX_PACKETS_PER_READ
    # No keepalive traffic within the test: a PINGRESP would wake the reader and hide a stall.
    reader_session = Session("127.0.0.1", mosquitto.port, client_id="reader", keepalive_s=60)

    async def main() -> list[bytes]:
        async with reader_session as reader:
            await reader.subscribe("t/#", qos=1)
            await asyncio.sleep(0.2)  # the SUBACK
            assert isinstance(reader._client.socket(), BufferedSocket)
            # Block the loop: everything arrives while nobody reads, then in one recv().
            _publish_all(mosquitto.port, [("t/a", str(i).encode()) for i in range(n)])
            time.sleep(0.3)  # noqa: ASYNC251  (blocking the loop is the point)
            return await _read(reader, n, timeout_s=10)

    assert [int(p) for p in asyncio.run(main())] == list(range(n))


def test_a_message_larger_than_a_read_chunk_arrives_whole(mosquitto: Mosquitto) -> None:
    big = bytes(range(256)) * (3 * session_module.READ_CHUNK // 256 + 7)
    messages = [("t/a", b"before"), ("t/b", big), ("t/a", b"after")]

    async def main() -> list[bytes]:
        async with _session(mosquitto.port, "reader") as reader:
            await reader.subscribe("t/#", qos=1)
            await asyncio.sleep(0.2)
            _publish_all(mosquitto.port, messages)
            return await _read(reader, 3)

    assert asyncio.run(main()) == [m for _, m in messages]


@pytest.fixture
def tls_broker(
    mosquitto_factory: MosquittoFactory, tmp_path: Path
) -> tuple[Mosquitto, int, ssl.SSLContext]:
    """A mosquitto with a TLS listener too (a throwaway CA's certificate for 127.0.0.1), and a
    client context that trusts that CA."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "server.pem", tmp_path / "server.key"
    cafile = tmp_path / "ca.pem"
    cert.private_key_pem.write_to_path(str(keyfile))
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    ca.cert_pem.write_to_path(str(cafile))
    tls_port = free_port()
    broker = mosquitto_factory(
        extra_config=[
            f"listener {tls_port} 127.0.0.1",
            f"certfile {certfile}",
            f"keyfile {keyfile}",
            f"cafile {cafile}",
        ]
    )
    wait_until(lambda: port_open("127.0.0.1", tls_port), 10, message="the TLS listener")
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return broker, tls_port, ctx


def test_a_tls_session_delivers_everything_in_order(
    tls_broker: tuple[Mosquitto, int, ssl.SSLContext],
) -> None:
    """A session over TLS: many small messages that arrive while the loop is blocked, one
    larger than a read chunk (many TLS records), and a publish acknowledged over TLS, all in
    order. (mosquitto sends a TLS record per packet, and a record is read whole, so the TLS
    layer itself rarely holds bytes back here; the plain tests cover the session's buffer.)"""
    broker, tls_port, ctx = tls_broker
    # No keepalive traffic within the test: a PINGRESP would wake the reader and hide a stall.
    reader_session = Session("127.0.0.1", tls_port, client_id="reader", keepalive_s=60, tls=ctx)
    n = 4 * session_module.MAX_PACKETS_PER_READ
    big = b"x" * (2 * session_module.READ_CHUNK + 3)
    messages = [("t/a", str(i).encode()) for i in range(n)] + [("t/b", big), ("t/a", b"end")]

    async def main() -> list[bytes]:
        async with (
            reader_session as reader,
            _session(tls_port, "writer", tls=ctx) as writer,
        ):
            await reader.subscribe("t/#", qos=1)
            await asyncio.sleep(0.2)
            _publish_all(broker.port, messages)  # in through the plain listener
            time.sleep(0.3)  # noqa: ASYNC251  (blocking the loop is the point)
            got = await _read(reader, len(messages))
            await writer.publish("t/a", b"over tls", qos=1)  # acknowledged over TLS
            got += await _read(reader, 1)
            return got

    got = asyncio.run(main())
    assert got == [m for _, m in messages] + [b"over tls"]


def test_user_properties_come_with_the_message_and_plain_messages_carry_none(
    mosquitto: Mosquitto,
) -> None:
    async def main() -> list[tuple[bytes, Properties | None]]:
        async with (
            _session(mosquitto.port, "reader") as reader,
            _session(mosquitto.port, "writer") as writer,
        ):
            await reader.subscribe("t/#", qos=1)
            await asyncio.sleep(0.2)
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.UserProperty = [("topic", "ilma/v1/a/gw/b/telemetry")]
            await writer.publish("t/a", b"tagged", qos=1, properties=props)
            await writer.publish("t/a", b"plain", qos=1)
            got: list[tuple[bytes, Properties | None]] = []
            async with asyncio.timeout(10), contextlib.aclosing(reader.messages()) as stream:
                async for _topic, payload, properties in stream:
                    got.append((payload, properties))
                    if len(got) == 2:
                        break
            return got

    (tagged, tagged_props), (plain, plain_props) = asyncio.run(main())
    assert tagged == b"tagged"
    assert tagged_props is not None
    assert getattr(tagged_props, "UserProperty", None) == [("topic", "ilma/v1/a/gw/b/telemetry")]
    assert (plain, plain_props) == (b"plain", None)


def test_a_steady_stream_is_read_in_batches_the_size_of_the_read_cap(
    mosquitto: Mosquitto,
) -> None:
    """A consumer slower than the stream: each turn of the loop reads at most a read's worth
    from the socket and one from the session's buffer, so batches stay near the cap and the
    loop's turns stay short (re-reads of the buffer once piled up, a turn longer each time)."""
    cap = session_module.MAX_PACKETS_PER_READ
    n = 40 * cap
    payload = b"x" * 2000

    async def main() -> list[int]:
        sizes: list[int] = []
        async with _session(mosquitto.port, "reader") as reader:
            await reader.subscribe("t/#", qos=1)
            await asyncio.sleep(0.2)
            loop = asyncio.get_running_loop()
            publishing = loop.run_in_executor(
                None, _publish_all, mosquitto.port, [("t/a", payload)] * n
            )
            async with asyncio.timeout(60):
                async for batch in reader.batches():
                    sizes.append(len(batch))
                    time.sleep(len(batch) * 50e-6)  # noqa: ASYNC251  (a consumer's work)
                    if sum(sizes) >= n:
                        break
            await publishing
        return sizes

    sizes = asyncio.run(main())
    assert sum(sizes) == n
    assert max(sizes) <= 2 * cap, sizes


def test_receiving_messages_leaves_no_cyclic_garbage(mosquitto: Mosquitto) -> None:
    """Garbage here is freed by reference counting; paho's topic matcher made a reference cycle
    per message, each for the cyclic collector to find."""
    n = 2000

    async def main() -> int:
        async with _session(mosquitto.port, "reader") as reader:
            await reader.subscribe("t/#", qos=1)
            await asyncio.sleep(0.2)
            loop = asyncio.get_running_loop()
            gc.collect()
            gc.disable()
            try:
                publishing = loop.run_in_executor(
                    None, _publish_all, mosquitto.port, [("t/a", b"x")] * n
                )
                got = 0
                async with asyncio.timeout(30):
                    async for batch in reader.batches():
                        got += len(batch)
                        if got >= n:
                            break
                await publishing
                return gc.collect()
            finally:
                gc.enable()

    assert asyncio.run(main()) < n // 10
