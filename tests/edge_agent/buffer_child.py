"""Child process of the buffer's crash test: appends numbered batches, reports each commit.

Run as `python -m tests.edge_agent.buffer_child PATH MAX_MESSAGES FIRST_BATCH BATCH_SIZE`. Message
i of batch b has topic "t/<b>", payload "<b>:<i>:" padded to PAYLOAD_BYTES and created_s b + i/1000.
After each committed append the batch number goes to stdout on a line of its own.
"""

from __future__ import annotations

import sys
from pathlib import Path

from edge_agent.buffer import DiskBuffer

PAYLOAD_BYTES = 1024
# The test kills us long before this; the bound only keeps an orphan from running forever.
_MAX_BATCHES = 100_000


def message(batch: int, i: int) -> tuple[str, bytes, int, float]:
    """Message i of batch `batch`, as the child appends it and the test expects it back."""
    payload = f"{batch}:{i}:".encode().ljust(PAYLOAD_BYTES, b".")
    return f"t/{batch}", payload, 1, batch + i / 1000


def main(argv: list[str]) -> None:
    path, max_messages, first_batch, batch_size = Path(argv[0]), *map(int, argv[1:4])
    with DiskBuffer(path, max_messages) as buf:
        for batch in range(first_batch, first_batch + _MAX_BATCHES):
            buf.append([message(batch, i) for i in range(batch_size)])
            sys.stdout.write(f"{batch}\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
