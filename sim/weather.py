"""Weather for the simulator: a typical hourly year (EPW or synthetic), the sun, facade irradiance.

Time conventions, shared by every function here:

- An hour of year is a float in [0, 8760) in the *local standard time* of the weather data (EPW
  convention; no daylight saving), counted from 00:00 of Jan 1 of a 365-day year.
- Row h of a `Weather` covers the hour [h, h + 1). Temperature rows are instantaneous values at the
  end of their hour (time h + 1), as EnergyPlus reads them; irradiance rows are averages over the
  hour, placed at its middle (time h + 0.5) for interpolation. Both interpolate linearly and wrap
  around the end of the year.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from sensors.arrays import FloatArray, IntArray
from sensors.errors import IlmaError

HOURS_PER_YEAR: Final = 8760

# Column order of `incident_solar` and `WeatherSeries.solar_wm2`: vertical facades facing north,
# east, south and west, then the horizontal (a flat roof).
FACADES: Final = ("N", "E", "S", "W", "H")

_MONTH_DAYS: Final = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_DAY_MONTH: Final[IntArray] = np.repeat(np.arange(12, dtype=np.int64), _MONTH_DAYS)  # (365,)
_ROW_MONTH: Final[IntArray] = np.repeat(_DAY_MONTH, 24)  # (8760,)
_DAY_OF_MONTH: Final[IntArray] = np.concatenate([np.arange(1, n + 1) for n in _MONTH_DAYS])

# Solar constant (W/m²): the WMO 1981 value that Erbs et al. (1982) and most building tools use.
_SOLAR_CONSTANT_WM2: Final = 1367.0
# Beyond 87° zenith the beam/diffuse split is meaningless and DNI = beam / cos(zenith) explodes.
_COS_ZENITH_MIN_BEAM: Final = math.cos(math.radians(87.0))
_DNI_MAX_WM2: Final = 1100.0

# ASHRAE IWEC typical year for Helsinki-Vantaa (WMO 029740), per month Jan..Dec: mean dry bulb
# (°C) and global horizontal irradiation (kWh/m²); notes/domain.md section 7.
_HELSINKI_T_MEAN_C: Final = (-3.9, -5.7, -1.0, 3.7, 9.9, 14.0, 16.7, 15.8, 10.2, 5.9, -1.3, -3.0)
_HELSINKI_GHI_KWH_M2: Final = (
    7.8,
    25.5,
    57.9,
    107.3,
    164.6,
    172.3,
    168.7,
    124.5,
    70.4,
    34.8,
    9.4,
    3.7,
)


class WeatherFileError(IlmaError, ValueError):
    """A weather file that cannot be read: the message names the file, line and expectation."""


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no truth value; compare fields explicitly
class Weather:
    """An hourly typical year, 8760 rows by hour of year in local standard time.

    t_out_c : (8760,) outdoor dry bulb (°C) at the end of each row's hour.
    ghi_wm2, dni_wm2, dhi_wm2 : (8760,) global horizontal, direct normal and diffuse horizontal
        irradiance (W/m²), averaged over each row's hour; all >= 0.
    longitude_deg is east positive; utc_offset_h is the standard time zone of the data (+2 for
    Helsinki). The arrays are stored as read-only float64 copies.
    """

    name: str
    latitude_deg: float
    longitude_deg: float
    utc_offset_h: float
    elevation_m: float
    t_out_c: FloatArray
    ghi_wm2: FloatArray
    dni_wm2: FloatArray
    dhi_wm2: FloatArray
    ground_reflectance: float = 0.2

    def __post_init__(self) -> None:
        if not -90.0 <= self.latitude_deg <= 90.0:
            raise ValueError(f"latitude_deg must be in [-90, 90], got {self.latitude_deg}")
        if not -180.0 <= self.longitude_deg <= 180.0:
            raise ValueError(f"longitude_deg must be in [-180, 180], got {self.longitude_deg}")
        if not -12.0 <= self.utc_offset_h <= 14.0:
            raise ValueError(f"utc_offset_h must be in [-12, 14], got {self.utc_offset_h}")
        if not 0.0 <= self.ground_reflectance <= 1.0:
            raise ValueError(f"ground_reflectance must be in [0, 1], got {self.ground_reflectance}")
        for field in ("t_out_c", "ghi_wm2", "dni_wm2", "dhi_wm2"):
            values = np.array(getattr(self, field), dtype=np.float64)  # a private copy
            if values.shape != (HOURS_PER_YEAR,):
                raise ValueError(f"{field} must have shape (8760,), got {values.shape}")
            if not np.all(np.isfinite(values)):
                raise ValueError(f"{field} must be finite everywhere")
            if field != "t_out_c" and np.any(values < 0.0):
                raise ValueError(f"{field} must be >= 0")
            values.setflags(write=False)
            object.__setattr__(self, field, values)


@dataclass(frozen=True, eq=False)
class WeatherSeries:
    """Weather sampled at the steps of a simulation run.

    t_out_c : (n_steps,) outdoor dry bulb (°C) at each step start.
    t_out_24h_c : (n_steps,) mean outdoor dry bulb (°C) over the 24 h before each step start.
    solar_wm2 : (n_steps, 5) total irradiance (W/m²) on the `FACADES` surfaces at each step start.
    """

    t_out_c: FloatArray
    t_out_24h_c: FloatArray
    solar_wm2: FloatArray


# --- sun ------------------------------------------------------------------------------------------


def _sun_vector(
    latitude_deg: float, longitude_deg: float, utc_offset_h: float, hour_of_year: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """Unit vector to the sun (east, north, up), eccentricity factor and solar time (h), each (n,).

    Declination, equation of time and eccentricity are Spencer's (1971) Fourier series, as in
    NOAA's "General Solar Position Calculations" (fractional year from the day and hour);
    accurate to about 0.05° in declination and 0.5 min in time, ample for building loads.
    """
    t = np.mod(hour_of_year, float(HOURS_PER_YEAR))
    day = np.floor(t / 24.0)
    clock_h = t - 24.0 * day
    gamma = (2.0 * np.pi / 365.0) * (day + (clock_h - 12.0) / 24.0)
    # Harmonics from one sin/cos pair by the multiple-angle identities: a third of the trig calls.
    c1, s1 = np.cos(gamma), np.sin(gamma)
    c2, s2 = 2.0 * c1 * c1 - 1.0, 2.0 * s1 * c1
    c3, s3 = c1 * (2.0 * c2 - 1.0), s1 * (2.0 * c2 + 1.0)
    decl = (
        0.006918
        - 0.399912 * c1
        + 0.070257 * s1
        - 0.006758 * c2
        + 0.000907 * s2
        - 0.002697 * c3
        + 0.00148 * s3
    )
    eot_min = 229.18 * (0.000075 + 0.001868 * c1 - 0.032077 * s1 - 0.014615 * c2 - 0.040849 * s2)
    ecc = 1.000110 + 0.034221 * c1 + 0.001280 * s1 + 0.000719 * c2 + 0.000077 * s2
    # Local standard time runs ahead of the sun by 4 min per degree east of the zone meridian.
    solar_h = clock_h + (eot_min + 4.0 * longitude_deg - 60.0 * utc_offset_h) / 60.0
    hour_angle = np.radians(15.0 * (solar_h - 12.0))  # > 0 in the afternoon
    lat = math.radians(latitude_deg)
    cos_decl, sin_decl = np.cos(decl), np.sin(decl)
    cos_ha = np.cos(hour_angle)
    up = math.sin(lat) * sin_decl + math.cos(lat) * cos_decl * cos_ha
    east = -cos_decl * np.sin(hour_angle)
    north = math.cos(lat) * sin_decl - math.sin(lat) * cos_decl * cos_ha
    return east, north, up, ecc, solar_h


def sun_position(
    latitude_deg: float, longitude_deg: float, utc_offset_h: float, hour_of_year: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Sun elevation and azimuth (deg) at fractional hours of year in local standard time.

    hour_of_year : (n,) hours since 00:00 Jan 1 in the standard time of `utc_offset_h`; wraps.
    Returns (elevation_deg, azimuth_deg), each (n,); elevation < 0 below the horizon, azimuth
    clockwise from north (east 90°, south 180°).
    """
    east, north, up, _, _ = _sun_vector(
        latitude_deg, longitude_deg, utc_offset_h, np.asarray(hour_of_year, dtype=np.float64)
    )
    elevation = np.degrees(np.arcsin(np.clip(up, -1.0, 1.0)))
    azimuth = np.mod(np.degrees(np.arctan2(east, north)), 360.0)
    return elevation, azimuth


