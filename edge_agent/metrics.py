"""The agent's Prometheus metrics: field-bus health, data freshness, buffer and write safety."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class AgentMetrics:
    """One registry per agent (not prometheus_client's global one: tests run several agents)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.poll_latency_s = Histogram(
            "ilma_agent_poll_latency_seconds",
            "Time to read all points of a device once",
            ["device"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.poll_requests = Counter(
            "ilma_agent_modbus_requests", "Modbus read requests sent", ["device"], registry=r
        )
        self.poll_errors = Counter(
            "ilma_agent_modbus_errors", "Modbus requests that failed", ["device"], registry=r
        )
        self.device_up = Gauge(
            "ilma_agent_device_up", "1 while the device answers", ["device"], registry=r
        )
        self.last_seen_s = Gauge(
            "ilma_agent_point_last_seen_timestamp_seconds",
            "When a point last had a good reading (epoch s)",
            ["zone", "point"],
            registry=r,
        )
        self.buffer_depth = Gauge(
            "ilma_agent_buffer_messages", "Telemetry messages waiting on disk", registry=r
        )
        self.buffer_dropped = Gauge(
            "ilma_agent_buffer_dropped", "Messages dropped at the buffer's size limit", registry=r
        )
        self.store_errors = Counter(
            "ilma_agent_store_errors",
            "Calls to a disk store (buffer, audit) that failed; the agent goes on without them",
            ["store", "op"],
            registry=r,
        )
        self.audit_dropped = Counter(
            "ilma_agent_audit_records_dropped",
            "Audit records dropped while the audit log could not take them (beyond those held)",
            registry=r,
        )
        self.unbuffered = Counter(
            "ilma_agent_unbuffered_messages",
            "Telemetry messages the buffer could not store, by fate (sent live, or dropped)",
            ["outcome"],
            registry=r,
        )
        self.published = Counter(
            "ilma_agent_published_messages", "Messages acknowledged by the broker", registry=r
        )
        self.replayed = Counter(
            "ilma_agent_replayed_messages", "Messages sent late from the buffer", registry=r
        )
        self.connected = Gauge(
            "ilma_agent_broker_connected", "1 while connected to the broker", registry=r
        )
        self.writes = Counter(
            "ilma_agent_writes",
            "Setpoint write decisions by outcome",
            ["outcome"],
            registry=r,
        )
        self.rejected_payloads = Counter(
            "ilma_agent_rejected_payloads",
            "Malformed MQTT payloads dropped",
            ["kind"],
            registry=r,
        )
        self.beyond_wire = Counter(
            "ilma_agent_readings_beyond_wire",
            "Finite readings too large for the wire, sent as missing and out of range",
            ["zone", "point"],
            registry=r,
        )
        self.fallback_zones = Gauge(
            "ilma_agent_fallback_zones", "Zones on their fallback", registry=r
        )
        self.cycle_s = Histogram(
            "ilma_agent_cycle_seconds",
            "Time of one poll-validate-publish cycle",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
