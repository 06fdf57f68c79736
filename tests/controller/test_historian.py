"""Tests for controller.historian: line protocol, the bounded queue, the writer, SQLite history."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.historian import (
    SQLITE_BATCH_RECORDS,
    FieldValue,
    HistoryQueue,
    InfluxSink,
    Item,
    Record,
    SqliteSink,
    TelemetryRecord,
    Writer,
    _telemetry_lines,
    expand,
    line,
    make_sink,
    writer_for,
)
from controller.service_config import Historian, InfluxDB, SqliteHistory
from controller.wire import Quantity, Reading, Telemetry, encode

T_NS = 1_800_000_000_000_000_000
GUARD_S = 10.0  # only against a hang: no test waits on time passing
T = TypeVar("T")


def rec(i: int, measurement: str = "reading") -> Record:
    return Record(measurement, (("site", "s"), ("zone", f"z{i}")), (("value", float(i)),), T_NS + i)


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    async def guarded() -> T:
        async with asyncio.timeout(GUARD_S):
            return await main()

    return asyncio.run(guarded())


# --- line protocol: golden cases ----------------------------------------------------------------

GOLDEN: list[tuple[Record, str | None]] = [
    (
        Record("reading", (("site", "helsinki-office"), ("zone", "office-e1")),
               (("value", 612.5),), T_NS),
        f"reading,site=helsinki-office,zone=office-e1 value=612.5 {T_NS}",
    ),
    # Measurement: commas and spaces escaped, an equals sign is plain.
    (Record("my meas,x=y", (), (("v", 1.0),), 0), r"my\ meas\,x=y v=1.0 0"),
    # Tag keys and values, field keys: commas, equals signs and spaces escaped.
    (
        Record("m", (("a,b=c d", "e,f=g h"),), (("air flow=x,y", 2.0),), 5),
        r"m,a\,b\=c\ d=e\,f\=g\ h air\ flow\=x\,y=2.0 5",
    ),
    # Strings: quotes and backslashes escaped, the rest as is.
    (Record("m", (), (("s", 'say "hi" \\ to C:\\, x=1 y'),), 1),
     r'm s="say \"hi\" \\ to C:\\, x=1 y" 1'),
    (Record("m", (), (("s", ""),), 1), 'm s="" 1'),
    # Integers with `i`, booleans as words (not 1i), floats stay floats.
    (Record("m", (), (("n", 3), ("neg", -7), ("big", 2**62)), 1), f"m n=3i,neg=-7i,big={2**62}i 1"),
    (Record("m", (), (("on", True), ("off", False)), 1), "m on=true,off=false 1"),
    (Record("m", (), (("f", 2.0), ("tiny", 1e-7), ("huge", -1e20)), 1),
     "m f=2.0,tiny=1e-07,huge=-1e+20 1"),
    # NaN and infinities are dropped; a record left with no field is no line.
    (Record("m", (), (("a", math.nan), ("b", 1.5), ("c", math.inf), ("d", -math.inf)), 1),
     "m b=1.5 1"),
    (Record("m", (("site", "s"),), (("a", math.nan), ("c", math.inf)), 1), None),
    (Record("m", (("site", "s"),), (), 1), None),
    # Empty tag values are omitted (line protocol has no empty tag value).
    (Record("m", (("site", "s"), ("gateway", ""), ("zone", "z")), (("v", 0.0),), 9),
     "m,site=s,zone=z v=0.0 9"),
]  # fmt: skip


@pytest.mark.parametrize(("record", "expected"), GOLDEN)
def test_line_golden(record: Record, expected: str | None) -> None:
    assert line(record) == expected


# --- line protocol: round trip through a small parser ------------------------------------------


def _scan(text: str, i: int, stops: str, escapable: str) -> tuple[str, int]:
    """Read up to the first unescaped stop character; `\\x` is x for x in `escapable`, and a
    backslash before anything else is itself (as InfluxDB reads it)."""
    out = []
    while i < len(text) and text[i] not in stops:
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in escapable:
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out), i


def _value(text: str, i: int) -> tuple[FieldValue, int]:
    if text[i] == '"':
        raw, i = _scan(text, i + 1, '"', '"\\')
        assert text[i] == '"', "unterminated string"
        return raw, i + 1
    raw, i = _scan(text, i, ", ", "")
    if raw in ("true", "false"):
        return raw == "true", i
    if raw.endswith("i"):
        return int(raw[:-1]), i
    return float(raw), i


def parse_line(text: str) -> Record:
    """InfluxDB line protocol (one line, timestamp required) back to a Record."""
    measurement, i = _scan(text, 0, ", ", ", ")
    tags = []
    while text[i] == ",":
        key, i = _scan(text, i + 1, "=", ",= ")
        assert text[i] == "="
        value, i = _scan(text, i + 1, ", ", ",= ")
        tags.append((key, value))
    assert text[i] == " "
    fields: list[tuple[str, FieldValue]] = []
    while True:
        key, i = _scan(text, i + 1, "=", ",= ")
        assert text[i] == "="
        field, i = _value(text, i + 1)
        fields.append((key, field))
        if text[i] == " ":
            break
        assert text[i] == ","
    stamp = text[i + 1 :]
    assert stamp.lstrip("-").isdigit(), stamp
    return Record(measurement, tuple(tags), tuple(fields), int(stamp))


def test_the_parser_reads_the_golden_lines() -> None:
    for record, expected in GOLDEN:
        if expected is not None:
            back = parse_line(expected)
            assert back.measurement == record.measurement
            assert back.tags == tuple((k, v) for k, v in record.tags if v)


# Characters line protocol can carry in names: no newline (a line ends there) and no backslash
# (line protocol cannot escape a trailing one); ilma's names (NAME_PATTERN) have neither.
_name_chars = st.characters(exclude_categories=["Cs", "Cc"], exclude_characters="\\\n\r")
names = st.text(_name_chars, min_size=1, max_size=12)
_string_chars = st.characters(exclude_categories=["Cs"], exclude_characters="\n\r")
field_values = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(_string_chars, max_size=20),
)


@settings(max_examples=400)
@given(
    measurement=names.filter(lambda s: not s.startswith("#")),  # a leading '#' is a comment
    tags=st.dictionaries(names, st.one_of(st.just(""), names), max_size=4),
    fields=st.dictionaries(names, field_values, max_size=5),
    t_ns=st.integers(-(2**62), 2**62),
)
def test_line_parses_back_to_the_same_tags_and_fields(
    measurement: str, tags: dict[str, str], fields: dict[str, FieldValue], t_ns: int
) -> None:
    r = Record(measurement, tuple(tags.items()), tuple(fields.items()), t_ns)
    text = line(r)
    writable = tuple(
        (k, v) for k, v in fields.items() if not (isinstance(v, float) and not math.isfinite(v))
    )
    if not writable:
        assert text is None
        return
    assert text is not None
    assert "\n" not in text
    back = parse_line(text)
    assert back.measurement == measurement
    assert back.tags == tuple((k, v) for k, v in tags.items() if v)
    assert back.t_ns == t_ns
    assert [k for k, _ in back.fields] == [k for k, _ in writable]
    for (_, got), (_, want) in zip(back.fields, writable, strict=True):
        assert type(got) is type(want)
        assert got == want


# --- the queue ---------------------------------------------------------------------------------


def test_the_queue_drops_the_oldest_beyond_its_bound_and_counts_them() -> None:
    q = HistoryQueue(max_records=5)
    q.put(rec(i) for i in range(3))
    assert (len(q), q.dropped) == (3, 0)
    q.put([rec(3), rec(4), rec(5), rec(6)])
    assert (len(q), q.dropped) == (5, 2)
    q.put(rec(i) for i in range(7, 20))  # one put far beyond the bound
    assert (len(q), q.dropped) == (5, 15)
    assert [r.t_ns - T_NS for r in expand(q.take(100))] == [15, 16, 17, 18, 19]
    assert len(q) == 0


@given(
    st.integers(1, 20),
    st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), max_size=30),
)
def test_the_queue_bound_and_drop_count_are_exact(bound: int, steps: list[tuple[int, int]]) -> None:
    q = HistoryQueue(bound)
    model: deque[int] = deque()
    dropped = taken_n = 0
    counter = 0
    for put_n, take_n in steps:
        batch = list(range(counter, counter + put_n))
        counter += put_n
        q.put(rec(i) for i in batch)
        model.extend(batch)
        while len(model) > bound:
            model.popleft()
            dropped += 1
        taken = [r.t_ns - T_NS for r in expand(q.take(take_n))]
        expected = [model.popleft() for _ in range(min(take_n, len(model)))]
        assert taken == expected
        taken_n += len(taken)
        assert len(q) == len(model) <= bound
        assert q.dropped == dropped
    assert taken_n + dropped + len(q) == counter  # every record accounted for


def test_drained_is_immediate_when_nothing_was_queued() -> None:
    q = HistoryQueue(10)
    q.put([])
    run(q.drained)


# --- the writer --------------------------------------------------------------------------------


class FlakySink:
    """Fails the first `failures` writes, then takes every batch."""

    def __init__(self, failures: int) -> None:
        self.left = failures
        self.attempts: list[list[Record]] = []
        self.written: list[list[Record]] = []

    def write(self, records: Sequence[Item]) -> None:
        self.attempts.append(expand(records))
        if self.left > 0:
            self.left -= 1
            raise ConnectionError("database away")
        self.written.append(expand(records))

    def close(self) -> None:
        pass


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """asyncio.sleep, recorded and not waited for (it still yields to the loop once)."""
    delays: list[float] = []
    real = asyncio.sleep

    async def fake(delay: float, result: Any = None) -> Any:
        delays.append(delay)
        return await real(0, result)

    monkeypatch.setattr(asyncio, "sleep", fake)  # what controller.historian awaits
    return delays


async def _until_drained(writer: Writer, puts: Callable[[], Awaitable[None]] | None = None) -> None:
    task = asyncio.create_task(writer.run(), name="history-writer")
    try:
        if puts is not None:
            await puts()
        await writer.queue.drained()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("failures", [0, 1, 9])
def test_the_writer_loses_nothing_keeps_order_and_caps_its_backoff(
    failures: int, sleeps: list[float]
) -> None:
    q = HistoryQueue(1000)
    records = [rec(i) for i in range(10)]
    q.put(records)
    sink = FlakySink(failures)
    flush = 0.123
    writer = Writer(q, sink, batch_size=3, flush_interval_s=flush, backoff_max_s=3.0)
    run(lambda: _until_drained(writer))
    assert [r for batch in sink.written for r in batch] == records
    assert [len(b) for b in sink.written] == [3, 3, 3, 1]
    # The failing batch was retried as it was, not dropped or split.
    assert all(a == records[:3] for a in sink.attempts[: failures + 1])
    assert writer.failures == failures
    assert writer.batches == 4
    assert (q.written, q.dropped, len(q)) == (10, 0, 0)
    assert sleeps == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0][:failures]


def test_the_writer_waits_for_a_full_batch_only_as_long_as_it_takes_to_fill() -> None:
    q = HistoryQueue(1000)

    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        filling = asyncio.create_task(q.filled(5, timeout_s=30.0))
        for i in range(5):
            await asyncio.sleep(0)
            q.put([rec(i)])
        await filling  # the fifth record ended the wait, not the 30 s
        filled_after = loop.time() - t0
        t0 = loop.time()
        await q.filled(50, timeout_s=0.05)  # never filled: the flush interval ends it
        return filled_after, loop.time() - t0

    filled_after, timed_out_after = run(main)
    assert filled_after < 30.0
    assert timed_out_after >= 0.05


def test_the_backoff_exponent_stops_growing_under_a_huge_cap(sleeps: list[float]) -> None:
    q = HistoryQueue(10)
    q.put([rec(0)])
    sink = FlakySink(40)
    writer = Writer(q, sink, batch_size=1, backoff_max_s=1e9)
    run(lambda: _until_drained(writer))
    assert writer.failures == 40
    assert max(sleeps) == 0.5 * 2.0**10  # the exponent stops growing too (no overflow)
    assert sleeps == sorted(sleeps)
    assert sink.written == [[rec(0)]]


@pytest.mark.usefixtures("sleeps")
def test_records_put_while_the_database_is_away_follow_in_order() -> None:
    q = HistoryQueue(1000)
    sink = FlakySink(3)
    writer = Writer(q, sink, batch_size=2, flush_interval_s=0.01)

    async def puts() -> None:
        for i in range(7):
            q.put([rec(i)])
            await asyncio.sleep(0)

    run(lambda: _until_drained(writer, puts))
    assert [r for b in sink.written for r in b] == [rec(i) for i in range(7)]
    assert q.written == 7


class BlockingSink:
    """A write that takes until the test lets it finish."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.written: list[Record] = []

    def write(self, records: Sequence[Item]) -> None:
        self.started.set()
        assert self.release.wait(GUARD_S)
        self.written += expand(records)

    def close(self) -> None:
        pass


