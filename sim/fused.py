"""The core's elementwise stages compiled by numba for the simulator: same source, scalar backend.

controller.law explains the convention: the per-zone logic is written against `xp` with an index.
Gateways and the central service run it with `xp = numpy` over arrays. Here each stage function
is copied with `xp` bound to SCALAR_XP below (float arithmetic, no arrays) and compiled, so the
simulator can call it zone by zone inside one loop with no temporary arrays and no Python per
zone. Nothing is rewritten: a test runs both backends and requires identical results.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable
from typing import Any

from numba import njit

import controller.law
import controller.params
import controller.schedule
import sensors.occupancy
import sensors.validation
import sim.kernel
import sim.kpi

# --- the scalar backend: what the stages call on xp, for floats and bools ------------------------


def _where(c: bool, a: float, b: float) -> float:
    return a if c else b


def _maximum(a: float, b: float) -> float:
    return a if (a >= b or math.isnan(a)) else b  # propagates NaN, like numpy.maximum


def _minimum(a: float, b: float) -> float:
    return a if (a <= b or math.isnan(a)) else b


def _fmax(a: float, b: float) -> float:
    if math.isnan(a):
        return b
    return a if (math.isnan(b) or a >= b) else b  # ignores NaN, like numpy.fmax


def _fmin(a: float, b: float) -> float:
    if math.isnan(a):
        return b
    return a if (math.isnan(b) or a <= b) else b


def _isfinite(a: float) -> bool:
    return math.isfinite(a)


def _isnan(a: float) -> bool:
    return math.isnan(a)


def _abs(a: float) -> float:
    return abs(a)


def _expm1(a: float) -> float:
    return math.expm1(a)


def _exp(a: float) -> float:
    return math.exp(a)


SCALAR_XP = types.ModuleType("scalar_xp")
for _name, _fn in {
    "where": _where,
    "maximum": _maximum,
    "minimum": _minimum,
    "fmax": _fmax,
    "fmin": _fmin,
    "isfinite": _isfinite,
    "isnan": _isnan,
    "abs": _abs,
    "expm1": _expm1,
    "exp": _exp,
}.items():
    setattr(SCALAR_XP, _name, njit(inline="always")(_fn))
SCALAR_XP.inf = math.inf  # type: ignore[attr-defined]
SCALAR_XP.nan = math.nan  # type: ignore[attr-defined]

# --- compiling the stages --------------------------------------------------------------------

# Every module whose functions a stage may call, and the stages and helpers compiled from each.
_STAGES: dict[types.ModuleType, tuple[str, ...]] = {
    controller.params: ("adaptive_band_mid_c",),
    controller.law: (
        "_plausible_c", "_clip01", "_band", "zone_demand", "ahu_update", "zone_settle",
        "_episode",
    ),
    controller.schedule: ("scheduled_at",),
    sensors.occupancy: ("_within", "estimate_zone", "filter_gains"),
    sensors.validation: ("check_reading",),
    sim.kpi: ("kpi_zone",),
}  # fmt: skip


def compile_stages() -> dict[str, Callable[..., Any]]:
    """Scalar-backend copies of the stages, compiled; by function name."""
    namespaces = {m: {**vars(m), "xp": SCALAR_XP} for m in _STAGES}
    compiled: dict[str, Callable[..., Any]] = {}
    originals: dict[str, Any] = {}
    for module, names in _STAGES.items():
        for name in names:
            f = getattr(module, name)
            compiled[name] = njit(cache=True, inline="always")(_copy(f, namespaces[module]))
            originals[name] = f
    # Within and across modules, a stage calls the compiled copies, not the numpy originals.
    for ns in namespaces.values():
        _redirect(ns, originals, compiled)
    return compiled


def compile_run_steps() -> Callable[..., Any]:
    """sim.kernel.run_steps calling the compiled stages, compiled."""
    return compile_kernel()["run_steps"]


def compile_kernel() -> dict[str, Callable[..., Any]]:
    """run_steps and its stage loops, compiled; by name."""
    stages = compile_stages()
    originals = {name: getattr(m, name) for m, names in _STAGES.items() for name in names}
    ns = dict(vars(sim.kernel))
    _redirect(ns, originals, stages)
    for name, (cls, scalar, other) in sim.kernel.ROWS.items():
        ns[name] = _row_getter(cls, scalar, other)
    # The stage loops first: run_steps calls them; each is compiled on its own, small enough for
    # numba to prune the reference counting of the arrays it takes out of tuples.
    # error_model="numpy": a float division by zero gives inf or NaN, as in the numpy backend,
    # instead of raising; numba then drops its zero test and branch before every division (the
    # stages inline into these loops and take their error model).
    for name in sim.kernel.STAGE_LOOPS:
        ns[name] = njit(cache=True, error_model="numpy")(_copy(getattr(sim.kernel, name), ns))
    # nogil: the run's independent parts advance on separate threads at once.
    ns["run_steps"] = njit(cache=True, nogil=True)(_copy(sim.kernel.run_steps, ns))
    return {name: ns[name] for name in (*sim.kernel.STAGE_LOOPS, "run_steps")}


def _row_getter(cls: type, scalar: tuple[str, ...], other: tuple[str, ...]) -> Callable[..., Any]:
    """A compiled `row(t, r)`: the NamedTuple `cls` of row r of t's arrays, field by field.

    Numba counts references on every array it takes out of a tuple; taking each once, in one
    straight block, lets it prune those counts, and the stages then see plain floats.
    """
    fields = cls._fields  # type: ignore[attr-defined]
    values = ", ".join(
        f"t.{f}" if f in scalar else "nan" if f in other else f"t.{f}[r]" for f in fields
    )
    namespace: dict[str, Any] = {"cls": cls, "nan": math.nan}
    exec(f"def row(t, r):\n    return cls({values})\n", namespace)  # noqa: S102  (field names only)
    return njit(inline="always")(namespace["row"])


def _copy(f: Callable[..., Any], namespace: dict[str, Any]) -> types.FunctionType:
    fn: Any = f
    return types.FunctionType(fn.__code__, namespace, fn.__name__, fn.__defaults__, fn.__closure__)


def _redirect(
    namespace: dict[str, Any], originals: dict[str, Any], compiled: dict[str, Any]
) -> None:
    for key, value in list(namespace.items()):
        for name, f in originals.items():
            if value is f:
                namespace[key] = compiled[name]
