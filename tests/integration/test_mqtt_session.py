"""controller.mqtt.Session against a real mosquitto: order, acknowledgements, loss, Will."""

from __future__ import annotations

import asyncio
import contextlib

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from controller.mqtt import Session, SessionError, Will
from tests.servers import Mosquitto, free_port, wait_until


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
