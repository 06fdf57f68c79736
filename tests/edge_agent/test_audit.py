"""AuditLog: records round-trip, newest first, bounded, filtered by zone, counted, persistent."""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import sqlite3
from pathlib import Path

import pytest

from edge_agent.audit import (
    AuditCorruptError,
    AuditLog,
    AuditRecord,
    AuditStoreError,
    Outcome,
    Source,
)
from edge_agent.buffer import DiskBuffer
from sensors.errors import IlmaError


def rec(
    n: int,
    *,
    zone: str = "z1",
    outcome: Outcome = Outcome.APPLIED,
    source: Source = Source.CONTROLLER,
) -> AuditRecord:
    """A record numbered n: its number shows in t_s, the values and the command id."""
    return AuditRecord(
        t_s=1_700_000_000.0 + n,
        zone=zone,
        point=f"vav-{100 + n}.airflow_setpoint",
        device=f"bacnet:{n}",
        requested=0.1 * n,
        written=0.1 * n if outcome is not Outcome.REJECTED else None,
        read_back=0.1 * n + 0.001,
        outcome=outcome,
        command_id=f"central/{n}" if source is Source.CONTROLLER else None,
        source=source,
        reason=f"occupancy {n} people",
    )


def test_every_outcome_and_source_round_trips(tmp_path: Path) -> None:
    sources = list(Source)
    sent = [
        rec(n, outcome=outcome, source=sources[n % len(sources)])
        for n, outcome in enumerate(Outcome)
    ]
    sent.append(
        AuditRecord(
            t_s=-1.5,
            zone="",
            point="ahu-1.supply_temp_setpoint",
            device="modbus:3",
            requested=None,
            written=None,
            read_back=None,
            outcome=Outcome.FAILED,
            command_id=None,
            source=Source.FALLBACK,
            reason="",
        )
    )
    path = tmp_path / "audit.sqlite"
    with AuditLog(path, 100) as log:
        for r in sent[:3]:
            log.record(r)
        log.record_many(sent[3:])
        assert log.recent(100) == sent[::-1]
    with AuditLog(path, 100) as log:
        got = log.recent(100)
    assert got == sent[::-1]
    for r in got:
        assert type(r.outcome) is Outcome
        assert type(r.source) is Source


def test_recent_is_newest_recorded_first_whatever_the_clock_said(tmp_path: Path) -> None:
    # A gateway without a real-time clock may stamp writes with a wrong time until NTP syncs.
    stamps = [50.0, 10.0, 30.0, 20.0, 40.0]
    sent = [dataclasses.replace(rec(n), t_s=t) for n, t in enumerate(stamps)]
    with AuditLog(tmp_path / "audit.sqlite", 100) as log:
        log.record_many(sent[:2])
        log.record_many(sent[2:])
        assert log.recent(3) == [sent[4], sent[3], sent[2]]
        assert log.recent(0) == []
        assert log.recent(99) == sent[::-1]
        with pytest.raises(ValueError, match="limit"):
            log.recent(-1)


def test_retention_keeps_the_newest_max_records(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    sent = [rec(n) for n in range(40)]
    with AuditLog(path, 10) as log:
        for r in sent[:7]:
            log.record(r)
        assert log.recent(100) == sent[:7][::-1]
        log.record_many(sent[7:12])
        assert log.recent(100) == sent[2:12][::-1]
        log.record_many(sent[12:40])  # a batch larger than the bound
        assert log.recent(100) == sent[30:40][::-1]
    with AuditLog(path, 10) as log:
        log.record(rec(40))
        assert log.recent(100) == [rec(40), *sent[31:40][::-1]]
    with AuditLog(path, 4) as log:  # a smaller bound applies at once
        assert log.recent(100) == [rec(40), *sent[37:40][::-1]]
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT count(*) FROM records").fetchone() == (4,)
    finally:
        conn.close()


def test_zone_filter(tmp_path: Path) -> None:
    sent = [rec(n, zone=f"z{n % 3}") for n in range(30)]
    with AuditLog(tmp_path / "audit.sqlite", 100) as log:
        log.record_many(sent)
        for zone in ("z0", "z1", "z2"):
            expected = [r for r in reversed(sent) if r.zone == zone]
            assert log.recent(100, zone=zone) == expected
            assert log.recent(4, zone=zone) == expected[:4]
        assert log.recent(100, zone="elsewhere") == []
        assert log.recent(100) == sent[::-1]


def test_count_by_outcome_counts_what_is_held(tmp_path: Path) -> None:
    rng = random.Random(5)
    outcomes = [rng.choice([Outcome.APPLIED, Outcome.CLAMPED, Outcome.FAILED]) for _ in range(60)]
    path = tmp_path / "audit.sqlite"
    with AuditLog(path, 50) as log:
        assert log.count_by_outcome() == dict.fromkeys(Outcome, 0)
        log.record_many([rec(n, outcome=o) for n, o in enumerate(outcomes)])
        counts = log.count_by_outcome()
    assert set(counts) == set(Outcome)
    held = outcomes[10:]
    assert counts == {o: held.count(o) for o in Outcome}
    assert sum(counts.values()) == 50
    with AuditLog(path, 50) as log:
        assert log.count_by_outcome() == counts


def test_nan_values_are_kept_as_none_and_the_record_is_checked() -> None:
    r = dataclasses.replace(rec(1), requested=math.nan, read_back=math.nan)
    assert (r.requested, r.written, r.read_back) == (None, rec(1).written, None)
    assert r == dataclasses.replace(rec(1), requested=None, read_back=None)
    as_text = dataclasses.replace(rec(1), outcome="clamped", source="fallback")  # type: ignore[arg-type]
    assert as_text.outcome is Outcome.CLAMPED
    assert as_text.source is Source.FALLBACK
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="t_s"):
            dataclasses.replace(rec(1), t_s=bad)
    with pytest.raises(ValueError, match="nonsense"):
        dataclasses.replace(rec(1), outcome="nonsense")  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.reason = "changed"  # type: ignore[misc]


