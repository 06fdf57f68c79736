"""`ilma-controller --config FILE`: the central controller service as a process.

SIGTERM and SIGINT stop it cleanly: the history queue is flushed (for a few seconds at most) and,
when sharing sites, the member topic says offline so the others take over at once. A killed
process leaves its Will instead; a restarted one resumes from telemetry with no operator action.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, start_http_server

from controller.historian import HistoryQueue, make_sink, writer_for
from controller.logs import setup_logging
from controller.service import ControllerService
from controller.service_config import ControllerConfig, load_controller
from sensors.config import ConfigError

log = logging.getLogger("controller")

# On a clean stop, give the history this long to reach the database.
FLUSH_ON_STOP_S = 5.0


def metrics_registry(service: ControllerService, history: HistoryQueue) -> CollectorRegistry:
    """Prometheus gauges read from the service's counters when scraped."""
    r = CollectorRegistry()
    c = service.counters
    for name, doc, fn in (
        ("ilma_controller_messages", "Telemetry messages ingested", lambda: c.messages),
        ("ilma_controller_ingest_batches", "Telemetry batches ingested (read together)",
         lambda: c.batches),
        ("ilma_controller_readings", "Readings ingested", lambda: c.readings),
        ("ilma_controller_duplicates", "Duplicate telemetry messages", lambda: c.duplicates),
        ("ilma_controller_unknown_zone_readings",
         "Readings of zones the site does not have (history only)",
         lambda: c.unknown_zone_readings),
        ("ilma_controller_rejected_payloads", "Malformed payloads dropped", lambda: c.rejected),
        ("ilma_controller_forwarded", "Telemetry forwarded to the member running its site",
         lambda: c.forwarded),
        ("ilma_controller_commands", "Zone commands published", lambda: c.commands),
        ("ilma_controller_runs", "Control runs", lambda: c.runs),
        ("ilma_controller_event_runs", "Control runs on an occupancy change", lambda: c.event_runs),
        ("ilma_controller_sites", "Sites this process runs", lambda: len(service.runs)),
        ("ilma_controller_history_queue", "History records waiting", lambda: len(history)),
        ("ilma_controller_history_dropped", "History records dropped at the queue bound",
         lambda: history.dropped),
        ("ilma_controller_history_written", "History records written", lambda: history.written),
    ):  # fmt: skip
        Gauge(name, doc, registry=r).set_function(fn)
    return r


async def serve(cfg: ControllerConfig) -> None:
    h = cfg.file.historian
    history = HistoryQueue(h.queue_max)
    sink = make_sink(h)
    writer = writer_for(h, history, sink)
    service = ControllerService(cfg, history)
    server = None
    m = cfg.file.metrics
    if m.port is not None:
        server, thread = start_http_server(
            m.port, m.host, registry=metrics_registry(service, history)
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("controller %s serving %s", cfg.name, ", ".join(cfg.sites))
    try:
        async with asyncio.TaskGroup() as tg:
            service_task = tg.create_task(service.run(), name="controller-service")
            writer_task = tg.create_task(writer.run(), name="history-writer")
            await stop.wait()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await service.goodbye()
            service_task.cancel()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_ON_STOP_S):
                    await history.drained()
            writer_task.cancel()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        sink.close()
        if server is not None:
            server.shutdown()
            thread.join(timeout=2)
        log.info("controller %s stopped (%d history records dropped)", cfg.name, history.dropped)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ilma-controller", description=__doc__)
    parser.add_argument("--config", required=True, type=Path, help="the controller TOML file")
    args = parser.parse_args(argv)
    try:
        cfg = load_controller(args.config)
    except ConfigError as exc:
        print(f"ilma-controller: {exc}", file=sys.stderr)  # noqa: T201  (before logging is set up)
        return 2
    setup_logging(cfg.file.log.format, cfg.file.log.level, quiet=["controller.mqtt"])
    # Telemetry makes many short-lived objects and the history queue many long-lived ones: the
    # cyclic collector scanning that queue cost up to 150 µs per message (bench/controller.py).
    # What startup made is frozen out of collection; young collections run less often (garbage
    # here is freed by reference counting; cycles are rare).
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    asyncio.run(serve(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
