"""History of readings, estimates and commands: InfluxDB (v2 write API) or an embedded SQLite file.

Control never waits for the database: records go into a bounded queue and a writer task sends
them in batches, retrying a failed batch with capped backoff until the database takes it. While
the database is away the queue fills; beyond its bound the oldest records are dropped and
counted, so nothing is lost within the bound and what is lost is known.

InfluxDB: line protocol through influxdb-client, site, zone and point (or gateway) as tags. It
works with InfluxDB 2.x/3.x and any server of the v2 write API (VictoriaMetrics in the tests).
Without an InfluxDB the same records go to SQLite with a retention period.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple, Protocol

from controller.service_config import Historian as HistorianConfig
from controller.service_config import InfluxDB as InfluxConfig
from controller.service_config import SqliteHistory
from controller.wire import Telemetry

log = logging.getLogger(__name__)

FieldValue = float | int | bool | str


class Record(NamedTuple):
    """One history point: what, where (tags), values, when (epoch ns)."""

    measurement: str
    tags: tuple[tuple[str, str], ...]
    fields: tuple[tuple[str, FieldValue], ...]
    t_ns: int


# --- line protocol (https://docs.influxdata.com/influxdb/v2/reference/syntax/line-protocol/) ---
# Written here rather than with influxdb_client.Point: building Point objects is the limit at
# ~120 k points/s (notes/components.md), plain strings ~6× faster.

_KEY_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ "})


def _field(value: FieldValue) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None  # no NaN in line protocol
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def line(r: Record) -> str | None:
    """The record in line protocol, or None if it has no writable field."""
    fields = []
    for k, v in r.fields:
        text = _field(v)
        if text is not None:
            fields.append(f"{k.translate(_KEY_ESCAPES)}={text}")
    if not fields:
        return None
    tags = "".join(
        f",{k.translate(_KEY_ESCAPES)}={v.translate(_KEY_ESCAPES)}" for k, v in r.tags if v
    )
    return f"{r.measurement.translate(_MEASUREMENT_ESCAPES)}{tags} {','.join(fields)} {r.t_ns}"


# --- the queue and the writer -----------------------------------------------------------------


class Sink(Protocol):
    """Where batches go; `write` raises on any failure (the batch is then retried)."""

    def write(self, items: Sequence[Item]) -> None: ...
    def close(self) -> None: ...


class TelemetryRecord(NamedTuple):
    """A whole telemetry message for history: one item in the queue, however many readings it
    holds (building forty Records per message on the ingest path cost more than the ingest).
    Sinks expand it as they need: lines for InfluxDB, one row for SQLite."""

    site: str
    msg: Telemetry
    payload: bytes  # the message as received (JSON)
    offset_s: float  # the gateway's clock offset when it arrived

    @property
    def n(self) -> int:
        return len(self.msg)

    def records(self) -> list[Record]:
        m, off = self.msg, self.offset_s
        return [
            Record(
                "reading",
                (("site", self.site), ("zone", r.zone), ("point", r.point.value),
                 ("gateway", m.gateway)),
                (*((("value", r.value),) if r.value is not None else ()),
                 ("quality", r.quality), ("replayed", r.replayed)),
                int((r.t + off) * 1e9),
            )
            for r in m.rows
        ]  # fmt: skip


Item = Record | TelemetryRecord


def _size(item: Item) -> int:
    return item.n if isinstance(item, TelemetryRecord) else 1


def expand(items: Iterable[Item]) -> list[Record]:
    """Every item as Records (a telemetry message as one per reading)."""
    out: list[Record] = []
    for item in items:
        if isinstance(item, TelemetryRecord):
            out.extend(item.records())
        else:
            out.append(item)
    return out


def _telemetry_lines(item: TelemetryRecord) -> list[str]:
    """The lines of `line(record)` for each of item.records(), built without the Records."""
    m = item.msg
    head = f"reading,site={_tag(item.site)},zone="
    gateway = _tag(m.gateway)
    out = []
    for r in m.rows:
        fields = f"quality={r.quality}i,replayed={'true' if r.replayed else 'false'}"
        if r.value is not None:
            fields = f"value={r.value!r},{fields}"
        t_ns = int((r.t + item.offset_s) * 1e9)
        out.append(f"{head}{_tag(r.zone)},point={r.point.value},gateway={gateway} {fields} {t_ns}")
    return out


def _tag(value: str) -> str:
    return value.translate(_KEY_ESCAPES)


class HistoryQueue:
    """Bounded in records; full means the oldest go (counted)."""

    def __init__(self, max_records: int) -> None:
        self.max_records = max_records
        self._q: deque[Item] = deque()
        self._n = 0  # records held (a telemetry message counts its readings)
        self.dropped = 0
        self.written = 0
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()  # nothing queued and nothing on its way
        self._idle.set()
        self._filled = asyncio.Event()  # the writer's batch is full (see filled())
        self._fill_to: int | None = None

    def put(self, records: Iterable[Record]) -> None:
        before = len(self._q)
        self._q.extend(records)
        self._n += len(self._q) - before
        self._settle()

    def put_message(self, item: TelemetryRecord) -> None:
        """A telemetry message's readings, as one item."""
        if item.n > 0:
            self._q.append(item)
            self._n += item.n
            self._settle()

    def _settle(self) -> None:
        q = self._q
        if self._n > self.max_records:
            if self.dropped == 0:
                log.warning(
                    "history queue full (%d records): dropping the oldest (counted; the "
                    "database is slow or away)",
                    self.max_records,
                )
            while self._n > self.max_records:
                k = _size(q.popleft())
                self._n -= k
                self.dropped += k
        if q:
            self._ready.set()
            self._idle.clear()
            if self._fill_to is not None and self._n >= self._fill_to:
                self._filled.set()

    def take(self, n: int) -> list[Item]:
        """About n records' worth of items, oldest first (a message is never split)."""
        q = self._q
        batch: list[Item] = []
        taken = 0
        while q and taken < n:
            item = q.popleft()
            batch.append(item)
            taken += _size(item)
        self._n -= taken
        if not q:
            self._ready.clear()
        return batch

    def __len__(self) -> int:
        return self._n

    async def wait(self) -> None:
        await self._ready.wait()

    async def filled(self, n: int, timeout_s: float) -> None:
        """Until `n` records are queued, or `timeout_s` passed."""
        if self._n >= n:
            return
        self._fill_to = n
        self._filled.clear()
        try:
            async with asyncio.timeout(timeout_s):
                await self._filled.wait()
        except TimeoutError:
            pass
        finally:
            self._fill_to = None

    def delivered(self, n: int) -> None:
        """The writer got `n` records into the database."""
        self.written += n
        if not self._q:
            self._idle.set()

    async def drained(self) -> None:
        """Until every record queued so far is in the database (on a clean stop)."""
        await self._idle.wait()