def test_the_record_has_exactly_the_audit_fields() -> None:
    # No personal data: growing the record is a decision, not an accident.
    assert [f.name for f in dataclasses.fields(AuditRecord)] == [
        "t_s",
        "zone",
        "point",
        "device",
        "requested",
        "written",
        "read_back",
        "outcome",
        "command_id",
        "source",
        "reason",
    ]
    assert [o.value for o in Outcome] == [
        "applied",
        "clamped",
        "rate_limited",
        "unchanged",
        "rejected",
        "expired",
        "relinquished",
        "readback_mismatch",
        "failed",
    ]
    assert [s.value for s in Source] == ["controller", "fallback", "relinquish"]


def test_the_file_is_wal_and_readable_while_the_agent_writes(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    with AuditLog(path, 100) as log:
        log.record(rec(1))
        reader = sqlite3.connect(path, timeout=0.1)
        try:
            assert reader.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert reader.execute("SELECT zone, outcome FROM records").fetchall() == [
                ("z1", "applied")
            ]
            log.record(rec(2))  # not blocked by the reader
            assert reader.execute("SELECT count(*) FROM records").fetchone() == (2,)
        finally:
            reader.close()


def test_closed_log_refuses_use(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.sqlite", 10)
    log.close()
    log.close()
    with pytest.raises(ValueError, match="closed"):
        log.record(rec(1))
    with pytest.raises(ValueError, match="closed"):
        log.recent(1)
    with pytest.raises(ValueError, match="closed"):
        log.count_by_outcome()
    with pytest.raises(ValueError, match="max_records"):
        AuditLog(tmp_path / "other.sqlite", 0)


def test_a_damaged_or_foreign_file_is_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert issubclass(AuditCorruptError, AuditStoreError)
    assert issubclass(AuditStoreError, IlmaError)
    assert issubclass(AuditStoreError, OSError)
    garbage = random.Random(11).randbytes(16 * 1024)
    damaged = tmp_path / "damaged.sqlite"
    damaged.write_bytes(garbage)
    foreign = tmp_path / "foreign.sqlite"
    DiskBuffer(foreign, 10).close()
    for path in (damaged, foreign):
        with pytest.raises(AuditCorruptError):
            AuditLog(path, 10)
        before = path.read_bytes()
        with caplog.at_level(logging.ERROR, logger="edge_agent.audit"):
            log = AuditLog.open_or_reset(path, 10)
        with log:
            assert log.recent(10) == []
            log.record(rec(1))
            assert log.recent(10) == [rec(1)]
        (moved,) = tmp_path.glob(path.name + ".corrupt-*")
        assert moved.read_bytes() == before
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 2


def test_damage_deep_in_the_file_is_found_by_open_or_reset(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    with AuditLog(path, 10_000) as log:
        log.record_many([dataclasses.replace(rec(n), reason="x" * 1000) for n in range(2000)])
    data = bytearray(path.read_bytes())
    middle = len(data) // 4096 // 2 * 4096
    data[middle : middle + 20 * 4096] = random.Random(3).randbytes(20 * 4096)
    path.write_bytes(data)
    with AuditLog(path, 10_000) as log:  # the header and schema are intact
        assert len(log.recent(5)) == 5
        with pytest.raises(AuditCorruptError):
            log.recent(10_000)
    with AuditLog.open_or_reset(path, 10_000) as log:
        assert log.recent(10_000) == []
    (moved,) = tmp_path.glob("audit.sqlite.corrupt-*")
    assert moved.read_bytes() == data


def test_reopen_after_real_damage_moves_the_file_aside_in_place(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The agent's recovery: the same AuditLog object (the daemon and the applier hold it)
    goes on, on a new file, after SQLite itself found the damage."""
    path = tmp_path / "audit.sqlite"
    with AuditLog(path, 10_000) as log:
        log.record_many([dataclasses.replace(rec(n), reason="x" * 1000) for n in range(2000)])
    data = bytearray(path.read_bytes())
    middle = len(data) // 4096 // 2 * 4096
    data[middle : middle + 20 * 4096] = random.Random(3).randbytes(20 * 4096)
    path.write_bytes(data)
    with AuditLog(path, 10_000) as log:
        with pytest.raises(AuditCorruptError):
            log.recent(10_000)
        log.reopen()
        assert log.recent(10) == []
        log.record(rec(1))
        assert log.recent(10) == [rec(1)]
    (moved,) = tmp_path.glob("audit.sqlite.corrupt-*")
    assert moved.read_bytes() == data
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1


def test_a_failing_record_is_logged_once_until_it_works_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with AuditLog(tmp_path / "audit.sqlite", 10_000) as log:
        conn = log._conn
        assert conn is not None
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        conn.execute(f"PRAGMA max_page_count = {int(pages)}")  # a full disk, as SQLite sees it
        big = dataclasses.replace(rec(1), reason="x" * 20_000)
        with caplog.at_level(logging.DEBUG, logger="edge_agent.audit"):
            for _ in range(3):
                with pytest.raises(AuditStoreError, match="full"):
                    log.record(big)
            conn.execute("PRAGMA max_page_count = 1073741823")
            log.record(big)
            log.record(big)
    levels = [r.levelno for r in caplog.records if r.name == "edge_agent.audit"]
    assert levels == [logging.WARNING, logging.DEBUG, logging.DEBUG, logging.INFO]
