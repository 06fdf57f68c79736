"""The server fixtures prove themselves: real brokers, databases and ptys, stopped by PID."""

from __future__ import annotations

import os
import queue
import select
import signal
import socket
import sys
from pathlib import Path
from types import TracebackType

import paho.mqtt.client as mqtt
import pytest
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write.point import Point
from influxdb_client.client.write_api import SYNCHRONOUS
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from tests import servers
from tests.fixtures_servers import MosquittoFactory, ServerProcessFactory
from tests.servers import (
    HOST,
    ManagedProcess,
    Mosquitto,
    PtyPair,
    ServerStartError,
    VictoriaMetrics,
    pid_exists,
    port_open,
    require_binary,
)

WAIT_S = 10.0  # bounds every wait for a message; never a timing assertion
PROTOCOLS = [
    pytest.param(MQTTProtocolVersion.MQTTv311, id="mqtt311"),
    pytest.param(MQTTProtocolVersion.MQTTv5, id="mqtt5"),
]


class Peer:
    """A paho client on its own network thread, collecting what arrives in queues."""

    def __init__(
        self,
        broker: Mosquitto,
        client_id: str,
        protocol: MQTTProtocolVersion,
        *,
        persistent: bool = False,
    ) -> None:
        self.broker = broker
        self.protocol = protocol
        self.persistent = persistent
        if protocol == MQTTProtocolVersion.MQTTv5:
            self.client = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol
            )
        else:
            self.client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=client_id,
                protocol=protocol,
                clean_session=not persistent,
            )
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connacks: queue.Queue[tuple[bool, bool]] = queue.Queue()
        self.subacks: queue.Queue[int] = queue.Queue()
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda _c, _u, message: self.messages.put(message)
        self.client.on_subscribe = lambda _c, _u, mid, _rc, _p: self.subacks.put(mid)

    def _on_connect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        self.connacks.put((flags.session_present, reason_code.is_failure))

    def __enter__(self) -> Peer:
        if self.protocol == MQTTProtocolVersion.MQTTv5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            # Under v5 a session ends at disconnect unless it asks to outlive it.
            properties.SessionExpiryInterval = 3600 if self.persistent else 0
            self.client.connect(
                self.broker.host,
                self.broker.port,
                clean_start=not self.persistent,
                properties=properties,
            )
        else:
            self.client.connect(self.broker.host, self.broker.port)
        self.client.loop_start()
        try:
            self.session_present, failed = self.connacks.get(timeout=WAIT_S)
            assert not failed
        except BaseException:
            # No __exit__ follows a failed __enter__: the network thread must not outlive the test.
            self.client.loop_stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def subscribe(self, topic: str) -> None:
        _, mid = self.client.subscribe(topic, qos=1)
        assert self.subacks.get(timeout=WAIT_S) == mid

    def publish(self, topic: str, payload: bytes) -> None:
        """QoS 1, returning once the broker acknowledged it (PUBACK)."""
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=WAIT_S)
        assert info.is_published()

    def receive(self, n: int) -> list[bytes]:
        return [bytes(self.messages.get(timeout=WAIT_S).payload) for _ in range(n)]


# -- mosquitto ---------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_qos1_publish_reaches_a_subscriber(
    mosquitto: Mosquitto, protocol: MQTTProtocolVersion
) -> None:
    with (
        Peer(mosquitto, "sub", protocol) as subscriber,
        Peer(mosquitto, "pub", protocol) as publisher,
    ):
        subscriber.subscribe("bldg/b1/telemetry/#")
        publisher.publish("bldg/b1/telemetry/z1", b"612")
        message = subscriber.messages.get(timeout=WAIT_S)
    assert (message.topic, message.payload, message.qos) == ("bldg/b1/telemetry/z1", b"612", 1)


@pytest.mark.parametrize("mosquitto", [{"persistence": True}], indirect=True)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_restart_keeps_the_port_and_a_persistent_session(
    mosquitto: Mosquitto, protocol: MQTTProtocolVersion
) -> None:
    with Peer(mosquitto, "controller", protocol, persistent=True) as subscriber:
        subscriber.subscribe("bldg/b1/cmd/#")
    with Peer(mosquitto, "edge1", protocol) as publisher:
        for i in range(5):
            publisher.publish(f"bldg/b1/cmd/vent{i}", f"{i}".encode())
    port, pid = mosquitto.port, mosquitto.pid

    mosquitto.restart()

    assert mosquitto.port == port
    assert mosquitto.pid != pid
    assert not pid_exists(pid)
    # No new subscription: the session and its queued messages came back from the database.
    with Peer(mosquitto, "controller", protocol, persistent=True) as subscriber:
        assert subscriber.session_present
        assert sorted(subscriber.receive(5)) == [b"0", b"1", b"2", b"3", b"4"]


def test_stop_ends_the_process_and_frees_the_port(mosquitto: Mosquitto) -> None:
    pid, port = mosquitto.pid, mosquitto.port
    assert pid_exists(pid)

    assert mosquitto.stop() == 0

    assert not pid_exists(pid)
    assert not port_open(HOST, port)
    assert "terminating" in mosquitto.log_text()


def test_kill_is_a_crash_and_start_comes_back_on_the_same_port(mosquitto: Mosquitto) -> None:
    pid, port = mosquitto.pid, mosquitto.port

    assert mosquitto.kill() == -signal.SIGKILL
    assert not pid_exists(pid)
    mosquitto.start()

    assert mosquitto.port == port
    with Peer(mosquitto, "after-crash", MQTTProtocolVersion.MQTTv5) as peer:
        peer.subscribe("t")
        peer.publish("t", b"back")
        assert peer.receive(1) == [b"back"]


