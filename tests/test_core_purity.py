"""The pure core does no I/O and reads no clock: its modules import and call none of that."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORE_MODULES = sorted(
    [
        *(REPO / "sensors").glob("*.py"),
        *(
            REPO / "controller" / f"{name}.py"
            for name in ("ingest", "law", "live", "params", "schedule", "site", "standards", "wire")
        ),
    ]
)

# Top-level packages the core must not import: event loops, field buses, brokers, databases,
# sockets, threads and the clock.
FORBIDDEN_IMPORTS = frozenset(
    {
        "asyncio",
        "aiomqtt",
        "paho",
        "pymodbus",
        "bacpypes3",
        "influxdb_client",
        "socket",
        "threading",
        "time",
    }
)
# Calls that read the clock, by their fully qualified names after resolving import aliases.
FORBIDDEN_CALLS = frozenset(
    {
        "datetime.datetime.now",
        "datetime.datetime.utcnow",
        "datetime.datetime.today",
        "datetime.date.today",
        "time.time",
        "time.time_ns",
        "time.monotonic",
        "time.monotonic_ns",
        "time.perf_counter",
    }
)


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return None if head is None else f"{head}.{node.attr}"
    return None


def impurities(source: str, filename: str) -> list[str]:
    """Every forbidden import or clock call in one module, as 'file:line: what'."""
    tree = ast.parse(source, filename=filename)
    aliases: dict[str, str] = {}  # local name -> qualified name
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in FORBIDDEN_IMPORTS:
                    found.append(f"{filename}:{node.lineno}: imports {a.name}")
                local = a.asname or a.name.split(".")[0]
                aliases[local] = a.name if a.asname else local
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in FORBIDDEN_IMPORTS:
                found.append(f"{filename}:{node.lineno}: imports from {node.module}")
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name is None:
                continue
            head, _, rest = name.partition(".")
            qualified = aliases.get(head, head) + (f".{rest}" if rest else "")
            if qualified in FORBIDDEN_CALLS:
                found.append(f"{filename}:{node.lineno}: calls {qualified}")
    return sorted(found, key=lambda s: int(s.split(":")[1]))


def test_the_core_has_the_modules_this_test_expects() -> None:
    names = {p.relative_to(REPO).as_posix() for p in CORE_MODULES}
    assert {
        "controller/law.py",
        "controller/params.py",
        "controller/schedule.py",
        "controller/site.py",
        "controller/standards.py",
        "sensors/occupancy.py",
        "sensors/validation.py",
        "sensors/arrays.py",
    } <= names


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_core_module_does_no_io_and_reads_no_clock(path: Path) -> None:
    rel = path.relative_to(REPO).as_posix()
    found = impurities(path.read_text(encoding="utf-8"), rel)
    assert not found, "the pure core must not do this:\n" + "\n".join(found)


IMPURE = """\
import numpy as np
import asyncio
import paho.mqtt.client as mqtt
from pymodbus.client import AsyncModbusTcpClient
import time as clock
from datetime import datetime, date as d
import datetime as dt
from time import monotonic

def f():
    a = datetime.now()
    b = d.today()
    c = dt.datetime.utcnow()
    e = clock.time()
    g = monotonic()
    h = np.zeros(3)
    i = datetime(2027, 1, 1)
    return a, b, c, e, g, h, i
"""


def test_the_checker_names_module_line_and_offence() -> None:
    assert impurities(IMPURE, "sensors/bad.py") == [
        "sensors/bad.py:2: imports asyncio",
        "sensors/bad.py:3: imports paho.mqtt.client",
        "sensors/bad.py:4: imports from pymodbus.client",
        "sensors/bad.py:5: imports time",
        "sensors/bad.py:8: imports from time",
        "sensors/bad.py:11: calls datetime.datetime.now",
        "sensors/bad.py:12: calls datetime.date.today",
        "sensors/bad.py:13: calls datetime.datetime.utcnow",
        "sensors/bad.py:14: calls time.time",
        "sensors/bad.py:15: calls time.monotonic",
    ]


def test_the_checker_passes_clean_code() -> None:
    clean = (
        "import numpy as np\nfrom datetime import date\n\ndef f():\n    return date(2027, 1, 1)\n"
    )
    assert impurities(clean, "clean.py") == []
