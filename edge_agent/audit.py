"""Audit log of every write the agent makes, or refuses to make, to a building point."""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Self

from edge_agent.buffer import (
    FailureLog,
    StoreSpec,
    Synchronous,
    open_or_reset,
    open_store,
    quick_check,
    store_errors,
    transaction,
)
from sensors.errors import IlmaError

logger = logging.getLogger(__name__)


class Outcome(StrEnum):
    """What became of one requested write."""

    APPLIED = "applied"  # written as requested
    CLAMPED = "clamped"  # written, but limited to the point's safe range
    RATE_LIMITED = "rate_limited"  # written, but the change was limited to the allowed rate
    UNCHANGED = "unchanged"  # not written: the point already holds the value
    REJECTED = "rejected"  # not written: the request was invalid or not allowed
    EXPIRED = "expired"  # not written: the command's validity ran out before it could be
    RELINQUISHED = "relinquished"  # our override was released back to the BMS's own schedule
    READBACK_MISMATCH = "readback_mismatch"  # written, but the device reports something else
    FAILED = "failed"  # the write itself failed (timeout, device error)


class Source(StrEnum):
    """Who asked for the write."""

    CONTROLLER = "controller"  # a command from the central controller
    FALLBACK = "fallback"  # the agent's own control while the controller is silent
    RELINQUISH = "relinquish"  # the agent handing a point back to the BMS


def _value(x: float | None) -> float | None:
    # NaN is how this code base says "missing"; SQLite has no NaN and would store NULL anyway.
    # Folding it to None here means a record reads back equal to what was recorded.
    return None if x is None or math.isnan(x) else float(x)


@dataclass(frozen=True)
class AuditRecord:
    """One write to a building point: requested, sent and read back, and what came of it.

    Values are in the point's SI unit; None means none (nothing requested, nothing sent, no
    read-back), and a NaN given for one is kept as None. Holds no personal data, by design:
    nothing but these fields is stored.
    """

    t_s: float  # epoch seconds, from the agent's clock
    zone: str
    point: str  # the point's name, e.g. "vav-101.airflow_setpoint"
    device: str
    requested: float | None
    written: float | None  # what was actually sent; None if nothing was sent
    read_back: float | None
    outcome: Outcome
    command_id: str | None  # "<controller>/<seq>"; None for the agent's own fallback
    source: Source
    reason: str  # the controller's reason, or the agent's

    def __post_init__(self) -> None:
        if not math.isfinite(self.t_s):
            raise ValueError(f"t_s must be finite, not {self.t_s!r}")
        # frozen: normalise through object.__setattr__, once, at construction.
        object.__setattr__(self, "t_s", float(self.t_s))
        object.__setattr__(self, "outcome", Outcome(self.outcome))
        object.__setattr__(self, "source", Source(self.source))
        for name in ("requested", "written", "read_back"):
            object.__setattr__(self, name, _value(getattr(self, name)))


class AuditStoreError(IlmaError, OSError):
    """The audit log's database cannot be used now (locked, read-only, disk full, I/O)."""


class AuditCorruptError(AuditStoreError):
    """The audit log's file is damaged, foreign or of another schema version."""


# Columns in AuditRecord's field order, spelled out in each statement (no SQL built at runtime).
_INSERT = (
    "INSERT INTO records (t_s, zone, point, device, requested, written, read_back, outcome,"
    " command_id, source, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_RECENT = (
    "SELECT t_s, zone, point, device, requested, written, read_back, outcome, command_id,"
    " source, reason FROM records ORDER BY id DESC LIMIT ?"
)
_SELECT_RECENT_IN_ZONE = (
    "SELECT t_s, zone, point, device, requested, written, read_back, outcome, command_id,"
    " source, reason FROM records WHERE zone = ? ORDER BY id DESC LIMIT ?"
)

_AUDIT_SPEC = StoreSpec(
    what="audit log",
    application_id=0x696C6D61,  # "ilma"
    user_version=1,
    tables=frozenset({"records"}),
    ddl=(
        # AUTOINCREMENT: the id is the order of recording, never reused after retention deleted
        # the oldest rows. "Newest" is by id, not t_s: a gateway without a real-time clock may
        # record its first writes after a reboot with a wrong time, before NTP corrects it.
        """CREATE TABLE records (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            t_s REAL NOT NULL,
            zone TEXT NOT NULL,
            point TEXT NOT NULL,
            device TEXT NOT NULL,
            requested REAL,
            written REAL,
            read_back REAL,
            outcome TEXT NOT NULL,
            command_id TEXT,
            source TEXT NOT NULL,
            reason TEXT NOT NULL
        )""",
        "CREATE INDEX records_by_zone ON records (zone, id)",
    ),
    error=AuditStoreError,
    corrupt_error=AuditCorruptError,
    # Not exclusive: an engineer on the gateway may read the log with the sqlite3 shell while
    # the agent runs (WAL lets them read without blocking our writes).
    exclusive=False,
)


def _row(rec: AuditRecord) -> tuple[object, ...]:
    return (
        rec.t_s,
        rec.zone,
        rec.point,
        rec.device,
        rec.requested,
        rec.written,
        rec.read_back,
        str(rec.outcome),
        rec.command_id,
        str(rec.source),
        rec.reason,
    )


