"""Pytest fixtures for real servers (mosquitto, VictoriaMetrics, socat ptys, Python daemons)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.servers import ManagedProcess, Mosquitto, PtyPair, ServerProcess, VictoriaMetrics


class MosquittoFactory(Protocol):
    def __call__(
        self,
        *,
        persistence: bool = False,
        port: int | None = None,
        extra_config: Iterable[str] = (),
        start: bool = True,
    ) -> Mosquitto: ...


class ServerProcessFactory(Protocol):
    def __call__(
        self,
        module: str,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        ready: Callable[[], bool] | None = None,
        start: bool = True,
    ) -> ServerProcess: ...


def _stop_all(processes: list[ManagedProcess]) -> None:
    """Stop every process, newest first, even when stopping one of them fails."""
    errors: list[BaseException] = []
    for process in reversed(processes):
        try:
            process.stop()
        except Exception as exc:  # noqa: BLE001 -- the others must be stopped too; re-raised below
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[MosquittoFactory]:
    """Start brokers on demand, each in its own dir; all are stopped by PID at teardown."""
    brokers: list[ManagedProcess] = []

    def make(
        *,
        persistence: bool = False,
        port: int | None = None,
        extra_config: Iterable[str] = (),
        start: bool = True,
    ) -> Mosquitto:
        broker = Mosquitto(
            tmp_path / f"mosquitto-{len(brokers)}",
            port=port,
            persistence=persistence,
            extra_config=extra_config,
        )
        brokers.append(broker)
        if start:
            broker.start()
        return broker

    try:
        yield make
    finally:
        _stop_all(brokers)


@pytest.fixture
def mosquitto(request: pytest.FixtureRequest, mosquitto_factory: MosquittoFactory) -> Mosquitto:
    """A fresh, running broker for this test.

    Options by indirect parametrization, with the keywords of `mosquitto_factory`:
    `@pytest.mark.parametrize("mosquitto", [{"persistence": True}], indirect=True)`.
    """
    options: Mapping[str, Any] = getattr(request, "param", {})
    return mosquitto_factory(**options)


@pytest.fixture
def victoria_metrics(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    """A fresh, running VictoriaMetrics for this test, with its own port and data dir."""
    server = VictoriaMetrics(tmp_path / "victoria-metrics")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[PtyPair]:
    """Two linked pseudo-terminals: `pty_pair.a` and `pty_pair.b`."""
    pair = PtyPair(tmp_path / "ptys")
    try:
        pair.start()
        yield pair
    finally:
        pair.stop()


@pytest.fixture
def server_process_factory(tmp_path: Path) -> Iterator[ServerProcessFactory]:
    """Run `python -m module` children; all are stopped by PID at teardown."""
    processes: list[ManagedProcess] = []

    def make(
        module: str,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        ready: Callable[[], bool] | None = None,
        start: bool = True,
    ) -> ServerProcess:
        process = ServerProcess(
            module,
            args,
            directory=tmp_path / f"proc-{len(processes)}-{module}",
            env=env,
            ready=ready,
        )
        processes.append(process)
        if start:
            process.start()
        return process

    try:
        yield make
    finally:
        _stop_all(processes)
