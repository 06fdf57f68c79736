"""Disk buffer for outgoing MQTT messages while the broker is away: bounded, ordered, crash-safe."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, NamedTuple, Protocol, Self, TypeVar

from prometheus_client import Counter

from sensors.errors import IlmaError

logger = logging.getLogger(__name__)

Synchronous = Literal["FULL", "NORMAL"]

# SQLite's numbers for the two levels; a pragma cannot take a bound parameter, so only these
# integers are ever formatted into one.
_SYNCHRONOUS_LEVELS: dict[str, int] = {"FULL": 2, "NORMAL": 1}

# Checkpoint the WAL into the database every 1000 pages (4 MiB at SQLite's default 4 KiB page):
# SQLite's default, kept on purpose. Larger means fewer checkpoints but a longer WAL to scan on
# every read and to recover after a crash; smaller rewrites the same hot pages (meta, b-tree
# interior) into the database more often, which is what wears an SD card.
_WAL_AUTOCHECKPOINT_PAGES = 1000
# After a checkpoint SQLite reuses the WAL from its start but never shrinks it; this caps what
# stays on disk after one unusually large transaction (a big remove after a long outage).
_JOURNAL_SIZE_LIMIT_BYTES = 4 * 1024 * 1024
# How long to wait for a lock before giving up. Each store has one owner, so a lock held for
# longer than this is another process using our file: an error to report, not to wait out.
_BUSY_TIMEOUT_S = 1.0
# The primary result codes (low byte of the extended code) that mean "this file is damaged or is
# not a database at all", as opposed to busy, read-only, full disk or I/O trouble.
_CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
_SQLITE_MAGIC = b"SQLite format 3\x00"


# -- one recipe for a small single-owner SQLite store; edge_agent.audit uses it too ------------


@dataclass(frozen=True)
class StoreSpec:
    """What makes a SQLite file one of our stores, and which errors say that it is not usable."""

    what: str  # "buffer", "audit log": for messages
    application_id: int  # stamped in the header: tells our file from any other SQLite file
    user_version: int  # the schema version; a file with any other is not ours to touch
    tables: frozenset[str]
    ddl: tuple[str, ...]  # run once, in one transaction, on a new empty file
    error: type[OSError]  # the file cannot be used now (locked, read-only, disk full, I/O)
    corrupt_error: type[OSError]  # the file is damaged or not ours: move it aside
    exclusive: bool  # hold the file lock from opening to closing


def is_corruption(exc: sqlite3.Error) -> bool:
    """Whether SQLite says the file is damaged or is not a database (not busy, full or I/O)."""
    return (exc.sqlite_errorcode & 0xFF) in _CORRUPT_CODES


@contextlib.contextmanager
def store_errors(spec: StoreSpec, path: Path) -> Iterator[None]:
    """Translate SQLite's errors into the store's own; programming errors stay what they are."""
    try:
        yield
    except sqlite3.ProgrammingError:
        raise
    except sqlite3.DatabaseError as exc:
        cls = spec.corrupt_error if is_corruption(exc) else spec.error
        raise cls(f"{spec.what} {path}: {exc}") from exc


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction: committed when the block ends, rolled back on any exception.

    BEGIN IMMEDIATE takes the write lock up front, so a transaction never fails half-way for a
    lock it could not upgrade to.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            # A failed rollback leaves nothing to add: the original error is the one to report,
            # and SQLite rolls back the WAL on the next open anyway.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def _identity(conn: sqlite3.Connection) -> tuple[int, int, set[str]]:
    app_id: int = conn.execute("PRAGMA application_id").fetchone()[0]
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return app_id, version, names - {"sqlite_sequence"}


def _check_ours(spec: StoreSpec, path: Path, identity: tuple[int, int, set[str]]) -> None:
    """Raise spec.corrupt_error unless the file is one of ours or brand new (empty)."""
    app_id, version, tables = identity
    if app_id == 0 and version == 0 and not tables:
        return
    if app_id != spec.application_id:
        reason = f"not an ilma {spec.what} (application_id {app_id:#x})"
    elif version != spec.user_version:
        reason = f"schema version {version}, expected {spec.user_version}"
    elif tables != spec.tables:
        reason = f"tables {sorted(tables)}, expected {sorted(spec.tables)}"
    else:
        return
    raise spec.corrupt_error(f"{spec.what} {path}: {reason}")


def _check_magic(spec: StoreSpec, path: Path) -> None:
    """Refuse a file that is not SQLite at all before SQLite opens it.

    SQLite would say so too, but closing that connection deletes the file's -wal, which is part
    of what open_or_reset moves aside for whoever investigates.
    """
    try:
        with path.open("rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise spec.error(f"{spec.what} {path}: {exc}") from exc
    if head and head != _SQLITE_MAGIC:
        raise spec.corrupt_error(f"{spec.what} {path}: not a SQLite database")


def quick_check(conn: sqlite3.Connection, spec: StoreSpec, path: Path) -> None:
    """Walk the whole file: raise spec.corrupt_error for damage anywhere, now rather than later.

    Opening reads only the header and schema; a damaged page further in would otherwise show
    only when a call reads it. Reads every page: well under a second from the page cache, a
    few seconds for a full buffer on an SD card, once at startup.
    """
    with store_errors(spec, path):
        problems = [str(row[0]) for row in conn.execute("PRAGMA quick_check(5)")]
    if problems != ["ok"]:
        raise spec.corrupt_error(f"{spec.what} {path}: {'; '.join(problems)}")


def open_store(path: Path, spec: StoreSpec, synchronous: Synchronous) -> sqlite3.Connection:
    """Open or create the store at `path` in WAL mode; raise spec.error or spec.corrupt_error.

    A foreign file is recognised before anything is written to it, so what is moved aside is
    exactly what was found.
    """
    if synchronous not in _SYNCHRONOUS_LEVELS:
        raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', not {synchronous!r}")
    _check_magic(spec, path)
    with store_errors(spec, path):
        # isolation_level=None: no implicit transactions, we issue BEGIN/COMMIT ourselves so that
        # a transaction is exactly one method call. check_same_thread=False: the agent calls us
        # through asyncio.to_thread, from whichever worker thread; each store serialises calls
        # with its own lock.
        conn = sqlite3.connect(
            path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
    try:
        with store_errors(spec, path):
            _prepare(conn, spec, path, _SYNCHRONOUS_LEVELS[synchronous])
    except BaseException:
        conn.close()
        raise
    return conn


def _prepare(conn: sqlite3.Connection, spec: StoreSpec, path: Path, synchronous: int) -> None:
    if spec.exclusive:
        # Set before the first read so that SQLite keeps the WAL index in process memory (no
        # -shm file) and holds the lock until close: a second agent on the same buffer would
        # replay the same messages twice, so it fails at startup instead.
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
    _check_ours(spec, path, _identity(conn))
    # Free pages stay in the file for reuse (see DiskBuffer._shrink for giving them back). Set
    # explicitly because some builds default to FULL, which moves pages around at every commit
    # that frees one. Takes effect on a new file only, before its first table.
    conn.execute("PRAGMA auto_vacuum = NONE")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise spec.error(f"{spec.what} {path}: cannot use WAL (journal mode {mode})")
    # FULL: every commit fsyncs the WAL, so a commit that returned survives power loss too (one
    # fsync per append call, ~1/s during an outage: cheap even on an SD card). NORMAL in WAL
    # mode fsyncs only at checkpoints: a process crash (SIGKILL) still loses nothing, since the
    # OS holds the written pages, and the file is never corrupted, but a power cut may roll back
    # the last commits. Consistent either way.
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute(f"PRAGMA wal_autocheckpoint = {_WAL_AUTOCHECKPOINT_PAGES}")
    conn.execute(f"PRAGMA journal_size_limit = {_JOURNAL_SIZE_LIMIT_BYTES}")
    with transaction(conn):
        # Checked again under the write lock: another process may have created it meanwhile.
        identity = _identity(conn)
        _check_ours(spec, path, identity)
        if not identity[2]:
            for statement in spec.ddl:
                conn.execute(statement)
            # Header fields, written inside the transaction: a crash before the commit leaves an
            # empty file that the next open simply creates again.
            conn.execute(f"PRAGMA application_id = {int(spec.application_id)}")
            conn.execute(f"PRAGMA user_version = {int(spec.user_version)}")


def move_aside(path: Path) -> Path:
    """Rename an unusable store file (and its WAL, if any) out of the way; the new name.

    The file is kept, not deleted: it is the evidence of what went wrong, and may still hold
    messages or records someone wants back.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 0
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    path.rename(target)
    # A leftover WAL would otherwise be replayed into the new, empty file of the same name.
    for suffix in ("-wal", "-shm", "-journal"):
        sidecar = path.with_name(path.name + suffix)
        if sidecar.exists():
            sidecar.rename(target.with_name(target.name + suffix))
    return target


