"""DiskBuffer: order, bound, counters, persistence, crash safety and recovery from bad files."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from edge_agent.audit import AuditLog
from edge_agent.buffer import (
    BufferCorruptError,
    Buffered,
    BufferStoreError,
    DiskBuffer,
    Synchronous,
)
from sensors.errors import IlmaError
from tests.edge_agent import buffer_child

REPO_ROOT = Path(__file__).resolve().parents[2]


def messages(first: int, n: int, *, size: int = 16) -> list[tuple[str, bytes, int, float]]:
    """n distinct messages numbered from `first`; qos cycles through 0, 1, 2."""
    return [
        (f"ilma/v1/site/t/{k}", k.to_bytes(8, "big") * (size // 8), k % 3, 1000.0 + k)
        for k in range(first, first + n)
    ]


def contents(held: list[Buffered]) -> list[tuple[str, bytes, int, float]]:
    return [(b.topic, b.payload, b.qos, b.created_s) for b in held]


def raw_counts(path: Path) -> tuple[int, int, int]:
    """(rows, depth, dropped) as stored, read with a plain connection after the buffer closed."""
    conn = sqlite3.connect(path)
    try:
        (rows,) = conn.execute("SELECT count(*) FROM messages").fetchone()
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    finally:
        conn.close()
    return rows, meta["depth"], meta["dropped"]


# -- basic semantics -------------------------------------------------------------------------


def test_order_and_content_survive_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite"
    sent = [*messages(0, 30, size=2048), ("empty/payload", b"", 2, -1.5)]
    with DiskBuffer(path, 1000) as buf:
        assert buf.append(sent[:10]) == 0
        assert buf.append(sent[10:]) == 0
        assert buf.depth == 31
    with DiskBuffer(path, 1000) as buf:
        held = buf.peek(100)
        assert contents(held) == sent
        assert [b.id for b in held] == sorted({b.id for b in held})
        assert all(isinstance(b.payload, bytes) for b in held)
        assert buf.depth == 31
        assert buf.dropped == 0
        assert buf.oldest_created_s == 1000.0
    assert raw_counts(path) == (31, 31, 0)


def test_peek_returns_the_oldest_and_leaves_them(tmp_path: Path) -> None:
    with DiskBuffer(tmp_path / "b.sqlite", 100) as buf:
        assert buf.peek(5) == []
        assert buf.oldest_created_s is None
        buf.append(messages(0, 10))
        first = buf.peek(4)
        assert contents(first) == messages(0, 4)
        assert buf.peek(4) == first
        assert buf.peek(0) == []
        assert contents(buf.peek(50)) == messages(0, 10)
        assert buf.depth == 10
        with pytest.raises(ValueError, match="limit"):
            buf.peek(-1)


def test_remove_takes_exactly_the_given_ids(tmp_path: Path) -> None:
    with DiskBuffer(tmp_path / "b.sqlite", 100) as buf:
        buf.append(messages(0, 10))
        held = buf.peek(10)
        buf.remove([held[0].id, held[3].id, held[9].id])
        assert contents(buf.peek(10)) == [
            m for k, m in enumerate(messages(0, 10)) if k not in {0, 3, 9}
        ]
        assert buf.depth == 7
        assert buf.oldest_created_s == held[1].created_s
        buf.remove([])
        assert buf.depth == 7


def test_removing_unknown_or_repeated_ids_is_harmless(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    with DiskBuffer(path, 100) as buf:
        buf.append(messages(0, 5))
        held = buf.peek(5)
        buf.remove([held[1].id])
        # Already removed, repeated in one call, never existed: only held[2] goes.
        buf.remove([held[1].id, held[2].id, held[2].id, 10**9, -4, 0])
        assert contents(buf.peek(10)) == [messages(0, 5)[k] for k in (0, 3, 4)]
        assert buf.depth == 3
        assert buf.dropped == 0
    assert raw_counts(path) == (3, 3, 0)


def test_bound_drops_the_oldest_first_and_counts_exactly(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    with DiskBuffer(path, 10) as buf:
        assert buf.append(messages(0, 8)) == 0
        assert buf.append(messages(8, 5)) == 3
        assert contents(buf.peek(20)) == messages(3, 10)
        # A batch larger than the bound: only its newest survive.
        assert buf.append(messages(13, 14)) == 14
        assert contents(buf.peek(20)) == messages(17, 10)
        assert buf.depth == 10
        assert buf.dropped == 17
    with DiskBuffer(path, 10) as buf:
        assert buf.dropped == 17
        assert buf.depth == 10
        assert buf.append(messages(27, 1)) == 1
        assert buf.dropped == 18
    assert raw_counts(path) == (10, 10, 18)


def test_a_smaller_bound_at_reopen_drops_the_oldest_at_once(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    with DiskBuffer(path, 100) as buf:
        buf.append(messages(0, 30))
    with DiskBuffer(path, 12) as buf:
        assert buf.depth == 12
        assert buf.dropped == 18
        assert contents(buf.peek(100)) == messages(18, 12)
    assert raw_counts(path) == (12, 12, 18)


def test_ids_are_never_reused_so_a_late_ack_cannot_remove_a_newer_message(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b.sqlite"
    with DiskBuffer(path, 3) as buf:
        buf.append(messages(0, 3))
        in_flight = buf.peek(3)
        buf.remove(b.id for b in in_flight)
        assert buf.depth == 0
    with DiskBuffer(path, 3) as buf:
        buf.append(messages(3, 3))
        buf.remove(b.id for b in in_flight)  # PUBACKs arriving after the restart
        assert contents(buf.peek(3)) == messages(3, 3)
        assert min(b.id for b in buf.peek(3)) > max(b.id for b in in_flight)


def test_an_invalid_message_rejects_the_whole_batch(tmp_path: Path) -> None:
    good = messages(0, 2)
    bad_ones: list[tuple[object, ...]] = [
        ("t", b"x", 3, 1.0),
        ("t", b"x", -1, 1.0),
        ("t", b"x", 1, math.nan),
        ("t", b"x", 1, math.inf),
        ("t", "not bytes", 1, 1.0),
        (b"not str", b"x", 1, 1.0),
    ]
    with DiskBuffer(tmp_path / "b.sqlite", 100) as buf:
        for bad in bad_ones:
            with pytest.raises((ValueError, TypeError)):
                buf.append([*good, bad])  # type: ignore[list-item]
        assert buf.depth == 0
        assert buf.peek(10) == []
        bytes_like = [("t", bytearray(b"ab"), 0, 1)]
        assert buf.append(bytes_like) == 0  # type: ignore[arg-type] # bytes-like, fine
        (held,) = buf.peek(1)
        assert (held.payload, held.created_s) == (b"ab", 1.0)
        assert type(held.payload) is bytes
        assert type(held.created_s) is float


def test_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_messages"):
        DiskBuffer(tmp_path / "a.sqlite", 0)
    with pytest.raises(ValueError, match="synchronous"):
        DiskBuffer(tmp_path / "b.sqlite", 1, synchronous="OFF")  # type: ignore[arg-type]
    assert not (tmp_path / "b.sqlite").exists()


def test_a_closed_buffer_refuses_use_and_closing_twice_is_fine(tmp_path: Path) -> None:
    buf = DiskBuffer(tmp_path / "b.sqlite", 10)
    with buf as entered:
        assert entered is buf
        buf.append(messages(0, 1))
    buf.close()
    for use in (
        lambda: buf.append(messages(1, 1)),
        lambda: buf.peek(1),
        lambda: buf.remove([1]),
        lambda: buf.depth,
        lambda: buf.dropped,
        lambda: buf.oldest_created_s,
    ):
        with pytest.raises(ValueError, match="closed"):
            use()
    assert "closed" in repr(buf)


def test_errors_are_ilma_errors_and_os_errors() -> None:
    assert issubclass(BufferStoreError, IlmaError)
    assert issubclass(BufferStoreError, OSError)
    assert issubclass(BufferCorruptError, BufferStoreError)


# -- the file on disk ------------------------------------------------------------------------


def test_the_file_is_in_wal_mode_with_the_asked_durability(tmp_path: Path) -> None:
    levels: list[tuple[Synchronous, int]] = [("FULL", 2), ("NORMAL", 1)]
    for synchronous, level in levels:
        path = tmp_path / f"{synchronous}.sqlite"
        with DiskBuffer(path, 10, synchronous=synchronous) as buf:
            buf.append(messages(0, 1))
            conn = buf._connection()
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert conn.execute("PRAGMA synchronous").fetchone() == (level,)
            assert conn.execute("PRAGMA auto_vacuum").fetchone() == (0,)  # see _shrink


def test_the_file_gives_its_space_back_after_a_long_outage_drains(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    wal = tmp_path / "b.sqlite-wal"

    def on_disk_bytes() -> int:
        return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)

    with DiskBuffer(path, 100_000, synchronous="NORMAL") as buf:
        for first in range(0, 6000, 500):
            buf.append(messages(first, 500, size=2048))
        full_bytes = on_disk_bytes()
        assert full_bytes > 12_000_000
        while held := buf.peek(700):
            buf.remove(b.id for b in held)
        assert buf.depth == 0
        drained_bytes = on_disk_bytes()
        # And it is still a working buffer, whose ids go on from where they were.
        buf.append(messages(0, 1))
        (after,) = buf.peek(1)
        assert (after.id, contents([after])) == (6001, messages(0, 1))
    assert drained_bytes < 200_000
    with DiskBuffer(path, 10) as buf:
        assert contents(buf.peek(10)) == messages(0, 1)


def test_a_small_drain_keeps_its_pages_for_reuse(tmp_path: Path) -> None:
    # Freeing and reallocating a few pages every second would be SD card writes for nothing.
    path = tmp_path / "b.sqlite"
    with DiskBuffer(path, 1000, synchronous="NORMAL") as buf:
        buf.append(messages(0, 200, size=2048))
        buf.remove(b.id for b in buf.peek(200))
        free_pages = buf._connection().execute("PRAGMA freelist_count").fetchone()[0]
    assert free_pages > 50


def test_a_second_owner_is_refused_but_the_file_is_not_treated_as_corrupt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "b.sqlite"
    with DiskBuffer(path, 10) as buf:
        buf.append(messages(0, 3))
        with pytest.raises(BufferStoreError) as excinfo:
            DiskBuffer(path, 10)
        assert not isinstance(excinfo.value, BufferCorruptError)
        with pytest.raises(BufferStoreError):
            DiskBuffer.open_or_reset(path, 10)
        assert sorted(p.name for p in tmp_path.iterdir() if "corrupt" in p.name) == []
        assert contents(buf.peek(10)) == messages(0, 3)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_random_bytes_are_moved_aside_and_the_buffer_starts_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "b.sqlite"
    garbage = random.Random(7).randbytes(64 * 1024)
    path.write_bytes(garbage)
    (tmp_path / "b.sqlite-wal").write_bytes(b"stale wal of the damaged file")
    with pytest.raises(BufferCorruptError):
        DiskBuffer(path, 10)
    assert path.read_bytes() == garbage  # a failed open writes nothing
    with caplog.at_level(logging.ERROR, logger="edge_agent.buffer"):
        buf = DiskBuffer.open_or_reset(path, 10)
    with buf:
        assert buf.depth == 0
        assert buf.dropped == 0
        assert buf.peek(10) == []
        buf.append(messages(0, 2))
        assert contents(buf.peek(10)) == messages(0, 2)
    moved_files = sorted(p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name)
    assert len(moved_files) == 2
    moved = tmp_path / moved_files[0]
    assert moved_files[1] == moved.name + "-wal"
    assert moved.read_bytes() == garbage
    assert (tmp_path / (moved.name + "-wal")).read_bytes() == b"stale wal of the damaged file"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert str(moved) in errors[0].getMessage()
    with DiskBuffer(path, 10) as buf:  # the new file is a proper buffer
        assert contents(buf.peek(10)) == messages(0, 2)


def test_reopen_keeps_a_sound_file_and_its_messages(tmp_path: Path) -> None:
    """A corrupt-looking error that the whole-file check does not confirm loses nothing."""
    path = tmp_path / "b.sqlite"
    buf = DiskBuffer(path, 10)
    with buf:
        buf.append(messages(0, 3))
        buf.reopen()
        assert buf.depth == 3
        assert contents(buf.peek(10)) == messages(0, 3)
        buf.append(messages(3, 1))
    assert not list(tmp_path.glob("*.corrupt-*"))
    with pytest.raises(ValueError, match="closed"):
        buf.reopen()


def test_a_failed_reopen_leaves_the_buffer_wanting_another(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    with DiskBuffer(path, 10) as buf:
        buf.append(messages(0, 2))
        path.rename(tmp_path / "elsewhere.sqlite")
        path.mkdir()  # the file cannot be opened now (as with an I/O error)
        with pytest.raises(BufferStoreError):
            buf.reopen()
        # Every call says the file still wants a reopen; none says it was closed on purpose.
        with pytest.raises(BufferCorruptError):
            buf.append(messages(2, 1))
        with pytest.raises(BufferCorruptError):
            buf.peek(10)
        path.rmdir()
        buf.reopen()
        assert buf.peek(10) == []
        buf.append(messages(2, 1))
        assert contents(buf.peek(10)) == messages(2, 1)


def test_resetting_twice_keeps_both_damaged_files(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    for seed in (1, 2):
        path.write_bytes(random.Random(seed).randbytes(8192))
        DiskBuffer.open_or_reset(path, 10).close()
    moved = sorted(p for p in tmp_path.iterdir() if ".corrupt-" in p.name)
    assert len(moved) == 2
    assert {p.read_bytes() for p in moved} == {
        random.Random(seed).randbytes(8192) for seed in (1, 2)
    }


def _other_sqlite_file(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("INSERT INTO messages (body) VALUES ('not ours')")
    conn.commit()
    conn.close()


def _audit_file(path: Path) -> None:
    AuditLog(path, 10).close()


def _relabelled(pragma: str) -> Callable[[Path], None]:
    """A buffer file with one header field changed: a newer schema, another application."""

    def make(path: Path) -> None:
        DiskBuffer(path, 10).close()
        conn = sqlite3.connect(path)
        conn.execute(pragma)
        conn.close()

    return make


@pytest.mark.parametrize(
    "make",
    [
        _other_sqlite_file,
        _audit_file,
        _relabelled("PRAGMA user_version = 2"),
        _relabelled("PRAGMA application_id = 1234"),
    ],
)
def test_a_foreign_database_is_refused_untouched_and_can_be_reset(
    tmp_path: Path, make: Callable[[Path], None]
) -> None:
    path = tmp_path / "b.sqlite"
    make(path)
    before = path.read_bytes()
    with pytest.raises(BufferCorruptError):
        DiskBuffer(path, 10)
    assert path.read_bytes() == before
    with DiskBuffer.open_or_reset(path, 10) as buf:
        assert buf.depth == 0
    (moved,) = (p for p in tmp_path.iterdir() if ".corrupt-" in p.name)
    assert moved.read_bytes() == before


def test_damaged_pages_surface_as_corruption_and_can_be_reset(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    with DiskBuffer(path, 10_000) as buf:
        buf.append(messages(0, 500, size=2048))
    data = bytearray(path.read_bytes())
    middle = len(data) // 4096 // 2 * 4096
    data[middle : middle + 20 * 4096] = random.Random(3).randbytes(20 * 4096)
    path.write_bytes(data)
    # The header and counters are intact: the damage shows when the messages are read.
    with DiskBuffer(path, 10_000) as buf, pytest.raises(BufferCorruptError):
        buf.peek(1000)
    with DiskBuffer.open_or_reset(path, 10_000) as buf:
        assert buf.depth == 0


def test_empty_and_half_created_files_are_simply_created(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    path.write_bytes(b"")
    with DiskBuffer(path, 10) as buf:
        buf.append(messages(0, 1))
    with DiskBuffer(path, 10) as buf:
        assert buf.depth == 1


def test_a_missing_directory_is_a_store_error_not_corruption(tmp_path: Path) -> None:
    with pytest.raises(BufferStoreError) as excinfo:
        DiskBuffer.open_or_reset(tmp_path / "missing" / "b.sqlite", 10)
    assert not isinstance(excinfo.value, BufferCorruptError)


# -- logging and threads ---------------------------------------------------------------------


def test_the_full_transition_is_logged_once_each_way(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.INFO, logger="edge_agent.buffer"),
        DiskBuffer(tmp_path / "b.sqlite", 5) as buf,
    ):
        for first in range(0, 40, 4):
            buf.append(messages(first, 4))
        buf.remove([buf.peek(1)[0].id])
        buf.remove([buf.peek(1)[0].id])
        buf.append(messages(40, 4))
    levels = [r.levelno for r in caplog.records if r.name == "edge_agent.buffer"]
    assert levels == [logging.WARNING, logging.INFO, logging.WARNING]


def test_calls_from_worker_threads_are_serialised(tmp_path: Path) -> None:
    n_tasks, per_task = 20, 25

    def numbers(held: list[Buffered]) -> list[int]:
        return [int.from_bytes(b.payload[:8], "big") for b in held]

    async def main(buf: DiskBuffer) -> list[Buffered]:
        await asyncio.gather(
            *(
                asyncio.to_thread(buf.append, messages(t * per_task, per_task))
                for t in range(n_tasks)
            )
        )
        held = await asyncio.to_thread(buf.peek, n_tasks * per_task)
        await asyncio.gather(
            *(asyncio.to_thread(buf.remove, [b.id for b in held[k::4]]) for k in range(3))
        )
        return held

    path = tmp_path / "b.sqlite"
    with DiskBuffer(path, 10_000, synchronous="NORMAL") as buf:
        appended = asyncio.run(main(buf))
        # Batches in any order, but each one whole and in its own order.
        assert [k % per_task for k in numbers(appended)] == list(range(per_task)) * n_tasks
        assert sorted(numbers(appended)) == list(range(n_tasks * per_task))
        held = buf.peek(10_000)
        assert held == appended[3::4]
        assert buf.depth == n_tasks * per_task // 4
    assert raw_counts(path) == (125, 125, 0)


# -- against a model -------------------------------------------------------------------------

_message = st.tuples(
    st.text(max_size=12),
    st.binary(max_size=40),
    st.integers(0, 2),
    st.floats(allow_nan=False, allow_infinity=False),
)


class BufferMachine(RuleBasedStateMachine):
    """DiskBuffer against a deque with the same bound, ids and dropped count."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        directory.mkdir()
        self.path = directory / "buffer.sqlite"
        self.model: deque[Buffered] = deque()
        self.next_id = 1
        self.dropped = 0
        self.max_messages = 1
        self.buf: DiskBuffer | None = None

    @property
    def live(self) -> DiskBuffer:
        assert self.buf is not None
        return self.buf

    def _trim(self) -> int:
        excess = max(0, len(self.model) - self.max_messages)
        for _ in range(excess):
            self.model.popleft()
        self.dropped += excess
        return excess

    @initialize(max_messages=st.integers(1, 8))
    def open(self, max_messages: int) -> None:
        self.max_messages = max_messages
        self.buf = DiskBuffer(self.path, max_messages, synchronous="NORMAL")

    @rule(batch=st.lists(_message, max_size=10))
    def append(self, batch: list[tuple[str, bytes, int, float]]) -> None:
        n_dropped = self.live.append(batch)
        for m in batch:
            self.model.append(Buffered(self.next_id, *m))
            self.next_id += 1
        assert n_dropped == self._trim()

    @rule(limit=st.integers(0, 10))
    def peek(self, limit: int) -> None:
        assert self.live.peek(limit) == list(itertools.islice(self.model, limit))

    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        held = [b.id for b in self.model]
        some_held = st.sampled_from(held) if held else st.nothing()
        ids = data.draw(st.lists(some_held | st.integers(-2, self.next_id + 2), max_size=8))
        self.live.remove(ids)
        gone = set(ids)
        self.model = deque(b for b in self.model if b.id not in gone)

    @rule(synchronous=st.sampled_from(["FULL", "NORMAL"]), max_messages=st.integers(1, 8))
    def reopen(self, synchronous: Synchronous, max_messages: int) -> None:
        self.live.close()
        self.max_messages = max_messages
        self.buf = DiskBuffer(self.path, max_messages, synchronous=synchronous)
        self._trim()

    @invariant()
    def counters_match(self) -> None:
        assert self.live.depth == len(self.model)
        assert self.live.dropped == self.dropped
        expected_oldest = self.model[0].created_s if self.model else None
        assert self.live.oldest_created_s == expected_oldest

    @invariant()
    def contents_match(self) -> None:
        assert self.live.peek(self.max_messages + 1) == list(self.model)

    def teardown(self) -> None:
        if self.buf is not None:
            self.buf.close()
            assert raw_counts(self.path) == (len(self.model), len(self.model), self.dropped)


