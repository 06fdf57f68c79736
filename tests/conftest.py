"""Shared test fixtures: leak checks and hypothesis profiles."""

from __future__ import annotations

import asyncio
import asyncio.runners
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

# Tests never assert on wall-clock time: hypothesis' deadline is one such assertion.
settings.register_profile(
    "ilma", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("ilma")

pytest_plugins = ["pytester", "tests.fixtures_servers"]

_THREAD_GRACE_S = 2.0


@pytest.fixture(autouse=True)
def _no_leaked_tasks_or_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail a test that leaves asyncio tasks pending or threads running behind it.

    `asyncio.run` quietly cancels the tasks still pending when its main coroutine returns; a
    task the code under test forgot to cancel or await is recorded here instead of vanishing.
    """
    leaked_tasks: list[str] = []
    original_cancel_all = asyncio.runners._cancel_all_tasks  # type: ignore[attr-defined]

    def _recording_cancel_all(loop: asyncio.AbstractEventLoop) -> Any:
        leaked_tasks.extend(t.get_name() for t in asyncio.all_tasks(loop) if not t.done())
        return original_cancel_all(loop)

    monkeypatch.setattr(asyncio.runners, "_cancel_all_tasks", _recording_cancel_all)
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + _THREAD_GRACE_S
    leaked_threads = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    while leaked_threads and time.monotonic() < deadline:
        time.sleep(0.02)
        leaked_threads = [t for t in leaked_threads if t.is_alive()]
    problems = []
    if leaked_tasks:
        problems.append(f"asyncio tasks left pending: {sorted(leaked_tasks)}")
    if leaked_threads:
        problems.append(f"threads left running: {sorted(t.name for t in leaked_threads)}")
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)