class _Checked(Protocol):
    def check(self) -> None: ...
    def close(self) -> None: ...


_S = TypeVar("_S", bound=_Checked)


class FailureLog:
    """Which of a store's operations fail now, to log each transition once: one WARNING when an
    operation starts failing, one INFO when it works again, DEBUG in between.

    Kept per operation, not per store: on a full disk reads go on working while writes fail,
    and a working read must not announce that the writes are back. The store knows best
    whether a call of its own reached the disk and worked; its caller counts the failures.
    """

    def __init__(
        self, what: str, path: Path, error: type[OSError], log: logging.Logger = logger
    ) -> None:
        self._log = log  # the store's module's: whoever filters logs filters by store
        self._what = what
        self._path = path
        self._error = error
        self._failing: set[str] = set()

    @contextlib.contextmanager
    def watch(self, op: str) -> Iterator[None]:
        """Note how `op` went: the store's own errors are logged (and raised), nothing else."""
        try:
            yield
        except OSError as exc:
            if not isinstance(exc, self._error):
                raise
            if op in self._failing:
                self._log.debug("%s %s: %s failed again: %s", self._what, self._path, op, exc)
            else:
                self._failing.add(op)
                self._log.warning(
                    "%s %s: %s failing (%s); going on without it, logged again when it works",
                    self._what, self._path, op, exc,
                )  # fmt: skip
            raise
        if op in self._failing:
            self._failing.discard(op)
            self._log.info("%s %s: %s works again", self._what, self._path, op)