class Writer:
    """Moves batches from the queue to a sink, forever; a failing batch is retried with capped
    backoff and never dropped (the queue's bound is what limits loss)."""

    def __init__(
        self,
        queue: HistoryQueue,
        sink: Sink,
        *,
        batch_size: int = 5000,
        flush_interval_s: float = 1.0,
        backoff_max_s: float = 30.0,
    ) -> None:
        self.queue = queue
        self.sink = sink
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.backoff_max_s = backoff_max_s
        self.failures = 0
        self.batches = 0

    async def run(self) -> None:
        while True:
            await self.queue.wait()
            # Let a batch fill for up to the flush interval (one request, not hundreds), but
            # no longer than it takes to fill: a fast stream must not run into the bound.
            # (A queue bounded below a batch fills at its bound.)
            await self.queue.filled(
                min(self.batch_size, self.queue.max_records), self.flush_interval_s
            )
            batch = self.queue.take(self.batch_size)
            if batch:
                await self._deliver(batch)

    async def _deliver(self, batch: list[Item]) -> None:
        tries = 0
        while True:
            try:
                await asyncio.to_thread(self.sink.write, batch)
            except Exception as exc:  # noqa: BLE001  (any failure of the database: retry the batch)
                tries += 1
                self.failures += 1
                delay = min(self.backoff_max_s, 0.5 * 2.0 ** min(tries - 1, 10))
                if tries == 1:
                    log.warning("history write failed, retrying with backoff: %s", exc)
                else:
                    log.debug("history write failed again (%d): %s", tries, exc)
                await asyncio.sleep(delay)
                continue
            if tries:
                log.info("history writes succeed again after %d failures", tries)
            self.queue.delivered(sum(map(_size, batch)))
            self.batches += 1
            return