def test_two_brokers_from_the_factory_are_independent(mosquitto_factory: MosquittoFactory) -> None:
    first, second = mosquitto_factory(), mosquitto_factory(persistence=True)
    assert first.port != second.port
    assert first.directory != second.directory
    second.stop()
    assert port_open(HOST, first.port)


def test_a_broker_that_cannot_start_reports_its_log(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broken", extra_config=["no_such_option 1"])
    with pytest.raises(ServerStartError, match="no_such_option"):
        broker.start()
    assert broker.returncode is not None


def test_a_port_lost_to_another_process_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        # The first "free" port is already taken, as when another xdist worker won the race.
        ports = iter([taken_port, servers.free_port()])
        monkeypatch.setattr(servers, "free_port", lambda _host=HOST: next(ports))
        with Mosquitto(tmp_path / "race") as broker:
            assert broker.port != taken_port
            assert "Address already in use" in broker.log_text()


def test_a_given_port_that_is_taken_fails_the_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        broker = Mosquitto(tmp_path / "taken", port=taken.getsockname()[1])
        with pytest.raises(ServerStartError, match="Address already in use"):
            broker.start()


# -- VictoriaMetrics ---------------------------------------------------------------------------


def test_victoria_metrics_stores_influx_writes_over_a_restart(
    victoria_metrics: VictoriaMetrics,
) -> None:
    point = Point("zone").tag("site", "s1").tag("zone", "z1").field("co2_ppm", 612.0)  # type: ignore[no-untyped-call]
    # VictoriaMetrics ignores the token; influxdb-client insists on one.
    with InfluxDBClient(url=victoria_metrics.url, token="unused", org="any") as client:  # noqa: S106
        write_api = client.write_api(write_options=SYNCHRONOUS)
        write_api.write(bucket="bms", record=point)
        write_api.close()
    expected = {"__name__": "zone_co2_ppm", "site": "s1", "zone": "z1"}

    series = victoria_metrics.wait_for_series('{__name__="zone_co2_ppm"}')
    assert [(s["metric"], s["values"]) for s in series] == [(expected, [612])]

    port = victoria_metrics.port
    victoria_metrics.restart()
    assert victoria_metrics.port == port
    series = victoria_metrics.wait_for_series('{__name__="zone_co2_ppm", zone="z1"}')
    assert [(s["metric"], s["values"]) for s in series] == [(expected, [612])]


# -- socat pty pair ----------------------------------------------------------------------------


def _read_exactly(fd: int, n: int) -> bytes:
    data = b""
    while len(data) < n:
        readable, _, _ = select.select([fd], [], [], WAIT_S)
        assert readable, f"only {len(data)} of {n} bytes arrived"
        data += os.read(fd, n - len(data))
    return data


def _open_tty(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)


def test_bytes_cross_the_pty_pair_both_ways_unchanged(pty_pair: PtyPair) -> None:
    # Every byte value, CR, LF and the Ctrl characters included: the line must be raw.
    payload = bytes(range(256))
    fd_a, fd_b = _open_tty(pty_pair.a), _open_tty(pty_pair.b)
    try:
        os.write(fd_a, payload)
        assert _read_exactly(fd_b, len(payload)) == payload
        os.write(fd_b, payload[::-1])
        assert _read_exactly(fd_a, len(payload)) == payload[::-1]
    finally:
        os.close(fd_a)
        os.close(fd_b)
    pid = pty_pair.pid
    pty_pair.stop()
    assert not pid_exists(pid)


# -- ServerProcess and the process base --------------------------------------------------------


def test_a_python_module_runs_as_a_server_process(
    server_process_factory: ServerProcessFactory,
) -> None:
    port = servers.free_port()
    process = server_process_factory(
        "http.server", ["--bind", HOST, str(port)], ready=lambda: port_open(HOST, port)
    )
    pid = process.pid
    assert process.returncode is None

    process.stop()

    assert process.returncode == -signal.SIGTERM
    assert not pid_exists(pid)
    assert f"port {port}" in process.log_text()


class _DeafToSigterm(ManagedProcess):
    name = "deaf"

    def start(self, timeout_s: float = 10.0) -> None:  # noqa: ARG002 -- no readiness to wait for
        code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
        self._spawn([sys.executable, "-c", code])


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path: Path) -> None:
    process = _DeafToSigterm(tmp_path)
    process.start()
    try:
        # Only a SIGTERM that arrives after the handler is installed shows the escalation.
        servers.wait_until(lambda: _ignores_sigterm(process.pid), WAIT_S)
        assert process.stop(timeout_s=0.2) == -signal.SIGKILL
    finally:
        process.kill()


def _ignores_sigterm(pid: int) -> bool:
    ignored_mask = 0
    for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("SigIgn:"):
            ignored_mask = int(line.split()[1], 16)
    return bool(ignored_mask & (1 << (signal.SIGTERM - 1)))


# -- require_binary ----------------------------------------------------------------------------


@pytest.fixture
def _no_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)


def test_a_missing_server_fails_the_test_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(
        pytest.fail.Exception, match=r"apt-get install ilma-no-such-server.*make test"
    ):
        require_binary("ilma-no-such-server")


@pytest.mark.usefixtures("_no_ci")
def test_a_missing_server_skips_the_test_outside_ci() -> None:
    with pytest.raises(pytest.skip.Exception, match="make test"):
        require_binary("ilma-no-such-server")


@pytest.mark.usefixtures("_no_ci")
def test_a_present_server_is_found_also_in_sbin(monkeypatch: pytest.MonkeyPatch) -> None:
    # mosquitto lives in /usr/sbin, off an ordinary user's PATH on Debian.
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert Path(require_binary("mosquitto")).name == "mosquitto"
    assert Path(require_binary("socat")).is_file()
