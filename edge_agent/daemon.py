"""`ilma-agent --config FILE`: the gateway daemon, with reload, clean shutdown and a watchdog.

SIGHUP reloads the gateway file (validated first: a bad file is reported and the running
configuration kept; the disk buffer and audit log stay open across the reload). SIGTERM and
SIGINT shut down cleanly (an "offline" status, not the Last Will). Under systemd
(Type=notify, WatchdogSec=) the agent reports READY after its first cycle and pets the
watchdog every cycle, so a hung agent is restarted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import start_http_server

from controller.logs import setup_logging
from edge_agent.agent import Agent
from edge_agent.audit import AuditLog
from edge_agent.buffer import DiskBuffer
from edge_agent.config import GatewayConfig, load_gateway
from edge_agent.metrics import AgentMetrics
from sensors.config import ConfigError

log = logging.getLogger("edge_agent")


def sd_notify(state: str) -> None:
    """Tell systemd (if it started us with NOTIFY_SOCKET) our state: READY=1, WATCHDOG=1, ..."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.connect(address)
            s.sendall(state.encode())
        except OSError as exc:
            log.debug("sd_notify %s failed: %s", state, exc)


class Daemon:
    """Runs agents one configuration after another (SIGHUP), on one buffer and audit log."""

    def __init__(self, path: Path, cfg: GatewayConfig) -> None:
        self.path = path
        self.cfg = cfg
        self.metrics = AgentMetrics()
        self.buffer = DiskBuffer.open_or_reset(cfg.file.buffer.path, cfg.file.buffer.max_messages)
        self.audit = AuditLog.open_or_reset(cfg.file.audit.path, cfg.file.audit.max_records)
        self._stop = False
        self._reload = False
        self._wake = asyncio.Event()
        self._ready = False

    def _on_cycle(self) -> None:
        if not self._ready:
            self._ready = True
            sd_notify("READY=1")
            log.info("agent %s running: %d devices, %d zones", self.cfg.name,
                     len(self.cfg.file.device), len(self.cfg.file.zone))  # fmt: skip
        sd_notify("WATCHDOG=1")

    def request_reload(self) -> None:
        self._reload = True
        self._wake.set()

    def request_stop(self) -> None:
        self._stop = True
        self._wake.set()

    def _reloaded(self) -> bool:
        """Load the file again; keep the running configuration if it is bad."""
        try:
            cfg = load_gateway(self.path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)  # noqa: TRY400  (the problems are the message; a traceback adds nothing)
            return False
        if cfg.file.buffer != self.cfg.file.buffer or cfg.file.audit != self.cfg.file.audit:
            log.warning("buffer and audit settings change only on restart; kept as they were")
        self.cfg = cfg
        log.info("configuration reloaded from %s", self.path)
        return True

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        try:
            agent: Agent | None = None
            while not self._stop:
                agent = Agent(
                    self.cfg,
                    self.buffer,
                    self.audit,
                    self.metrics,
                    on_cycle=self._on_cycle,
                    after=agent,
                )
                task = asyncio.create_task(agent.run(), name="agent")
                try:
                    await self._until_stop_or_reload(task)
                finally:
                    if self._stop:
                        sd_notify("STOPPING=1")
                        with contextlib.suppress(Exception):
                            async with asyncio.timeout(3):
                                await agent.stop()
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            self.buffer.close()
            self.audit.close()
            log.info("agent %s stopped", self.cfg.name)

    async def _until_stop_or_reload(self, task: asyncio.Task[None]) -> None:
        """Wait while the agent runs; return on a stop or an accepted reload. An agent that
        fails raises here."""
        while True:
            waiter = asyncio.create_task(self._wake.wait(), name="signal-wait")
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if task.done():
                task.result()
            self._wake.clear()
            if self._stop:
                return
            if self._reload:
                self._reload = False
                if self._reloaded():
                    return


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ilma-agent", description=__doc__)
    parser.add_argument("--config", required=True, type=Path, help="the gateway TOML file")
    parser.add_argument("--log-format", choices=("text", "json"), help="overrides [log] format")
    args = parser.parse_args(argv)
    try:
        cfg = load_gateway(args.config)
    except ConfigError as exc:
        print(f"ilma-agent: {exc}", file=sys.stderr)  # noqa: T201  (before logging is set up)
        return 2
    setup_logging(
        args.log_format or cfg.file.log.format,
        cfg.file.log.level,
        quiet=["edge_agent.mqtt"],  # aiomqtt/paho chatter
        silenced=["pymodbus"],  # its errors are ours to report, per device and with backoff
    )
    daemon = Daemon(args.config, cfg)
    server = None
    m = cfg.file.metrics
    if m.port is not None:
        server, thread = start_http_server(m.port, m.host, registry=daemon.metrics.registry)
    try:
        asyncio.run(daemon.run())
    finally:
        if server is not None:
            server.shutdown()
            thread.join(timeout=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
