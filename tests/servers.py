"""Real servers for integration tests: started on free loopback ports, stopped by their PID."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[1]

_T = TypeVar("_T")

# The Debian package that ships each server binary, for the message that tells how to get it.
APT_PACKAGES: Mapping[str, str] = {
    "mosquitto": "mosquitto",
    "socat": "socat",
    "victoria-metrics": "victoria-metrics",
}
# mosquitto lives in /usr/sbin, which is not on an ordinary user's PATH on Debian.
_SBIN_DIRS = "/usr/local/sbin:/usr/sbin:/sbin"
# A second free port is drawn when a server loses the race for its port to another xdist worker.
_PORT_ATTEMPTS = 3
_ADDRESS_IN_USE = "address already in use"
_LOG_TAIL_CHARS = 4000
# A SIGKILLed process is gone within milliseconds; this only bounds a hang (D state, say).
_REAP_TIMEOUT_S = 30.0


class ServerStartError(RuntimeError):
    """A server process exited or did not become ready in time."""


def in_ci() -> bool:
    """Whether this run is a CI run, where a missing server is a failure rather than a skip."""
    # Exactly what CI services set, and what .ci/run and the Makefile's `servers` target test.
    return os.environ.get("CI") == "true"


def require_binary(name: str) -> str:
    """Return the path of the server binary `name`; fail the test in CI and skip it elsewhere."""
    path = shutil.which(name) or shutil.which(name, path=_SBIN_DIRS)
    if path is not None:
        return path
    package = APT_PACKAGES.get(name, name)
    message = (
        f"server binary {name!r} not found: install the Debian package {package!r} "
        f"(apt-get install {package}); `make test` installs it"
    )
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def free_port(host: str = HOST) -> int:
    """A TCP port free on `host` right now (the kernel's choice; another process may take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    predicate: Callable[[], _T],
    timeout_s: float = 10.0,
    interval_s: float = 0.05,
    message: str = "condition",
) -> _T:
    """Poll `predicate` until it returns a truthy value and return that value.

    Raises TimeoutError after `timeout_s`; the deadline only bounds the wait, nothing asserts on it.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{message} not met within {timeout_s} s")
        time.sleep(interval_s)


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether a TCP connection to (host, port) is accepted."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout_s: float = 10.0) -> None:
    """Wait until (host, port) accepts TCP connections; raise TimeoutError otherwise."""
    wait_until(lambda: port_open(host, port), timeout_s, message=f"port {host}:{port} open")


def pid_exists(pid: int) -> bool:
    """Whether a process with this PID exists (zombies count: they are not reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tail(text: str) -> str:
    return text if len(text) <= _LOG_TAIL_CHARS else "…" + text[-_LOG_TAIL_CHARS:]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


# Every process still running when the interpreter exits is killed: a pytest run that dies
# between a fixture's start and its finalizer must not leave servers behind.
_LIVE: weakref.WeakSet[ManagedProcess] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for process in list(_LIVE):
        with contextlib.suppress(OSError):
            process.kill()


class ManagedProcess:
    """One child process in its own session, with its output in files in its own directory.

    Subclasses build the command line and say when the process is ready. `stop()` sends SIGTERM
    to the PID, escalates to SIGKILL after a timeout, always reaps, and raises if the process
    is still there. Start and stop again as often as needed: the directory and port stay.
    """

    name = "process"

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.stdout_path = self.directory / f"{self.name}.stdout"
        self.stderr_path = self.directory / f"{self.name}.stderr"
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the process and wait until it is ready."""
        raise NotImplementedError

    def _spawn(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if self.is_running:
            raise ServerStartError(f"{self.name} already running as PID {self.pid}")
        # Appending keeps the output of earlier runs when a test restarts the server.
        with (
            self.stdout_path.open("ab") as out,
            self.stderr_path.open("ab") as err,
        ):
            # A session of its own: a Ctrl-C to pytest reaches pytest, which then stops the
            # servers through the fixtures, instead of killing them first.
            self._proc = subprocess.Popen(  # noqa: S603 -- argv is built here, never from input
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=cwd if cwd is not None else self.directory,
                env=dict(env) if env is not None else None,
                start_new_session=True,
            )
        _LIVE.add(self)

    def _wait_ready(self, ready: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Wait until `ready()` holds; stop waiting as soon as the process exits."""

        def check() -> bool:
            if self.returncode is not None:
                raise ServerStartError(
                    f"{self.name} exited with code {self.returncode} before {what}:\n"
                    + _tail(self.log_text())
                )
            return ready()

        try:
            wait_until(check, timeout_s, message=f"{self.name} {what}")
        except TimeoutError as exc:
            self.kill()
            raise ServerStartError(f"{exc}:\n{_tail(self.log_text())}") from exc

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM by PID, SIGKILL after `timeout_s`; return the exit code (None: never started)."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        return self._reap()

    def kill(self) -> int | None:
        """SIGKILL by PID, as in a crash; return the exit code (None if never started)."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        return self._reap()

    def restart(self, timeout_s: float = 10.0) -> None:
        """Stop gracefully and start again with the same directory (and port, for servers)."""
        self.stop(timeout_s)
        self.start(timeout_s)

    def _reap(self) -> int | None:
        """Wait for the exit of a process that was signalled or has exited; raise if it stays."""
        proc = self._proc
        if proc is None:
            return None
        try:
            code = proc.wait(timeout=_REAP_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise ServerStartError(f"{self.name} PID {proc.pid} survived SIGKILL") from exc
        # Whatever the process forked into its process group goes with it. The group outlives
        # the leader only while such orphans exist, so this cannot hit an unrelated process.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        _LIVE.discard(self)
        return code

    # -- state ---------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        """PID of the latest run; raises if the process was never started."""
        if self._proc is None:
            raise ServerStartError(f"{self.name} was never started")
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """Exit code of the latest run, None while it runs (or if never started)."""
        return None if self._proc is None else self._proc.poll()

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _output_paths(self) -> list[Path]:
        """The files the process writes its output to, in the order `log_text()` joins them."""
        return [self.stdout_path, self.stderr_path]

    def log_text(self) -> str:
        """Everything the process wrote to its output files, over all its runs."""
        return "".join(_read_text(path) for path in self._output_paths())

    def _output_sizes(self) -> dict[Path, int]:
        return {path: path.stat().st_size if path.exists() else 0 for path in self._output_paths()}

    def _output_since(self, sizes: Mapping[Path, int]) -> str:
        """What was written to the output files after `sizes` was taken (the latest run)."""
        parts = []
        for path in self._output_paths():
            with contextlib.suppress(FileNotFoundError), path.open("rb") as file:
                file.seek(sizes.get(path, 0))
                parts.append(file.read().decode("utf-8", errors="replace"))
        return "".join(parts)

    # -- context manager -----------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self._proc.pid}" if self._proc is not None else "not started"
        return f"<{type(self).__name__} {state} running={self.is_running} dir={self.directory}>"


class _TcpServer(ManagedProcess):
    """A server on one TCP port: a free one is drawn unless given, and kept across restarts."""

    def __init__(self, directory: Path, port: int | None = None, host: str = HOST) -> None:
        super().__init__(directory)
        self.host = host
        self._port = port if port is not None else free_port(host)
        # Once a port is given or has been served on, restarts keep it: clients reconnect to it.
        self._port_fixed = port is not None

    @property
    def port(self) -> int:
        return self._port

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Write config files for the current port before each spawn."""

    def start(self, timeout_s: float = 10.0) -> None:
        for attempt in range(_PORT_ATTEMPTS):
            self._prepare()
            sizes = self._output_sizes()
            self._spawn(self._argv())
            try:
                self._wait_ready(self._ready, timeout_s, f"ready on port {self._port}")
            except ServerStartError:
                lost_port_race = _ADDRESS_IN_USE in self._output_since(sizes).lower()
                if self._port_fixed or not lost_port_race or attempt == _PORT_ATTEMPTS - 1:
                    raise
                self._port = free_port(self.host)
            else:
                self._port_fixed = True
                return


class Mosquitto(_TcpServer):
    """A mosquitto 2.0 broker on 127.0.0.1, anonymous, MQTT v5 and v3.1.1.

    `extra_config` lines are appended to the generated config (for example `autosave_interval 1`
    so that a `kill()` loses less persisted state). Without it a SIGKILL loses what was not saved,
    as in a real crash; a SIGTERM (`stop()`) saves the persistence database.
    """

    name = "mosquitto"

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        persistence: bool = False,
        extra_config: Iterable[str] = (),
        binary: str | None = None,
    ) -> None:
        super().__init__(directory, port)
        self.persistence = persistence
        self.extra_config = list(extra_config)
        self.binary = binary if binary is not None else require_binary("mosquitto")
        self.config_path = self.directory / "mosquitto.conf"
        self.log_path = self.directory / "mosquitto.log"
        self.data_dir = self.directory / "data"
        self.data_dir.mkdir(exist_ok=True)

    def _prepare(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            # Started as root, mosquitto would switch to user `mosquitto`, which can neither
            # enter pytest's 0700 tmp dirs nor write the log and database there. The option has
            # no effect for other users.
            "user root",
            # The default of 1000 queued messages per client silently drops a fast QoS 1 stream.
            "max_queued_messages 100000",
            # Without it small messages can wait 40 ms for a delayed ACK (Nagle).
            "set_tcp_nodelay true",
            f"log_dest file {self.log_path}",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.data_dir}",
            *self.extra_config,
        ]
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _argv(self) -> list[str]:
        return [self.binary, "-c", str(self.config_path)]

    def _ready(self) -> bool:
        # An open port is not enough: the broker must answer a CONNECT with a CONNACK. A short
        # probe, retried: a port taken by another process may accept and then never answer.
        return mqtt_connack(self.host, self.port, timeout_s=0.5)

    def _output_paths(self) -> list[Path]:
        # The broker log, then stdout and stderr (errors from before the log file was opened).
        return [self.log_path, *super()._output_paths()]