def open_or_reset(
    open_store: Callable[[], _S], path: Path, what: str, corrupt: type[Exception]
) -> _S:
    """Open a store and check the whole file; if it is damaged or foreign (`corrupt`), move it
    aside (kept for whoever investigates) and open it anew, empty."""
    try:
        store = open_store()
        try:
            store.check()
        except BaseException:
            store.close()
            raise
    except corrupt as exc:
        moved = move_aside(path)
        logger.error(  # noqa: TRY400 - the reason is in the message; a traceback adds nothing
            "%s %s is unusable (%s): moved it to %s and starting empty", what, path, exc, moved
        )
        return open_store()
    return store


# -- the buffer ------------------------------------------------------------------------------


async def after_store_failure(
    failures: Counter, store: str, op: str, exc: OSError, *, reopen: Callable[[], None] | None
) -> None:
    """Count a failed call to a disk store (the buffer, the audit log) and, for a damaged file
    (`reopen` given), move it aside and open it anew, off the event loop. The store itself logs
    when it starts failing and when it works again, so this logs at DEBUG only; a reopen that
    fails too is counted, and the next failing call tries again."""
    failures.labels(store, op).inc()
    logger.debug("%s %s failed: %s", store, op, exc)
    if reopen is None:
        return
    try:
        await asyncio.to_thread(reopen)
    except OSError as reopen_exc:  # the stores' errors are OSErrors
        failures.labels(store, "reopen").inc()
        logger.debug("%s reopen failed: %s", store, reopen_exc)


class BufferStoreError(IlmaError, OSError):
    """The buffer's database cannot be used now (locked by another process, read-only, full)."""


class BufferCorruptError(BufferStoreError):
    """The buffer's file is damaged, foreign or of another schema version: it must be reset."""