class InfluxSink:
    """Batches to an InfluxDB v2 write API as line protocol."""

    def __init__(self, cfg: InfluxConfig) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient  # noqa: PLC0415
        from influxdb_client.client.write_api import SYNCHRONOUS  # noqa: PLC0415
        from influxdb_client.domain.write_precision import WritePrecision  # noqa: PLC0415

        self._precision: WritePrecision = WritePrecision.NS  # type: ignore[assignment]

        token = cfg.token.read() if cfg.token is not None else "unused"
        # Retries are ours (Writer): the client's own would block the writer thread silently.
        self._client = InfluxDBClient(
            url=cfg.url, token=token, org=cfg.org, timeout=10_000, retries=0
        )
        self._api = self._client.write_api(write_options=SYNCHRONOUS)
        self.bucket = cfg.bucket
        self.org = cfg.org

    def write(self, items: Sequence[Item]) -> None:
        lines: list[str] = []
        for item in items:
            if isinstance(item, TelemetryRecord):
                lines += _telemetry_lines(item)
            elif (text := line(item)) is not None:
                lines.append(text)
        if lines:
            self._api.write(
                bucket=self.bucket, org=self.org, record=lines, write_precision=self._precision
            )

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]
        self._client.close()  # type: ignore[no-untyped-call]


SQLITE_BATCH_RECORDS = 100_000
# Rows per INSERT of telemetry (5 values each; SQLite allows 32,766 variables a statement).
_ROWS_PER_INSERT = 1000

_TELEMETRY_SCHEMA = """
CREATE TABLE IF NOT EXISTS telemetry (
    t_ns INTEGER NOT NULL, site TEXT NOT NULL, gateway TEXT NOT NULL, offset_s REAL NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS telemetry_t ON telemetry (t_ns);
CREATE VIEW IF NOT EXISTS readings AS
SELECT CAST((json_extract(m.payload, '$.readings.t[' || z.key || ']') + m.offset_s) * 1e9
            AS INTEGER) AS t_ns,
       m.site AS site,
       z.value AS zone,
       json_extract(m.payload, '$.readings.point[' || z.key || ']') AS point,
       m.gateway AS gateway,
       json_extract(m.payload, '$.readings.value[' || z.key || ']') AS value,
       json_extract(m.payload, '$.readings.quality[' || z.key || ']') AS quality,
       json_extract(m.payload, '$.readings.replayed[' || z.key || ']') AS replayed
FROM telemetry AS m, json_each(m.payload, '$.readings.zone') AS z;
"""