def test_drained_waits_for_the_batch_in_flight() -> None:
    q = HistoryQueue(100)
    sink = BlockingSink()
    writer = Writer(q, sink, batch_size=3)

    async def main() -> None:
        task = asyncio.create_task(writer.run(), name="history-writer")
        q.put([rec(0), rec(1), rec(2)])
        drained = asyncio.create_task(q.drained(), name="drained")
        assert await asyncio.to_thread(sink.started.wait, GUARD_S)
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(q) == 0  # taken from the queue...
        assert not drained.done()  # ...but not yet in the database
        sink.release.set()
        await drained
        assert sink.written == [rec(0), rec(1), rec(2)]
        assert q.written == 3
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main)


# --- sinks -------------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _rows(path: Path, table: str, columns: str = "*") -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(f'SELECT {columns} FROM "{table}" ORDER BY t_ns').fetchall()  # noqa: S608


def test_sqlite_writes_a_row_per_record_in_a_table_per_measurement(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "history.sqlite"
    now = 1.8e9
    sink = SqliteSink(SqliteHistory(path=path, retention_days=1.0), clock=Clock(now))
    t = int(now * 1e9)
    sink.write(
        [
            Record(
                "reading",
                (("site", "s"), ("zone", "z"), ("point", "co2_ppm"), ("gateway", "gw-1")),
                (("value", 612.5), ("quality", 0), ("replayed", True), ("bad", math.nan)),
                t,
            ),
            Record("command", (("site", "s"),), (("reason", "occupancy+co2"),), t + 1),
        ]
    )
    # A later record with a field the table has not seen gets a column of its own.
    sink.write([Record("reading", (("site", "s"),), (("value", 1.0), ("extra", 2)), t + 2)])
    sink.close()
    assert _rows(
        path, "reading", "t_ns, site, zone, point, gateway, value, quality, replayed, bad, extra"
    ) == [
        (t, "s", "z", "co2_ppm", "gw-1", 612.5, 0, 1, None, None),
        (t + 2, "s", None, None, None, 1.0, None, None, None, 2),
    ]
    assert _rows(path, "command") == [(t + 1, "s", "occupancy+co2")]


def test_sqlite_refuses_names_that_are_not_identifiers(tmp_path: Path) -> None:
    sink = SqliteSink(SqliteHistory(path=tmp_path / "h.sqlite"), clock=Clock(1.8e9))
    try:
        with pytest.raises(ValueError, match="not a history name"):
            sink.write([Record('x"; DROP TABLE reading; --', (), (("v", 1.0),), 1)])
    finally:
        sink.close()


def test_sqlite_trims_by_retention_with_its_clock(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    day = 86_400.0
    clock = Clock(1.8e9)
    sink = SqliteSink(SqliteHistory(path=path, retention_days=2.0), clock=clock)

    def at(age_days: float, i: int) -> Record:
        return Record("m", (), (("v", float(i)),), int((clock.now - age_days * day) * 1e9))

    def values() -> list[float]:
        return sorted(r[0] for r in _rows(path, "m", "v"))

    sink.write([at(3.0, 0), at(1.0, 1)])  # the 3-day-old record is past retention
    assert values() == [1.0]
    clock.now += 1.5 * day  # record 1 is now 2.5 days old
    sink.write([at(0.0, 2)])
    assert values() == [2.0]
    # Another 10 minutes: too soon to trim again, nothing newly past retention is deleted yet.
    clock.now += 600.0
    sink.write([at(2.5, 3)])
    assert values() == [2.0, 3.0]
    clock.now += 3600.0
    sink.write([at(0.0, 4)])
    assert values() == [2.0, 4.0]
    sink.close()


def test_sqlite_reopens_its_file(tmp_path: Path) -> None:
    cfg = SqliteHistory(path=tmp_path / "h.sqlite", retention_days=1.0)
    first = SqliteSink(cfg, clock=Clock(1.8e9))
    first.write([rec(1)])
    first.close()
    second = SqliteSink(cfg, clock=Clock(1.8e9))
    second.write([rec(2)])
    second.close()
    assert [r[0] for r in _rows(cfg.path, rec(1).measurement, "zone")] == ["z1", "z2"]


def test_make_sink_and_writer_follow_the_config(tmp_path: Path) -> None:
    sqlite_cfg = Historian(sqlite=SqliteHistory(path=tmp_path / "h.sqlite"))
    sink = make_sink(sqlite_cfg)
    try:
        assert isinstance(sink, SqliteSink)
        w = writer_for(sqlite_cfg, HistoryQueue(100), sink)
        assert (w.batch_size, w.flush_interval_s) == (SQLITE_BATCH_RECORDS, 1.0)
    finally:
        sink.close()
    influx_cfg = Historian(
        influxdb=InfluxDB(url="http://127.0.0.1:9", batch_size=7, flush_interval_s=0.25)
    )
    influx = make_sink(influx_cfg)
    try:
        assert isinstance(influx, InfluxSink)
        w = writer_for(influx_cfg, HistoryQueue(100), influx)
        assert (w.batch_size, w.flush_interval_s) == (7, 0.25)
    finally:
        influx.close()


class FakeWriteApi:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def write(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)

    def close(self) -> None:
        pass


def test_influx_sink_sends_the_writable_lines_as_one_request() -> None:
    sink = InfluxSink(InfluxDB(url="http://127.0.0.1:9", org="city", bucket="b"))
    real_api = sink._api
    fake = FakeWriteApi()
    sink._api = fake  # type: ignore[assignment]
    try:
        sink.write([rec(1), Record("m", (), (("x", math.nan),), 1), rec(2)])
        sink.write([Record("m", (), (("x", math.nan),), 1)])  # nothing writable: no request
    finally:
        sink._api = real_api
        sink.close()
    assert len(fake.calls) == 1
    call = fake.calls[0]
    assert (call["bucket"], call["org"]) == ("b", "city")
    assert call["record"] == [line(rec(1)), line(rec(2))]


def _message() -> TelemetryRecord:
    readings = (
        Reading(zone="office-1", point=Quantity.CO2_PPM, t=1.8e9, value=612.5),
        Reading(zone="hall", point=Quantity.PEOPLE_IN, t=1.8e9 + 1, value=None, quality=1),
        Reading(zone="hall", point=Quantity.T_ZONE_C, t=1.8e9 - 60, value=21.0, replayed=True),
    )
    msg = Telemetry.of(gateway="gw-1", boot_t=1.0, seq=3, t=1.8e9 + 2, readings=readings)
    return TelemetryRecord("site a", msg, encode(msg), offset_s=-0.5)


def test_a_telemetry_message_makes_the_lines_its_records_make() -> None:
    item = _message()
    assert item.n == 3
    assert _telemetry_lines(item) == [line(r) for r in item.records()]
    assert expand([item, rec(1)]) == [*item.records(), rec(1)]


def test_sqlite_keeps_telemetry_as_received_and_shows_a_row_per_reading(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    sink = SqliteSink(SqliteHistory(path=path), clock=Clock(1.8e9))
    item = _message()
    sink.write([item])
    sink.close()
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT t_ns, site, zone, point, gateway, value, quality, replayed FROM readings "
            "ORDER BY t_ns"
        ).fetchall()
    expected = sorted(
        (r.t_ns, "site a", dict(r.tags)["zone"], dict(r.tags)["point"], "gw-1",
         dict(r.fields).get("value"), dict(r.fields)["quality"], int(dict(r.fields)["replayed"]))
        for r in item.records()
    )  # fmt: skip
    assert rows == expected


def test_a_queued_message_counts_its_readings_against_the_bound() -> None:
    q = HistoryQueue(max_records=5)
    q.put_message(_message())
    q.put_message(_message())  # 6 readings > 5: the oldest message goes whole
    assert (len(q), q.dropped) == (3, 3)


def test_a_queue_bounded_below_a_batch_is_written_when_it_reaches_its_bound() -> None:
    """The writer waits for a full batch or the flush interval; a queue that can never hold a
    full batch counts as full at its bound, or it would drop while the writer waits."""
    q = HistoryQueue(10)
    sink = FlakySink(0)
    writer = Writer(q, sink, batch_size=100, flush_interval_s=60.0)

    async def puts() -> None:
        await asyncio.sleep(0)  # the writer is waiting
        q.put([rec(i) for i in range(10)])

    async def main() -> None:
        async with asyncio.timeout(10):  # not the 60 s flush interval
            await _until_drained(writer, puts)

    run(main)
    assert [r for b in sink.written for r in b] == [rec(i) for i in range(10)]
    assert q.dropped == 0