def test_disk_buffer_behaves_like_a_bounded_deque(tmp_path: Path) -> None:
    runs = itertools.count()

    class Machine(BufferMachine):
        def __init__(self) -> None:
            super().__init__(tmp_path / f"run{next(runs)}")

    run_state_machine_as_test(Machine, settings=settings(max_examples=150, stateful_step_count=30))


# -- crash safety ----------------------------------------------------------------------------

_CHILD_TIMEOUT_S = 60.0  # a guard against a hung child, not a measurement


def _run_child_and_kill(
    path: Path, *, max_messages: int, first_batch: int, batch_size: int, kill_after: int, log: Path
) -> list[int]:
    """Start the child, SIGKILL it right after its `kill_after`-th report; all it reported."""
    with log.open("ab") as stderr:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module, fixed arguments
            [
                sys.executable,
                "-m",
                "tests.edge_agent.buffer_child",
                str(path),
                str(max_messages),
                str(first_batch),
                str(batch_size),
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    try:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        pending = b""
        reported: list[int] = []
        deadline = time.monotonic() + _CHILD_TIMEOUT_S
        while len(reported) < kill_after:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                pytest.fail(f"the child reported nothing for {_CHILD_TIMEOUT_S} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                pytest.fail(f"the child exited early ({proc.wait()}): {log.read_text()}")
            *lines, pending = (pending + chunk).split(b"\n")
            reported += map(int, lines)
        # Right after a report the child is inside its next append's transaction, most likely.
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        # Commits it reported that we had not read yet count too.
        *lines, _ = (pending + proc.stdout.read()).split(b"\n")
        reported += map(int, lines)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    return reported


@pytest.mark.parametrize(
    ("max_messages", "batch_size"),
    [(10**6, 200), (550, 200)],  # without drops; with drops that split batches at the old end
)
def test_sigkill_loses_no_reported_batch_and_leaves_no_partial_one(
    tmp_path: Path, max_messages: int, batch_size: int
) -> None:
    path = tmp_path / "buffer.sqlite"
    rng = random.Random(max_messages)
    next_batch = 0
    for _ in range(6):
        reported = _run_child_and_kill(
            path,
            max_messages=max_messages,
            first_batch=next_batch,
            batch_size=batch_size,
            kill_after=rng.randint(1, 12),
            log=tmp_path / "child.log",
        )
        assert reported == list(range(next_batch, next_batch + len(reported)))
        with DiskBuffer(path, max_messages) as buf:
            held = buf.peek(max_messages)
            depth, dropped = buf.depth, buf.dropped
        # Every message committed so far, numbered across batches, must be a consecutive run
        # ending with a whole batch: the last one reported, or the one after it if it committed
        # just before the kill.
        last = int(held[-1].topic.removeprefix("t/"))
        assert last in {reported[-1], reported[-1] + 1}
        n_committed = (last + 1) * batch_size
        assert depth == len(held) == min(n_committed, max_messages)
        assert dropped == n_committed - depth
        expected = [
            buffer_child.message(k // batch_size, k % batch_size)
            for k in range(n_committed - depth, n_committed)
        ]
        assert contents(held) == expected
        assert [b.id for b in held] == list(range(held[0].id, held[0].id + len(held)))
        next_batch = last + 1