class SqliteSink:
    """The embedded history: a table per measurement (reading, estimate, command), one row per
    record, a column per tag and field, so that it reads like the InfluxDB series:
    `SELECT t_ns, zone, value FROM readings WHERE point = 'co2_ppm'`."""

    def __init__(self, cfg: SqliteHistory, clock: Callable[[], float] = time.time) -> None:
        cfg.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(cfg.path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # History is not the building's safety: an OS crash may lose the last second of it.
        self._db.execute("PRAGMA synchronous=NORMAL")
        # Telemetry is kept as received, a row per message (cheap to write at thousands of
        # messages a second); the `readings` view shows a row per reading, like InfluxDB.
        self._db.executescript(_TELEMETRY_SCHEMA)
        self._columns: dict[str, list[str]] = {}
        for (table,) in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            cols = self._db.execute(f'PRAGMA table_info("{table}")').fetchall()
            self._columns[table] = [c[1] for c in cols]
        self.retention_s = cfg.retention_days * 86_400.0
        self.clock = clock
        self._trimmed_at = -math.inf

    def _ensure(self, table: str, keys: list[str]) -> None:
        """The table exists and has a column for every key."""
        for name in (table, *keys):
            if not name.replace("_", "").isalnum():
                raise ValueError(f"not a history name: {name!r}")
        cols = self._columns.get(table)
        if cols is None:
            self._db.execute(f'CREATE TABLE "{table}" (t_ns INTEGER NOT NULL)')
            self._db.execute(f'CREATE INDEX "{table}_t" ON "{table}" (t_ns)')
            cols = self._columns[table] = ["t_ns"]
        for key in keys:
            if key not in cols:
                self._db.execute(f'ALTER TABLE "{table}" ADD COLUMN "{key}"')
                cols.append(key)

    def write(self, items: Sequence[Item]) -> None:
        groups: dict[str, list[Record]] = {}
        messages: list[tuple[int, str, str, float, str]] = []
        for item in items:
            if isinstance(item, TelemetryRecord):
                m = item.msg
                t_ns = int((m.t + item.offset_s) * 1e9)
                messages.append((t_ns, item.site, m.gateway, item.offset_s, item.payload.decode()))
            else:
                groups.setdefault(item.measurement, []).append(item)
        with self._db:
            # Many rows per statement: sqlite3 lets the GIL go and takes it back around each
            # statement, and taking it back from a busy event loop can wait its switch interval
            # (5 ms). Row by row, that made the writer fall behind the telemetry.
            for i in range(0, len(messages), _ROWS_PER_INSERT):
                chunk = messages[i : i + _ROWS_PER_INSERT]
                self._db.execute(
                    "INSERT INTO telemetry (t_ns, site, gateway, offset_s, payload) VALUES "  # noqa: S608  (placeholders only)
                    + ",".join(["(?, ?, ?, ?, ?)"] * len(chunk)),
                    [x for row in chunk for x in row],
                )
            for table, group in groups.items():
                keys = list(dict.fromkeys(k for r in group for k, _ in (*r.tags, *r.fields)))
                self._ensure(table, keys)
                # Names are checked in _ensure (letters, digits, '_'): safe to quote inline.
                columns = ", ".join(f'"{k}"' for k in keys)
                sql = f'INSERT INTO "{table}" (t_ns, {columns}) VALUES (?{", ?" * len(keys)})'  # noqa: S608
                self._db.executemany(sql, [_row(r, keys) for r in group])
        now = self.clock()
        if now - self._trimmed_at > 3600.0:  # retention: once an hour is plenty
            cutoff = int((now - self.retention_s) * 1e9)
            with self._db:
                for table in self._columns:
                    self._db.execute(f'DELETE FROM "{table}" WHERE t_ns < ?', (cutoff,))  # noqa: S608
            self._trimmed_at = now

    def close(self) -> None:
        self._db.close()


def _row(r: Record, keys: list[str]) -> tuple[object, ...]:
    values: dict[str, object] = dict(r.tags)
    for k, v in r.fields:
        # SQLite has no NaN (it would store NULL anyway); bools as 0/1.
        values[k] = None if isinstance(v, float) and not math.isfinite(v) else v
    return (r.t_ns, *(values.get(k) for k in keys))


def make_sink(cfg: HistorianConfig) -> Sink:
    return InfluxSink(cfg.influxdb) if cfg.influxdb is not None else SqliteSink(cfg.sqlite)


def writer_for(cfg: HistorianConfig, queue: HistoryQueue, sink: Sink) -> Writer:
    influx = cfg.influxdb
    return Writer(
        queue,
        sink,
        # SQLite: one transaction per batch, and a batch per turn of the event loop, which
        # under load has taken up to a thousand telemetry messages meanwhile (40 k readings).
        batch_size=influx.batch_size if influx else SQLITE_BATCH_RECORDS,
        flush_interval_s=influx.flush_interval_s if influx else 1.0,
    )