class Buffered(NamedTuple):
    """One message held in the buffer; `id` increases in append order and is never reused."""

    id: int
    topic: str
    payload: bytes
    qos: int
    created_s: float


_BUFFER_SPEC = StoreSpec(
    what="buffer",
    application_id=0x696C6D62,  # "ilmb"
    user_version=1,
    tables=frozenset({"messages", "meta"}),
    ddl=(
        # AUTOINCREMENT, not a plain rowid: ids are never reused, even after the table was
        # emptied, so a late PUBACK for a message that was dropped meanwhile can never remove
        # a newer message that happened to get the same id.
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            topic TEXT NOT NULL,
            payload BLOB NOT NULL,
            qos INTEGER NOT NULL,
            created_s REAL NOT NULL
        )""",
        # depth is kept here rather than counted: COUNT(*) reads every page of the table, which
        # is seconds of SD card reads for a full buffer, at every start.
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
        "INSERT INTO meta (key, value) VALUES ('depth', 0), ('dropped', 0)",
    ),
    error=BufferStoreError,
    corrupt_error=BufferCorruptError,
    exclusive=True,
)

# Give free space back only when the drained file holds more than this many free pages (4 MiB at
# 4 KiB pages): in normal operation the buffer empties after every short outage, and handing a
# few pages back only to allocate them again a second later would be SD card writes for nothing.
_SHRINK_MIN_FREE_PAGES = 1024
_MAX_QOS = 2


def _check(message: tuple[str, bytes, int, float]) -> None:
    """Refuse what SQLite would store as something else (str payload, NaN as NULL) or refuse."""
    topic, payload, qos, created_s = message
    if not isinstance(topic, str):
        raise TypeError(f"topic must be str, not {type(topic).__name__}")
    # bytearray and memoryview are stored as BLOBs too and come back as bytes.
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
    if not isinstance(qos, int) or not 0 <= qos <= _MAX_QOS:
        raise ValueError(f"qos must be 0, 1 or 2, not {qos!r}")
    if not math.isfinite(created_s):
        raise ValueError(f"created_s must be finite, not {created_s!r}")


class DiskBuffer:
    """A bounded FIFO of outgoing messages in a SQLite file that survives crashes and reboots.

    Messages leave it only through `remove` (after their PUBACK); when full, `append` drops the
    oldest and counts them. Callable from any thread (a lock serialises calls); one process
    owns the file (a second one gets BufferStoreError). A BufferCorruptError from any call means
    the file is damaged: `reopen` it (or close it and open it anew with `open_or_reset`).
    """

    def __init__(self, path: Path, max_messages: int, *, synchronous: Synchronous = "FULL") -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, not {max_messages}")
        self._path = path
        self._max_messages = max_messages
        self._synchronous: Synchronous = synchronous
        self._lock = threading.Lock()
        self._closed = False  # by close(); a failed reopen leaves no connection but is no close
        self._failures = FailureLog("disk buffer", path, BufferStoreError)
        # In memory, mirrors of what the last commit wrote to the meta table.
        self._depth = 0
        self._dropped = 0
        self._full = False  # dropped since the buffer last had room: to log transitions only
        self._conn: sqlite3.Connection | None = open_store(path, _BUFFER_SPEC, synchronous)
        try:
            with self._errors():
                # Debian builds SQLite with secure_delete on: every freed page is overwritten
                # with zeros, an extra SD card write per page for telemetry that is no secret.
                # FAST zeroes only where that costs no extra I/O.
                self._conn.execute("PRAGMA secure_delete = FAST")
                self._depth, self._dropped = self._read_counters(self._conn)
                # A smaller bound in the configuration applies at once, not at the next append.
                if self._depth > max_messages:
                    with transaction(self._conn):
                        n_dropped = self._delete_oldest(self._conn, self._depth - max_messages)
                        depth, dropped = self._depth - n_dropped, self._dropped + n_dropped
                        self._write_counters(self._conn, depth, dropped)
                    self._depth, self._dropped = depth, dropped
                if self._depth == 0:
                    self._shrink(self._conn)  # a crash may have come between drain and shrink
        except BaseException:
            self.close()
            raise

    @classmethod
    def open_or_reset(
        cls, path: Path, max_messages: int, *, synchronous: Synchronous = "FULL"
    ) -> DiskBuffer:
        """Open the buffer, checking the whole file; if it is damaged or foreign, move it aside
        and start empty. The agent's way to open it, at startup and after a BufferCorruptError.

        Only a file that is unusable as such is moved: a locked file (another agent running) or
        an I/O error still raises BufferStoreError, since starting over would not help.
        """
        return open_or_reset(
            lambda: cls(path, max_messages, synchronous=synchronous),
            path,
            "disk buffer",
            BufferCorruptError,
        )

    def check(self) -> None:
        """Check the whole file (SQLite's quick_check and ours): BufferCorruptError if not."""
        with self._lock:
            quick_check(self._connection(), _BUFFER_SPEC, self._path)

    def reopen(self) -> None:
        """After a BufferCorruptError: close the file and open it again with `open_or_reset`.

        In place, so that everyone holding this buffer (the daemon across reloads, the uplink's
        cycle and sender) goes on with it rather than with a closed one. A file that fails the
        whole-file check is moved aside and the buffer starts empty; one that passes (the error
        was passing) keeps its messages. Raises BufferStoreError if the file cannot be opened;
        until a reopen works, every call raises BufferCorruptError (the file still wants one).
        """
        with self._lock, self._failures.watch("reopen"):
            if self._closed:
                raise ValueError(f"disk buffer {self._path} is closed")
            conn, self._conn = self._conn, None
            if conn is not None:
                # The lock must go before the file is moved aside and opened again; a failing
                # close has nothing to add to the error that brought us here.
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            fresh = DiskBuffer.open_or_reset(
                self._path, self._max_messages, synchronous=self._synchronous
            )
            # Take over the fresh buffer's connection and counters; it is left closed.
            self._depth, self._dropped, self._full = fresh.depth, fresh.dropped, False
            self._conn, fresh._conn = fresh._conn, None
            fresh._closed = True

    @property
    def path(self) -> Path:
        return self._path

    @property
    def max_messages(self) -> int:
        return self._max_messages

    @property
    def depth(self) -> int:
        """How many messages the buffer holds."""
        self._connection()
        return self._depth

    @property
    def dropped(self) -> int:
        """How many messages were dropped, oldest first, since the file was created."""
        self._connection()
        return self._dropped

    @property
    def oldest_created_s(self) -> float | None:
        """created_s of the first message in order (the next to replay); None when empty."""
        with self._lock, self._errors():
            row = (
                self._connection()
                .execute("SELECT created_s FROM messages ORDER BY id LIMIT 1")
                .fetchone()
            )
        return None if row is None else float(row[0])

    def append(self, messages: Sequence[tuple[str, bytes, int, float]]) -> int:
        """Store (topic, payload, qos, created_s) messages in one transaction; how many dropped.

        When the bound is exceeded the oldest messages go first, the new ones included if the
        batch alone is larger than the bound.
        """
        # All checked before the transaction: a bad message refuses the batch, and nothing else.
        for m in messages:
            _check(m)
        if not messages:
            return 0
        with self._lock, self._failures.watch("append"):
            conn = self._connection()
            with self._errors(), transaction(conn):
                conn.executemany(
                    "INSERT INTO messages (topic, payload, qos, created_s) VALUES (?, ?, ?, ?)",
                    messages,
                )
                n_held = self._depth + len(messages)
                n_dropped = self._delete_oldest(conn, n_held - self._max_messages)
                depth, dropped = n_held - n_dropped, self._dropped + n_dropped
                self._write_counters(conn, depth, dropped)
            # Only now: a transaction that did not commit leaves the counters as they were.
            self._depth, self._dropped = depth, dropped
        if n_dropped and not self._full:
            self._full = True
            logger.warning(
                "disk buffer %s is full (%d messages): dropping the oldest",
                self._path,
                self._max_messages,
            )
        return n_dropped

    def peek(self, limit: int) -> list[Buffered]:
        """Up to `limit` messages, oldest first, left in the buffer."""
        if limit < 0:
            raise ValueError(f"limit must not be negative, not {limit}")
        with self._lock, self._failures.watch("peek"), self._errors():
            rows = (
                self._connection()
                .execute(
                    "SELECT id, topic, payload, qos, created_s FROM messages ORDER BY id LIMIT ?",
                    (limit,),
                )
                .fetchall()
            )
        return [Buffered(*row) for row in rows]

    def remove(self, ids: Iterable[int]) -> None:
        """Delete these messages (acknowledged by the broker) in one transaction.

        An id that is not held (dropped meanwhile, or removed before) is ignored.
        """
        keys = [(i,) for i in ids]
        if not keys:
            return
        with self._lock, self._failures.watch("remove"):
            conn = self._connection()
            with self._errors():
                with transaction(conn):
                    n_removed = conn.executemany("DELETE FROM messages WHERE id = ?", keys).rowcount
                    if n_removed:
                        self._write_counters(conn, self._depth - n_removed, self._dropped)
                self._depth -= n_removed
                if self._depth == 0:
                    self._shrink(conn)
        if self._full and self._depth < self._max_messages:
            self._full = False
            logger.info(
                "disk buffer %s has room again (%d dropped in total)", self._path, self._dropped
            )

    def close(self) -> None:
        """Close the file; the last connection checkpoints the WAL into it. Idempotent."""
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None:
                with self._errors():
                    conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else f"depth={self._depth}"
        return f"DiskBuffer({str(self._path)!r}, max_messages={self._max_messages}, {state})"

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            if self._closed:
                raise ValueError(f"disk buffer {self._path} is closed")
            raise BufferCorruptError(f"buffer {self._path}: not open since a failed reopen")
        return self._conn

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return store_errors(_BUFFER_SPEC, self._path)

    @staticmethod
    def _delete_oldest(conn: sqlite3.Connection, n: int) -> int:
        """Inside a transaction: delete the n oldest messages; how many there were."""
        if n <= 0:
            return 0
        return conn.execute(
            "DELETE FROM messages WHERE id IN (SELECT id FROM messages ORDER BY id LIMIT ?)", (n,)
        ).rowcount

    def _read_counters(self, conn: sqlite3.Connection) -> tuple[int, int]:
        counters = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if set(counters) != {"depth", "dropped"}:
            raise BufferCorruptError(f"buffer {self._path}: meta holds {sorted(counters)}")
        return int(counters["depth"]), int(counters["dropped"])

    @staticmethod
    def _write_counters(conn: sqlite3.Connection, depth: int, dropped: int) -> None:
        """Inside a transaction: persist the counters, committed with the rows they count."""
        conn.executemany(
            "UPDATE meta SET value = ? WHERE key = ?", ((depth, "depth"), (dropped, "dropped"))
        )

    def _shrink(self, conn: sqlite3.Connection) -> None:
        """Give the space of an empty buffer back to the file system, and empty the WAL.

        VACUUM, not auto_vacuum=INCREMENTAL: with nothing left to copy, VACUUM writes a few
        pages, while incremental_vacuum rewrites every free page (measured: ~200 MiB of writes
        to release a drained 400 MiB file) and auto-vacuum's pointer maps cost writes at every
        commit. VACUUM keeps ids (explicit INTEGER PRIMARY KEY) and the AUTOINCREMENT counter.

        Housekeeping after a committed change: a failure is logged, not raised, so that the
        caller does not take its committed removal for a failed one.
        """
        try:
            n_free: int = conn.execute("PRAGMA freelist_count").fetchone()[0]
            if n_free < _SHRINK_MIN_FREE_PAGES:
                return
            conn.execute("VACUUM")
            # TRUNCATE: the database file shrinks only when the WAL is checkpointed into it; the
            # WAL itself is cut to zero bytes.
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.DatabaseError as exc:
            logger.warning("disk buffer %s: could not release free space: %s", self._path, exc)
            return
        logger.debug("disk buffer %s drained: released %d free pages", self._path, n_free)
