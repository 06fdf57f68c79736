"""The gateway's readings: one row per (zone, quantity), fed by devices and MQTT sensors, validated.

Each cycle the latest raw value of every row is validated (range, stuck, spike, staleness; see
sensors.validation) and rows with a new reading go up as telemetry with their quality flags.
The clean values (NaN unless good) also feed the agent's own control core for its fallback.
A finite value beyond what the wire carries (a device's fault marker such as 3e38 in a float32
register, a sensor's garbage number) goes up as missing and out of range: one such value must
not make the whole message invalid.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from controller.live import LiveReadings
from controller.wire import MAX_ABS_VALUE, Quantity, Reading, Telemetry
from edge_agent.config import GatewayConfig
from sensors.arrays import FloatArray
from sensors.payloads import PayloadError, decode_fields
from sensors.validation import (
    CheckState,
    Quality,
    QualityArray,
    check,
    check_params_for,
    initial_check_state,
)

log = logging.getLogger(__name__)

# A device reading is stale after this many of its poll periods without a new one.
STALE_AFTER_PERIODS = 3.0
# MQTT sensors publish when they like (counters often only on change): allow an hour.
MQTT_STALE_AFTER_S = 3600.0
# A sensor's own timestamp may be this far ahead of the gateway's clock (theirs drift too).
MAX_SENSOR_AHEAD_S = 60.0


@dataclass(frozen=True)
class Row:
    zone: str
    quantity: Quantity
    device: str | None = None  # Modbus source: device and point
    point: str | None = None
    topic: str | None = None  # MQTT source


class ReadingTable:
    """Latest raw values, their times and validation state, one row per (zone, quantity)."""

    def __init__(self, cfg: GatewayConfig) -> None:
        rows: list[Row] = []
        stale: list[float] = []
        for z in cfg.file.zone:
            for quantity, ref in z.read.model_dump().items():
                if ref is not None:
                    device, point = ref.split("/")
                    rows.append(Row(z.name, Quantity(quantity), device=device, point=point))
                    period = cfg.device(device).period_s or cfg.file.gateway.cycle_s
                    stale.append(STALE_AFTER_PERIODS * period)
        # Per sensor topic: its rows' JSON field paths, keyed by row index (as decode_fields keys).
        self.mqtt_fields: dict[str, dict[str, str]] = {}
        self.mqtt_time_field: dict[str, str | None] = {}
        for s in cfg.file.mqtt_sensor:
            fields = self.mqtt_fields.setdefault(s.topic, {})
            for quantity, path in s.fields.items():
                fields[str(len(rows))] = path
                rows.append(Row(s.zone, quantity, topic=s.topic))
                stale.append(MQTT_STALE_AFTER_S)
            self.mqtt_time_field[s.topic] = s.time_field
        self.rows = tuple(rows)
        n = len(rows)
        self.index = {(r.zone, r.quantity): i for i, r in enumerate(rows)}
        self._by_device: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for i, r in enumerate(rows):
            if r.device is not None and r.point is not None:
                self._by_device[r.device].append((i, r.point))
        limits = check_params_for([r.quantity.value for r in rows], 0.0)
        self.limits = limits._replace(stale_after_s=np.array(stale, dtype=np.float64).reshape(n))
        self.value = np.full(n, np.nan)
        self.t = np.full(n, np.nan)  # when each value was read (epoch s)
        self.sent_t = np.full(n, -np.inf)  # the time of the reading last sent up
        self.check_state: CheckState = initial_check_state(n)
        self.clean = np.full(n, np.nan)
        self.quality: QualityArray = np.full(n, int(Quality.MISSING), dtype=np.int16)
        self.zone_names = tuple(z.name for z in cfg.file.zone)
        # Rows of the last telemetry whose reading was beyond the wire's range (for counting),
        # and the rows whose last reading sent was (to log the transitions, not each repeat).
        self.beyond_wire: tuple[Row, ...] = ()
        self._beyond_wire_rows: set[int] = set()

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(self._by_device)

    def update_device(self, device: str, values: dict[str, float], t: float) -> None:
        """A poll's values (NaN where a read failed) at time t."""
        for i, point in self._by_device.get(device, ()):
            self.value[i] = values.get(point, math.nan)
            self.t[i] = t

    def update_mqtt(self, topic: str, payload: bytes, t: float) -> None:
        """A sensor message; PayloadError (nothing updated) if it does not decode."""
        fields = self.mqtt_fields[topic]
        decoded = decode_fields(payload, fields, self.mqtt_time_field[topic])
        when = t if decoded.t is None else decoded.t
        if not t - MQTT_STALE_AFTER_S <= when <= t + MAX_SENSOR_AHEAD_S:
            # A timestamp in milliseconds, or a sensor whose clock was never set.
            raise PayloadError(
                f"sensor time {when:.0f} is not within an hour before and a minute after its "
                f"arrival at {t:.0f} (epoch seconds expected)"
            )
        for key, value in decoded.values.items():
            i = int(key)
            self.value[i] = value
            self.t[i] = when

    def validate(self, now: float, dt_s: float) -> None:
        age = np.where(np.isfinite(self.t), now - self.t, np.inf)
        # A row that never had a reading is missing, not stale.
        value = np.where(np.isfinite(self.t), self.value, np.nan)
        self.check_state, self.clean, self.quality = check(
            self.check_state, value, np.maximum(age, 0.0), self.limits, dt_s
        )

    def telemetry(self, gateway: str, boot_t: float, seq: int, now: float) -> Telemetry:
        """Rows with a reading newer than the last one sent (missing ones too: the controller
        must learn that a sensor went silent), as one message."""
        fresh = np.flatnonzero(~(self.t <= self.sent_t))  # NaN times: never read, send as missing
        readings = []
        beyond: list[Row] = []
        for i in fresh.tolist():
            r = self.rows[i]
            v = float(self.value[i])
            t = float(self.t[i]) if math.isfinite(self.t[i]) else now
            value = v if math.isfinite(v) else None
            quality = int(self.quality[i])
            if value is not None and abs(value) > MAX_ABS_VALUE:
                # Validation flags it already (every range in sensors.validation is far inside
                # the wire's); the flag is set here too so that it never depends on that.
                value, quality = None, quality | int(Quality.OUT_OF_RANGE)
                beyond.append(r)
                self._log_beyond_wire(i, v)
            elif value is not None and i in self._beyond_wire_rows:
                self._beyond_wire_rows.discard(i)
                log.info("zone %s %s: a value the wire carries again", r.zone, r.quantity.value)
            readings.append(
                Reading(zone=r.zone, point=r.quantity, t=t, value=value, quality=quality)
            )
            self.sent_t[i] = t
        self.beyond_wire = tuple(beyond)
        return Telemetry.of(
            gateway=gateway, boot_t=boot_t, seq=seq, t=now, readings=tuple(readings)
        )

    def _log_beyond_wire(self, i: int, value: float) -> None:
        r = self.rows[i]
        source = r.topic if r.device is None else f"{r.device}/{r.point}"
        if i in self._beyond_wire_rows:
            log.debug(
                "zone %s %s from %s: %g sent as missing", r.zone, r.quantity.value, source, value
            )
            return
        self._beyond_wire_rows.add(i)
        log.warning(
            "zone %s %s from %s reads %g, beyond the wire's +-%g (a fault marker or a corrupted "
            "value): sent as missing and out of range until it reads sensibly again",
            r.zone, r.quantity.value, source, value, MAX_ABS_VALUE,
        )  # fmt: skip

    def live(self, zones: tuple[str, ...]) -> LiveReadings:
        """The clean values as the control core's inputs for these zones (NaN where none)."""

        def col(q: Quantity) -> FloatArray:
            out = np.full(len(zones), np.nan)
            for k, z in enumerate(zones):
                i = self.index.get((z, q))
                if i is not None:
                    out[k] = self.clean[i]
            return out

        n = len(zones)
        return LiveReadings(
            counter_in=col(Quantity.PEOPLE_IN),
            counter_out=col(Quantity.PEOPLE_OUT),
            co2_ppm=col(Quantity.CO2_PPM),
            t_zone_c=col(Quantity.T_ZONE_C),
            t_supply_c=col(Quantity.T_SUPPLY_C),
            t_out_c=np.full(n, np.nan),
            t_out_24h_c=np.full(n, np.nan),
        )
