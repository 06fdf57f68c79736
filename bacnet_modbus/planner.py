"""Read planner: a device's points coalesced into as few Modbus read requests as its quirks allow.

One request for 100 registers costs about as much as one for a single register (on loopback
TCP 0.18 ms against 13.5 ms for 100 single reads; on a 9600 baud RTU bus roughly 0.2 s against
2 s), so reads are merged across small unmapped gaps up to the device's request size.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sensors.errors import IlmaError
from sensors.profiles import RegisterPoint, RequestQuirks, Table

__all__ = ["PlanError", "ReadRequest", "plan_reads", "split_request", "unpack"]


class PlanError(IlmaError, ValueError):
    """Points that cannot be read as asked, or a response that does not match its request."""


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read of `count` registers (or bits) of `table` from `address`.

    points : (point name, offset of its first register or bit in the response), by address.
    sizes : registers (or bits) of each point, in the order of `points`.
    """

    table: Table
    address: int
    count: int
    points: tuple[tuple[str, int], ...]
    sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.sizes) != len(self.points):
            raise PlanError(f"{len(self.points)} points but {len(self.sizes)} sizes")
        for (name, offset), size in zip(self.points, self.sizes, strict=True):
            if offset < 0 or size < 1 or offset + size > self.count:
                raise PlanError(
                    f"point {name!r} at offset {offset} with size {size} is not inside a read "
                    f"of {self.count}"
                )


# One member of a run: (address, point name, size); sorting these orders a table by address.
_Member = tuple[int, str, int]


def plan_reads(
    points: Mapping[str, RegisterPoint], quirks: RequestQuirks
) -> tuple[ReadRequest, ...]:
    """The reads that fetch every point once, ordered by table then address.

    Within a table, points are taken by address and merged greedily into the current read while
    the unused gap before the next point is at most `quirks.max_gap` and the read stays within
    `quirks.max_registers` (`max_bits` for coils and discrete inputs). PlanError when one point
    alone is larger than that limit.
    """
    requests: list[ReadRequest] = []
    for table in Table:
        members = sorted(
            (p.address, name, p.n_registers) for name, p in points.items() if p.table is table
        )
        limit = quirks.max_bits if table.is_bit else quirks.max_registers
        requests.extend(_merge(table, members, limit, quirks.max_gap))
    return tuple(requests)


def split_request(
    request: ReadRequest, points: Mapping[str, RegisterPoint]
) -> tuple[ReadRequest, ...]:
    """`request`'s points re-planned without reading any unmapped address: one read per run.

    For a device that answers a read through an unmapped address with Modbus exception 2
    (illegal data address) instead of filler values.
    """
    members: list[_Member] = []
    for name, offset in request.points:
        p = points.get(name)
        if p is None or p.table is not request.table or p.address != request.address + offset:
            raise PlanError(f"point {name!r} of the request is not at the address it was planned")
        members.append((p.address, name, p.n_registers))
    return tuple(_merge(request.table, sorted(members), request.count, max_gap=0))


def unpack(request: ReadRequest, values: Sequence[int]) -> dict[str, list[int]]:
    """Each point's registers (or bits, as 0/1) from the response to `request`.

    values : the response's `request.count` registers; for coils and discrete inputs pymodbus
    pads the bits to whole bytes, so up to 7 extra trailing bits are accepted and ignored.
    """
    n = len(values)
    padded = -(-request.count // 8) * 8
    fits = request.count <= n <= padded if request.table.is_bit else n == request.count
    if not fits:
        raise PlanError(
            f"a read of {request.count} {request.table} values from {request.address} "
            f"got {n} values"
        )
    return {
        name: [int(v) for v in values[offset : offset + size]]
        for (name, offset), size in zip(request.points, request.sizes, strict=True)
    }


def _merge(table: Table, members: Iterable[_Member], limit: int, max_gap: int) -> list[ReadRequest]:
    """Greedy runs of members (sorted by address) within `limit` and with gaps <= `max_gap`."""
    requests: list[ReadRequest] = []
    run: list[_Member] = []
    start = end = 0  # the current run reads [start, end)
    for address, name, size in members:
        if size > limit:
            raise PlanError(
                f"point {name!r} takes {size} {table} values but a read may take at most {limit}"
            )
        # max() keeps overlapping points (two views of one register) in a single read.
        if run and address - end <= max_gap and max(end, address + size) - start <= limit:
            run.append((address, name, size))
            end = max(end, address + size)
            continue
        if run:
            requests.append(_request(table, start, end, run))
        run = [(address, name, size)]
        start, end = address, address + size
    if run:
        requests.append(_request(table, start, end, run))
    return requests


def _request(table: Table, start: int, end: int, run: Sequence[_Member]) -> ReadRequest:
    return ReadRequest(
        table=table,
        address=start,
        count=end - start,
        points=tuple((name, address - start) for address, name, _ in run),
        sizes=tuple(size for _, _, size in run),
    )