def _haurwitz_ghi(cos_zenith: FloatArray) -> FloatArray:
    """Clear-sky GHI (W/m²) of Haurwitz (1945), 1098·cos z·exp(-0.057/cos z); 0 below the horizon.

    The simplest clear-sky model that ranks well against measurements (Reno et al. 2012, Sandia
    SAND2012-2389); it needs no turbidity data, which a synthetic year does not have.
    """
    mu = np.maximum(cos_zenith, 1e-9)
    return np.where(cos_zenith > 0.0, 1098.0 * mu * np.exp(-0.057 / mu), 0.0)


def _split_erbs(
    ghi: FloatArray, cos_zenith: FloatArray, ecc: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Split GHI (W/m²) into DNI and DHI (W/m²) with the Erbs correlation.

    Erbs, Klein & Duffie (1982), "Estimation of the diffuse radiation fraction for hourly, daily and
    monthly-average global radiation", Solar Energy 28(4):293-302: the diffuse fraction as a
    function of the clearness index kt = GHI / extraterrestrial horizontal irradiance.
    """
    sun_up = cos_zenith > 0.0
    extraterrestrial = _SOLAR_CONSTANT_WM2 * ecc * np.maximum(cos_zenith, 1e-9)
    kt = np.where(sun_up, ghi / extraterrestrial, 0.0)
    poly = 0.9511 - 0.1604 * kt + 4.388 * kt**2 - 16.638 * kt**3 + 12.336 * kt**4
    diffuse_fraction = np.where(kt <= 0.22, 1.0 - 0.09 * kt, np.where(kt <= 0.80, poly, 0.165))
    beam_ok = cos_zenith > _COS_ZENITH_MIN_BEAM
    dni = np.where(
        beam_ok,
        ghi * (1.0 - diffuse_fraction) / np.maximum(cos_zenith, _COS_ZENITH_MIN_BEAM),
        0.0,
    )
    dni = np.clip(dni, 0.0, _DNI_MAX_WM2)
    # Diffuse is what the (possibly capped) beam leaves of the global, so GHI = DNI·cos z + DHI.
    dhi = np.maximum(ghi - dni * np.maximum(cos_zenith, 0.0), 0.0)
    return dni, dhi


# --- synthetic year -------------------------------------------------------------------------------

# Lag-1 correlation of daily temperature anomalies: synoptic weather persists for a few days.
_ANOMALY_LAG1: Final = 0.7
# Slope of the daily clearness index against its standard-normal driver: spreads days from
# overcast (k ≈ 0.1) to clear (k ≈ 0.9) around a month's mean.
_CLEARNESS_SLOPE: Final = 1.2


def _monthly_mean_of_rows(values: FloatArray) -> FloatArray:
    """(12,) mean of an (8760,) array over the rows of each calendar month."""
    return np.bincount(_ROW_MONTH, weights=values, minlength=12) / np.bincount(
        _ROW_MONTH, minlength=12
    )


def _periodic_bspline_basis(t_h: FloatArray) -> FloatArray:
    """(n, 12) uniform periodic cubic B-splines over the year, centred mid-month, at times t_h.

    A combination of them is C2-smooth and periodic; its monthly means are linear in the weights,
    so one 12×12 solve makes the curve reproduce the monthly table exactly.
    """
    spacing = HOURS_PER_YEAR / 12.0
    centres = (np.arange(12) + 0.5) * spacing
    half = HOURS_PER_YEAR / 2.0
    u = np.abs(np.mod(t_h[:, None] - centres[None, :] + half, HOURS_PER_YEAR) - half) / spacing
    inner = 2.0 / 3.0 - u**2 + 0.5 * u**3
    outer = (2.0 - u) ** 3 / 6.0
    return np.where(u < 1.0, inner, np.where(u < 2.0, outer, 0.0))


def _ar1(rng: np.random.Generator, n: int, lag1: float) -> FloatArray:
    """(n,) stationary AR(1) series with unit variance and lag-1 correlation `lag1`."""
    eps = rng.standard_normal(n)
    out = np.empty(n)
    out[0] = eps[0]
    innovation = math.sqrt(1.0 - lag1 * lag1)
    for i in range(1, n):  # one step per day, not per hour: 365 iterations
        out[i] = lag1 * out[i - 1] + innovation * eps[i]
    return out


def _daily_clearness(
    driver: FloatArray, clear_sky_day_wh: FloatArray, target_kwh: FloatArray
) -> FloatArray:
    """(365,) daily clearness factors whose clear-sky-weighted monthly totals equal `target_kwh`.

    k = sigmoid(offset_month + slope·driver), the offset found by bisection (the total grows
    monotonically with it), then a final exact rescale of each month.
    """
    lo = np.full(12, -10.0)
    hi = np.full(12, 10.0)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        k = 1.0 / (1.0 + np.exp(-(mid[_DAY_MONTH] + _CLEARNESS_SLOPE * driver)))
        total = np.bincount(_DAY_MONTH, weights=k * clear_sky_day_wh, minlength=12) / 1000.0
        too_much = total > target_kwh
        hi = np.where(too_much, mid, hi)
        lo = np.where(too_much, lo, mid)
    k = 1.0 / (1.0 + np.exp(-(0.5 * (lo + hi))[_DAY_MONTH] - _CLEARNESS_SLOPE * driver))
    total = np.bincount(_DAY_MONTH, weights=k * clear_sky_day_wh, minlength=12) / 1000.0
    out: FloatArray = k * (target_kwh / total)[_DAY_MONTH]
    return out


def _diurnal_shape(solar_h: FloatArray) -> FloatArray:
    """(n,) daily temperature cycle in [-1, 1]: minimum at 05:00 solar time, maximum at 15:00.

    Half-cosines: a 10 h rise and a 14 h fall, so the mean over any whole day is zero.
    """
    s = np.mod(solar_h, 24.0)
    rising = (s >= 5.0) & (s < 15.0)
    return np.where(
        rising, -np.cos(np.pi * (s - 5.0) / 10.0), np.cos(np.pi * np.mod(s - 15.0, 24.0) / 14.0)
    )


def synthetic_helsinki(seed: int) -> Weather:
    """A synthetic typical year for Helsinki-Vantaa (60.32 N, 24.97 E, 56 m, UTC+2).

    Monthly mean dry bulb and monthly global horizontal irradiation reproduce the IWEC table
    (notes/domain.md section 7); the seed draws the day-to-day weather:
    - temperature = smooth annual curve + AR(1) daily anomaly (sd 5 K in January, 2.5 K in
      July, lag-1 correlation 0.7, zero mean within each month) + daily cycle (05:00 minimum,
      15:00 maximum solar time; about 3 K peak-to-peak at the December solstice and 9 K at the
      June solstice, less on cloudy days);
    - GHI = Haurwitz clear sky × a daily clearness factor, correlated with the temperature
      anomaly (clear winter days colder, clear summer days warmer), scaled to each month's total;
      split into DNI and DHI with Erbs et al. (1982).
    Deterministic for a seed.
    """
    lat, lon, utc_offset, elevation = 60.32, 24.97, 2.0, 56.0
    rng = np.random.default_rng(seed)
    days = np.arange(365, dtype=np.float64)
    winter = np.cos(2.0 * np.pi * (days - 15.0) / 365.0)  # +1 mid-January, -1 mid-July

    # Day-to-day weather: one unit AR(1) driver for temperature, a second noise for clouds.
    driver = _ar1(rng, 365, _ANOMALY_LAG1)
    cloud_noise = rng.standard_normal(365)
    anomaly_sd = 3.75 + 1.25 * winter
    anomaly_day = anomaly_sd * driver
    anomaly_day -= (np.bincount(_DAY_MONTH, weights=anomaly_day, minlength=12) / _MONTH_DAYS)[
        _DAY_MONTH
    ]
    # Warm winter days come with clouds (maritime air), warm summer days with sun (anticyclones).
    coupling = -0.5 * winter
    clear_driver = coupling * driver + np.sqrt(1.0 - coupling**2) * cloud_noise

    # Irradiance: rows are hourly means, evaluated at mid-hour.
    mid_h = np.arange(HOURS_PER_YEAR, dtype=np.float64) + 0.5
    _, _, cos_zenith, ecc, _ = _sun_vector(lat, lon, utc_offset, mid_h)
    ghi_clear = _haurwitz_ghi(cos_zenith)
    clear_day_wh = ghi_clear.reshape(365, 24).sum(axis=1)
    clearness = _daily_clearness(
        clear_driver, clear_day_wh, np.asarray(_HELSINKI_GHI_KWH_M2, dtype=np.float64)
    )
    ghi = ghi_clear * np.repeat(clearness, 24)
    dni, dhi = _split_erbs(ghi, cos_zenith, ecc)

    # Temperature: rows are instantaneous values at the end of their hour.
    end_h = np.arange(HOURS_PER_YEAR, dtype=np.float64) + 1.0
    _, _, _, _, solar_h = _sun_vector(lat, lon, utc_offset, end_h)
    noon_h = days * 24.0 + 12.0
    anomaly = np.interp(end_h, noon_h, anomaly_day, period=HOURS_PER_YEAR)
    month_clearness = np.bincount(_DAY_MONTH, weights=clearness, minlength=12) / _MONTH_DAYS
    relative_clearness = np.clip(clearness / month_clearness[_DAY_MONTH], 0.3, 1.6)
    swing_day = (6.0 + 3.0 * np.cos(2.0 * np.pi * (days - 171.0) / 365.0)) * relative_clearness
    swing = np.interp(end_h, noon_h, swing_day, period=HOURS_PER_YEAR)
    weather_part = anomaly + 0.5 * swing * _diurnal_shape(solar_h)
    basis = _periodic_bspline_basis(end_h)
    monthly_basis = np.stack([_monthly_mean_of_rows(basis[:, j]) for j in range(12)], axis=1)
    target = np.asarray(_HELSINKI_T_MEAN_C, dtype=np.float64) - _monthly_mean_of_rows(weather_part)
    weights = np.linalg.solve(monthly_basis, target)
    t_out = basis @ weights + weather_part

    return Weather(
        name=f"Helsinki-Vantaa synthetic (seed {seed})",
        latitude_deg=lat,
        longitude_deg=lon,
        utc_offset_h=utc_offset,
        elevation_m=elevation,
        t_out_c=t_out,
        ghi_wm2=ghi,
        dni_wm2=dni,
        dhi_wm2=dhi,
    )


# --- EPW files ------------------------------------------------------------------------------------

_EPW_HEADER_LINES: Final = 8
# 0-based fields of an EPW data row (EnergyPlus Auxiliary Programs, "EnergyPlus Weather File (EPW)
# Data Dictionary"): 0 year, 1 month, 2 day, 3 hour (1..24, the hour ending then), 4 minute,
# 5 data source flags, 6 dry bulb (°C, missing >= 99.9), 7..12 humidity, pressure and
# extraterrestrial/infrared radiation, 13 global horizontal, 14 direct normal, 15 diffuse
# horizontal radiation (Wh/m² over the hour = mean W/m², missing >= 9999); 35 fields in all.
_F_MONTH, _F_DAY, _F_HOUR = 1, 2, 3
_F_DRY_BULB = 6
_F_GHI, _F_DNI, _F_DHI = 13, 14, 15
_MIN_FIELDS: Final = _F_DHI + 1
_DRY_BULB_MISSING: Final = 99.9
_RADIATION_MISSING: Final = 9999.0
_LEAP_YEAR_ROWS: Final = HOURS_PER_YEAR + 24


def _number(path: Path, line_no: int, fields: list[str], index: int, what: str) -> float:
    """Field `index` of a comma-split line as a finite float, or a WeatherFileError saying where."""
    raw = fields[index].strip()
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise WeatherFileError(
            f"{path}, line {line_no}, field {index + 1} ({what}): expected a number, got {raw!r}"
        )
    return value


def _parse_location(path: Path, line: str) -> tuple[str, float, float, float, float]:
    """(city, latitude, longitude, time zone, elevation) from the LOCATION header (line 1)."""
    fields = line.split(",")
    if fields[0].strip().upper() != "LOCATION" or len(fields) < 10:
        raise WeatherFileError(
            f"{path}, line 1: expected 'LOCATION,city,state,country,source,WMO,latitude,"
            f"longitude,time zone,elevation', got {line[:80]!r}"
        )
    lat = _number(path, 1, fields, 6, "latitude")
    lon = _number(path, 1, fields, 7, "longitude")
    tz = _number(path, 1, fields, 8, "time zone")
    elevation = _number(path, 1, fields, 9, "elevation")
    for value, what, lo, hi in ((lat, "latitude", -90, 90), (lon, "longitude", -180, 180)):
        if not lo <= value <= hi:
            raise WeatherFileError(f"{path}, line 1: {what} must be in [{lo}, {hi}], got {value}")
    if not -12.0 <= tz <= 14.0:
        raise WeatherFileError(f"{path}, line 1: time zone must be in [-12, 14] h, got {tz}")
    return fields[1].strip(), lat, lon, tz, elevation


def _check_data_periods(path: Path, line: str) -> None:
    """Line 8 must be the DATA PERIODS header with one record per hour."""
    fields = line.split(",")
    if fields[0].strip().upper() != "DATA PERIODS" or len(fields) < 3:
        raise WeatherFileError(
            f"{path}, line 8: expected the 'DATA PERIODS,...' header, got {line[:80]!r}"
        )
    per_hour = _number(path, 8, fields, 2, "records per hour")
    if per_hour != 1.0:
        raise WeatherFileError(
            f"{path}, line 8: expected 1 record per hour, got {per_hour:g} (sub-hourly EPW files "
            "are not supported)"
        )


def _parse_row(path: Path, line_no: int, line: str) -> tuple[float, ...]:
    """(month, day, hour, dry bulb, GHI, DNI, DHI) of one data line; NaN marks a missing value."""
    fields = line.split(",")
    if len(fields) < _MIN_FIELDS:
        raise WeatherFileError(
            f"{path}, line {line_no}: expected at least {_MIN_FIELDS} comma-separated fields "
            f"(35 in an EPW data row), got {len(fields)}"
        )
    month = _number(path, line_no, fields, _F_MONTH, "month")
    day = _number(path, line_no, fields, _F_DAY, "day")
    hour = _number(path, line_no, fields, _F_HOUR, "hour")
    t = _number(path, line_no, fields, _F_DRY_BULB, "dry bulb temperature")
    if t >= _DRY_BULB_MISSING:
        t = math.nan
    elif not -70.0 < t < 70.0:
        raise WeatherFileError(
            f"{path}, line {line_no}, field {_F_DRY_BULB + 1} (dry bulb temperature): expected "
            f"-70 < °C < 70 or the missing code 99.9, got {t}"
        )
    radiation = []
    for index, what in (
        (_F_GHI, "global horizontal radiation"),
        (_F_DNI, "direct normal radiation"),
        (_F_DHI, "diffuse horizontal radiation"),
    ):
        value = _number(path, line_no, fields, index, what)
        if value >= _RADIATION_MISSING:
            value = math.nan
        elif value < 0.0:
            raise WeatherFileError(
                f"{path}, line {line_no}, field {index + 1} ({what}): expected Wh/m² >= 0 or the "
                f"missing code 9999, got {value}"
            )
        radiation.append(value)
    return (month, day, hour, t, *radiation)


def _fill_missing(path: Path, values: FloatArray, what: str) -> FloatArray:
    """Fill NaN gaps by linear interpolation in time, wrapping around the year."""
    missing = np.isnan(values)
    if not missing.any():
        return values
    if missing.all():
        raise WeatherFileError(f"{path}: every {what} value is missing")
    hours = np.arange(HOURS_PER_YEAR, dtype=np.float64)
    filled = values.copy()
    filled[missing] = np.interp(
        hours[missing], hours[~missing], values[~missing], period=HOURS_PER_YEAR
    )
    return filled


def read_epw(path: Path) -> Weather:
    """Read an hourly EnergyPlus weather (EPW) file into a `Weather`.

    Expects the 8 EPW header lines (LOCATION gives name, latitude, longitude, time zone and
    elevation; DATA PERIODS must say 1 record per hour) and 8760 data rows in calendar order; a
    leap-year file of 8784 rows loses its Feb 29 rows. Missing values (dry bulb >= 99.9,
    radiation >= 9999) are filled by linear interpolation in time.

    Raises WeatherFileError naming the file, the line and what was expected for a wrong row
    count, a malformed line, a non-numeric or out-of-range field, or rows out of calendar order;
    OSError if the file cannot be read.
    """
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # older EPW files carry Latin-1 place names
    lines = text.splitlines()
    if len(lines) < _EPW_HEADER_LINES:
        raise WeatherFileError(
            f"{path}, line {len(lines) + 1}: file ends inside the header; expected "
            f"{_EPW_HEADER_LINES} header lines and 8760 data rows"
        )
    name, lat, lon, tz, elevation = _parse_location(path, lines[0])
    _check_data_periods(path, lines[_EPW_HEADER_LINES - 1])
    data = lines[_EPW_HEADER_LINES:]
    while data and not data[-1].strip():
        data.pop()  # trailing blank lines are harmless
    first = _EPW_HEADER_LINES + 1  # line number of the first data row
    n = len(data)
    if n not in (HOURS_PER_YEAR, _LEAP_YEAR_ROWS):
        if n < HOURS_PER_YEAR:
            problem = f"file ends after {n} data rows"
            line_no = first + n
        else:
            problem = f"found {n} data rows, extra rows start here"
            line_no = first + (HOURS_PER_YEAR if n < _LEAP_YEAR_ROWS else _LEAP_YEAR_ROWS)
        raise WeatherFileError(
            f"{path}, line {line_no}: {problem}; expected 8760 hourly data rows "
            "(8784 for a leap year)"
        )
    rows = np.array(
        [_parse_row(path, first + i, line) for i, line in enumerate(data)], dtype=np.float64
    )
    line_nos = np.arange(first, first + n)
    if n == _LEAP_YEAR_ROWS:
        keep = ~((rows[:, 0] == 2.0) & (rows[:, 1] == 29.0))
        rows, line_nos = rows[keep], line_nos[keep]
        if len(rows) != HOURS_PER_YEAR:
            raise WeatherFileError(
                f"{path}, line {first}: 8784 data rows but {_LEAP_YEAR_ROWS - len(rows)} of them "
                "dated Feb 29; expected a leap year with 24 rows on Feb 29"
            )
    expected = np.stack(
        [
            _ROW_MONTH + 1,
            np.repeat(_DAY_OF_MONTH, 24),
            np.tile(np.arange(1, 25), 365),
        ],
        axis=1,
    ).astype(np.float64)
    wrong = np.flatnonzero(np.any(rows[:, :3] != expected, axis=1))
    if wrong.size:
        i = int(wrong[0])
        m, d, h = (int(v) for v in expected[i])
        got = ", ".join(f"{v:g}" for v in rows[i, :3])
        raise WeatherFileError(
            f"{path}, line {int(line_nos[i])}: expected month {m}, day {d}, hour {h} (hourly rows "
            f"in calendar order), got {got}"
        )
    return Weather(
        name=name,
        latitude_deg=lat,
        longitude_deg=lon,
        utc_offset_h=tz,
        elevation_m=elevation,
        t_out_c=_fill_missing(path, rows[:, 3], "dry bulb temperature"),
        ghi_wm2=_fill_missing(path, rows[:, 4], "global horizontal radiation"),
        dni_wm2=_fill_missing(path, rows[:, 5], "direct normal radiation"),
        dhi_wm2=_fill_missing(path, rows[:, 6], "diffuse horizontal radiation"),
    )


# --- sampling -------------------------------------------------------------------------------------


def _interp_weights(
    hour_of_year: FloatArray, offset_h: float
) -> tuple[IntArray, IntArray, FloatArray]:
    """Rows (i0, i1) and weight of i1 to interpolate rows placed at times i + offset_h, wrapping."""
    u = np.mod(hour_of_year - offset_h, float(HOURS_PER_YEAR))
    base = np.floor(u)
    i0 = base.astype(np.int64) % HOURS_PER_YEAR  # % again: np.mod may round up to 8760.0
    return i0, (i0 + 1) % HOURS_PER_YEAR, u - base


def _interp_rows(values: FloatArray, rows: tuple[IntArray, IntArray, FloatArray]) -> FloatArray:
    """Linear interpolation of (8760,) rows with the weights of `_interp_weights`."""
    i0, i1, w = rows
    out: FloatArray = values[i0] + (values[i1] - values[i0]) * w
    return out


def _integral_rows(values: FloatArray, hour_of_year: FloatArray, offset_h: float) -> FloatArray:
    """∫ of the periodic piecewise-linear interpolant of rows at i + offset_h, from offset_h on.

    Exact for the interpolant; times may lie in earlier or later years (the integral keeps growing
    by one year's total per year), so differences across Jan 1 need no special case.
    """
    segment = 0.5 * (values + np.roll(values, -1))
    cumulative = np.concatenate([[0.0], np.cumsum(segment)])
    u = hour_of_year - offset_h
    years = np.floor(u / HOURS_PER_YEAR)
    r = u - years * HOURS_PER_YEAR
    i0 = np.minimum(np.floor(r).astype(np.int64), HOURS_PER_YEAR - 1)
    w = r - i0
    x0 = values[i0]
    x1 = values[(i0 + 1) % HOURS_PER_YEAR]
    out: FloatArray = years * cumulative[-1] + cumulative[i0] + w * x0 + 0.5 * w * w * (x1 - x0)
    return out


def typical_hour_of_year(epoch_s: FloatArray, utc_offset_h: float) -> FloatArray:
    """(n,) fractional hour of a 365-day typical year in standard time, for UTC seconds `epoch_s`.

    The calendar date in standard time (UTC + utc_offset_h) gives the day of year; in a leap year
    Feb 29 folds onto Feb 28 and the later days move back one, so Dec 31 stays Dec 31.
    """
    local_s = np.asarray(epoch_s, dtype=np.float64) + 3600.0 * utc_offset_h
    day_since_1970 = np.floor(local_s / 86400.0)
    seconds_of_day = local_s - 86400.0 * day_since_1970
    dates = day_since_1970.astype(np.int64).astype("datetime64[D]")
    year_start = dates.astype("datetime64[Y]")
    day_of_year = (dates - year_start.astype("datetime64[D]")).astype(np.int64)  # 0 = Jan 1
    year = year_start.astype(np.int64) + 1970
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    # 0-based day 59 is Feb 29 in a leap year: it becomes day 58 (Feb 28), later days move back one.
    day_of_year = np.where(leap & (day_of_year >= 59), np.maximum(day_of_year - 1, 58), day_of_year)
    out: FloatArray = day_of_year * 24.0 + seconds_of_day / 3600.0
    return out


def incident_solar(weather: Weather, hour_of_year: FloatArray) -> FloatArray:
    """Total irradiance (W/m²) on vertical N, E, S, W facades and the horizontal, shape (n, 5).

    hour_of_year : (n,) finite fractional hours of year in the weather's local standard time
        (wraps modulo 8760). GHI, DNI and DHI are interpolated linearly between hour middles; the
        sun position is computed at the exact times.
    Columns follow `FACADES`. A vertical facade gets beam DNI·cos(incidence) (zero with the sun
    behind it or below the horizon), isotropic sky diffuse DHI·(1 + cos 90°)/2 and ground
    reflection GHI·ρ·(1 - cos 90°)/2. The horizontal column is GHI itself.
    """
    t = np.asarray(hour_of_year, dtype=np.float64)
    if t.ndim != 1:
        raise ValueError(f"hour_of_year must be one-dimensional, got shape {t.shape}")
    if not np.all(np.isfinite(t)):
        raise ValueError("hour_of_year must be finite")
    rows = _interp_weights(t, 0.5)
    ghi = _interp_rows(weather.ghi_wm2, rows)
    dni = _interp_rows(weather.dni_wm2, rows)
    dhi = _interp_rows(weather.dhi_wm2, rows)
    east, north, up, _, _ = _sun_vector(
        weather.latitude_deg, weather.longitude_deg, weather.utc_offset_h, t
    )
    beam = np.where(up > 0.0, dni, 0.0)
    # cos(incidence) on a vertical facade = sun vector · outward normal; N, E, S, W in order.
    cos_incidence = np.stack([north, east, -north, -east], axis=1)
    out = np.empty((t.shape[0], len(FACADES)), dtype=np.float64)
    out[:, :4] = (
        beam[:, None] * np.maximum(cos_incidence, 0.0)
        + (0.5 * dhi + 0.5 * weather.ground_reflectance * ghi)[:, None]
    )
    out[:, 4] = ghi
    return out


def sample(weather: Weather, epoch_s: FloatArray) -> WeatherSeries:
    """Weather at the starts of simulation steps.

    epoch_s : (n_steps,) UTC seconds since 1970 of the step starts (`SimClock.epoch_s`).
    Each time maps to the typical year by `typical_hour_of_year`. Temperature interpolates
    linearly between the hourly values; the 24 h mean integrates that interpolant over the
    preceding 24 h (wrapping into December for a run starting in January). Solar is taken at the
    step start, not averaged over the step: at minute steps the difference is negligible; callers
    with long steps may pass step midpoints instead.
    """
    hours = typical_hour_of_year(epoch_s, weather.utc_offset_h)
    if hours.ndim != 1:
        raise ValueError(f"epoch_s must be one-dimensional, got shape {hours.shape}")
    t_out = _interp_rows(weather.t_out_c, _interp_weights(hours, 1.0))
    t_out_24h = (
        _integral_rows(weather.t_out_c, hours, 1.0)
        - _integral_rows(weather.t_out_c, hours - 24.0, 1.0)
    ) / 24.0
    return WeatherSeries(
        t_out_c=t_out, t_out_24h_c=t_out_24h, solar_wm2=incident_solar(weather, hours)
    )