class AuditLog:
    """A bounded, crash-safe log of AuditRecords in its own SQLite file (WAL).

    Keeps the newest `max_records`: the file stays at the size of that many, since the pages
    retention frees are reused by the next records. Callable from any thread (a lock serialises
    calls).
    """

    def __init__(self, path: Path, max_records: int, *, synchronous: Synchronous = "FULL") -> None:
        if max_records < 1:
            raise ValueError(f"max_records must be at least 1, not {max_records}")
        self._path = path
        self._max_records = max_records
        self._synchronous: Synchronous = synchronous
        self._lock = threading.Lock()
        self._closed = False  # by close(); a failed reopen leaves no connection but is no close
        self._failures = FailureLog("audit log", path, AuditStoreError, logger)
        self._conn: sqlite3.Connection | None = open_store(path, _AUDIT_SPEC, synchronous)
        try:
            with self._errors(), transaction(self._conn):
                # A smaller bound in the configuration applies at once.
                self._trim(self._conn)
        except BaseException:
            self.close()
            raise

    @classmethod
    def open_or_reset(
        cls, path: Path, max_records: int, *, synchronous: Synchronous = "FULL"
    ) -> AuditLog:
        """Open the log, checking the whole file; if it is damaged or foreign, move it aside and
        start empty. The agent's way to open it, at startup and after an AuditCorruptError.

        The agent keeps auditing rather than refusing to start; the old file is kept for
        whoever investigates. A locked or unreadable file still raises AuditStoreError.
        """
        return open_or_reset(
            lambda: cls(path, max_records, synchronous=synchronous),
            path,
            "audit log",
            AuditCorruptError,
        )

    def check(self) -> None:
        """Check the whole file (SQLite's quick_check and ours): AuditCorruptError if not."""
        with self._lock:
            quick_check(self._connection(), _AUDIT_SPEC, self._path)

    def reopen(self) -> None:
        """After an AuditCorruptError: close the file and open it again with `open_or_reset`.

        In place, so that everyone holding this log (the daemon across reloads, the agent's
        applier) goes on with it rather than with a closed one. A file that fails the
        whole-file check is moved aside and the log starts empty; one that passes keeps its
        records. Raises AuditStoreError if the file cannot be opened; until a reopen works,
        every call raises AuditCorruptError (the file still wants one).
        """
        with self._lock, self._failures.watch("reopen"):
            if self._closed:
                raise ValueError(f"audit log {self._path} is closed")
            conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            fresh = AuditLog.open_or_reset(
                self._path, self._max_records, synchronous=self._synchronous
            )
            # Take over the fresh log's connection; it is left closed.
            self._conn, fresh._conn = fresh._conn, None
            fresh._closed = True

    @property
    def path(self) -> Path:
        return self._path

    @property
    def max_records(self) -> int:
        return self._max_records

    def record(self, rec: AuditRecord) -> None:
        """Store one record, durably, in one transaction."""
        self.record_many((rec,))

    def record_many(self, recs: Sequence[AuditRecord]) -> None:
        """Store records in order, in one transaction; the oldest beyond the bound go."""
        if not recs:
            return
        rows = [_row(r) for r in recs]
        with self._lock, self._failures.watch("record"):
            conn = self._connection()
            with self._errors(), transaction(conn):
                conn.executemany(_INSERT, rows)
                self._trim(conn)

    def recent(self, limit: int, *, zone: str | None = None) -> list[AuditRecord]:
        """Up to `limit` records, newest (last recorded) first; only `zone`'s if given."""
        if limit < 0:
            raise ValueError(f"limit must not be negative, not {limit}")
        with self._lock, self._errors():
            conn = self._connection()
            if zone is None:
                rows = conn.execute(_SELECT_RECENT, (limit,)).fetchall()
            else:
                rows = conn.execute(_SELECT_RECENT_IN_ZONE, (zone, limit)).fetchall()
        try:
            return [AuditRecord(*row) for row in rows]
        except ValueError as exc:  # an outcome or source this version does not know
            raise AuditCorruptError(f"audit log {self._path}: {exc}") from exc

    def count_by_outcome(self) -> dict[Outcome, int]:
        """How many of the records held (not ever made) had each outcome; every outcome listed.

        A full scan of the table, which is bounded: for status pages, not for every write.
        """
        with self._lock, self._errors():
            rows = (
                self._connection()
                .execute("SELECT outcome, count(*) FROM records GROUP BY outcome")
                .fetchall()
            )
        counts = dict.fromkeys(Outcome, 0)
        try:
            for outcome, n in rows:
                counts[Outcome(outcome)] = int(n)
        except ValueError as exc:
            raise AuditCorruptError(f"audit log {self._path}: {exc}") from exc
        return counts

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
        state = "closed" if self._conn is None else "open"
        return f"AuditLog({str(self._path)!r}, max_records={self._max_records}, {state})"

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            if self._closed:
                raise ValueError(f"audit log {self._path} is closed")
            raise AuditCorruptError(f"audit log {self._path}: not open since a failed reopen")
        return self._conn

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return store_errors(_AUDIT_SPEC, self._path)

    def _trim(self, conn: sqlite3.Connection) -> None:
        """Inside a transaction: delete all but the newest max_records records.

        By id arithmetic rather than counting (COUNT or OFFSET would read the whole table on
        every write): rows are only ever deleted from the old end, so ids are consecutive and
        this keeps exactly max_records; were they not, it would keep fewer, never more.
        """
        conn.execute(
            "DELETE FROM records WHERE id <= (SELECT max(id) FROM records) - ?",
            (self._max_records,),
        )