def mqtt_connack(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """Whether an MQTT broker at (host, port) accepts a v3.1.1 CONNECT; no thread involved."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"ilma-probe-{uuid.uuid4().hex[:12]}",
        protocol=MQTTProtocolVersion.MQTTv311,
    )
    try:
        client.connect(host, port, keepalive=10)
    except OSError:
        return False
    try:
        deadline = time.monotonic() + timeout_s
        while not client.is_connected() and time.monotonic() < deadline:
            if client.loop(timeout=0.05) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return False
        return client.is_connected()
    finally:
        client.disconnect()
        # disconnect() only closes the socket once DISCONNECT went out; make sure it is closed.
        sock = client.socket()
        if sock is not None:
            sock.close()


def _http_get(url: str, timeout_s: float = 5.0) -> bytes:
    if not url.startswith(f"http://{HOST}:"):
        raise ValueError(f"only loopback HTTP here, not {url!r}")
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 -- checked above
        body: bytes = response.read()
        return body


class VictoriaMetrics(_TcpServer):
    """A VictoriaMetrics single node that takes InfluxDB line protocol (v1 and v2 write APIs).

    Read back with `export()` (the PromQL/export API); Flux is not supported. Written data shows
    up only after a delay: use `wait_for_series()`, which flushes and polls.
    """

    name = "victoria-metrics"

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        extra_args: Iterable[str] = (),
        binary: str | None = None,
    ) -> None:
        super().__init__(directory, port)
        self.extra_args = list(extra_args)
        self.binary = binary if binary is not None else require_binary("victoria-metrics")
        self.data_dir = self.directory / "data"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _argv(self) -> list[str]:
        return [
            self.binary,
            f"-httpListenAddr={self.host}:{self.port}",
            f"-storageDataPath={self.data_dir}",
            "-retentionPeriod=100y",
            # Without it /api/v1/query hides the last 30 s, which is all a test has.
            "-search.latencyOffset=0s",
            "-search.disableCache",
            *self.extra_args,
        ]

    def _ready(self) -> bool:
        try:
            return _http_get(f"{self.url}/health", timeout_s=1.0).strip() == b"OK"
        except (OSError, urllib.error.URLError):
            return False

    def force_flush(self) -> None:
        """Make recently written samples searchable sooner (about 1 s instead of up to 10 s)."""
        _http_get(f"{self.url}/internal/force_flush")

    def export(self, match: str) -> list[dict[str, Any]]:
        """All series matching the selector, e.g. `{__name__="zone_co2_ppm"}`, one dict each:
        {"metric": {labels}, "values": [...], "timestamps": [ms, ...]}."""
        query = urllib.parse.urlencode({"match[]": match})
        body = _http_get(f"{self.url}/api/v1/export?{query}")
        return [json.loads(line) for line in body.decode("utf-8").splitlines() if line.strip()]

    def wait_for_series(
        self,
        match: str,
        predicate: Callable[[list[dict[str, Any]]], bool] | None = None,
        timeout_s: float = 30.0,
        interval_s: float = 0.2,
    ) -> list[dict[str, Any]]:
        """Flush and export until `predicate(series)` holds (default: any series); return them."""
        check = predicate if predicate is not None else bool
        found: list[list[dict[str, Any]]] = []

        def poll() -> bool:
            self.force_flush()
            series = self.export(match)
            if check(series):
                found.append(series)
                return True
            return False

        wait_until(poll, timeout_s, interval_s, message=f"series {match} in {self.url}")
        return found[-1]


class PtyPair(ManagedProcess):
    """Two pseudo-terminals joined by socat: what one end writes, the other end reads.

    For Modbus RTU without hardware: the server opens `a`, the client opens `b`. A pty has
    no baud timing, so it is much faster than a real bus.
    """

    name = "socat"

    def __init__(self, directory: Path, *, binary: str | None = None) -> None:
        super().__init__(directory)
        self.binary = binary if binary is not None else require_binary("socat")
        self.a = self.directory / "ttyA"
        self.b = self.directory / "ttyB"

    def start(self, timeout_s: float = 10.0) -> None:
        argv = [
            self.binary,
            "-d",
            "-d",
            f"pty,raw,echo=0,link={self.a}",
            f"pty,raw,echo=0,link={self.b}",
        ]
        self._spawn(argv)

        def ready() -> bool:
            # The links appear before socat relays; its transfer-loop log line comes after both.
            return (
                self.a.exists()
                and self.b.exists()
                and "starting data transfer loop" in _read_text(self.stderr_path)
            )

        self._wait_ready(ready, timeout_s, "linked both ptys")


class ServerProcess(ManagedProcess):
    """`python -m module *args` as a child process (edge agent daemon, virtual devices).

    It runs with this interpreter, from the repository root (so `-m tests.…` modules import),
    unbuffered, with stdout and stderr in files in `directory`. `ready`, if given, is polled
    after the spawn until it returns True (for example `lambda: port_open(HOST, port)`).
    """

    def __init__(
        self,
        module: str,
        args: Sequence[str] = (),
        *,
        directory: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        self.name = module.rsplit(".", 1)[-1]
        super().__init__(directory)
        self.module = module
        self.args = list(args)
        self.cwd = cwd if cwd is not None else REPO_ROOT
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.ready = ready

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", self.module, *self.args]

    def start(self, timeout_s: float = 10.0) -> None:
        self._spawn(self.argv, cwd=self.cwd, env=self.env)
        if self.ready is not None:
            self._wait_ready(self.ready, timeout_s, "ready")

    def stdout_text(self) -> str:
        return _read_text(self.stdout_path)

    def stderr_text(self) -> str:
        return _read_text(self.stderr_path)
