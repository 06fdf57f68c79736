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

    def write(self, records: Sequence[Record]) -> None: ...
    def close(self) -> None: ...


class HistoryQueue:
    """Bounded; full means the oldest records go (counted)."""

    def __init__(self, max_records: int) -> None:
        self.max_records = max_records
        self._q: deque[Record] = deque()
        self.dropped = 0
        self.written = 0
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()  # nothing queued and nothing on its way
        self._idle.set()

    def put(self, records: Iterable[Record]) -> None:
        q = self._q
        q.extend(records)
        over = len(q) - self.max_records
        if over > 0:
            if self.dropped == 0:
                log.warning(
                    "history queue full (%d records): dropping the oldest (counted; the "
                    "database is slow or away)",
                    self.max_records,
                )
            for _ in range(over):
                q.popleft()
            self.dropped += over
        if q:
            self._ready.set()
            self._idle.clear()

    def take(self, n: int) -> list[Record]:
        q = self._q
        batch = [q.popleft() for _ in range(min(n, len(q)))]
        if not q:
            self._ready.clear()
        return batch

    def __len__(self) -> int:
        return len(self._q)

    async def wait(self) -> None:
        await self._ready.wait()

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
            if len(self.queue) < self.batch_size:
                # Let a batch fill for up to the flush interval: one request, not hundreds.
                await asyncio.sleep(self.flush_interval_s)
            batch = self.queue.take(self.batch_size)
            if batch:
                await self._deliver(batch)

    async def _deliver(self, batch: list[Record]) -> None:
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
            self.queue.delivered(len(batch))
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

    def write(self, records: Sequence[Record]) -> None:
        lines = [text for text in map(line, records) if text is not None]
        if lines:
            self._api.write(
                bucket=self.bucket, org=self.org, record=lines, write_precision=self._precision
            )

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]
        self._client.close()  # type: ignore[no-untyped-call]


class SqliteSink:
    """The embedded history: one table of records, field values as JSON-free columns."""

    def __init__(self, cfg: SqliteHistory, clock: Callable[[], float] = time.time) -> None:
        cfg.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(cfg.path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS history (t_ns INTEGER NOT NULL, measurement TEXT NOT "
            "NULL, site TEXT, zone TEXT, tag TEXT, field TEXT NOT NULL, value REAL, text TEXT)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS history_t ON history (t_ns)")
        self._db.commit()
        self.retention_s = cfg.retention_days * 86_400.0
        self.clock = clock
        self._trimmed_at = -math.inf

    def write(self, records: Sequence[Record]) -> None:
        rows: list[
            tuple[int, str, str | None, str | None, str | None, str, float | None, str | None]
        ] = []
        for r in records:
            tags = dict(r.tags)
            site, zone = tags.pop("site", None), tags.pop("zone", None)
            tag = ",".join(f"{k}={v}" for k, v in tags.items()) or None
            for k, v in r.fields:
                if isinstance(v, str):
                    rows.append((r.t_ns, r.measurement, site, zone, tag, k, None, v))
                elif isinstance(v, bool) or math.isfinite(v):
                    rows.append((r.t_ns, r.measurement, site, zone, tag, k, float(v), None))
        with self._db:
            self._db.executemany("INSERT INTO history VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        now = self.clock()
        if now - self._trimmed_at > 3600.0:  # retention: once an hour is plenty
            cutoff = int((now - self.retention_s) * 1e9)
            with self._db:
                self._db.execute("DELETE FROM history WHERE t_ns < ?", (cutoff,))
            self._trimmed_at = now

    def close(self) -> None:
        self._db.close()


def make_sink(cfg: HistorianConfig) -> Sink:
    return InfluxSink(cfg.influxdb) if cfg.influxdb is not None else SqliteSink(cfg.sqlite)


def writer_for(cfg: HistorianConfig, queue: HistoryQueue, sink: Sink) -> Writer:
    influx = cfg.influxdb
    return Writer(
        queue,
        sink,
        batch_size=influx.batch_size if influx else 5000,
        flush_interval_s=influx.flush_interval_s if influx else 1.0,
    )
