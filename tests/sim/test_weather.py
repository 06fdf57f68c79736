"""Tests for sim.weather: synthetic Helsinki year, sun, facade irradiance, EPW files, sampling."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensors.errors import IlmaError
from sim.clock import make_clock
from sim.weather import (
    FACADES,
    Weather,
    WeatherFileError,
    incident_solar,
    read_epw,
    sample,
    sun_position,
    synthetic_helsinki,
    typical_hour_of_year,
)

# notes/domain.md section 7, copied here on purpose: a typo in the module must not pass unseen.
T_MEAN_C = np.array([-3.9, -5.7, -1.0, 3.7, 9.9, 14.0, 16.7, 15.8, 10.2, 5.9, -1.3, -3.0])
GHI_KWH_M2 = np.array([7.8, 25.5, 57.9, 107.3, 164.6, 172.3, 168.7, 124.5, 70.4, 34.8, 9.4, 3.7])
MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
DAY_MONTH = np.repeat(np.arange(12), MONTH_DAYS)
ROW_MONTH = np.repeat(DAY_MONTH, 24)
FIRST_DAY = np.concatenate([[0], np.cumsum(MONTH_DAYS)])  # 0-based day of year of each month
EET = timezone(timedelta(hours=2))  # Helsinki standard time, the time of the weather rows
HELSINKI = ZoneInfo("Europe/Helsinki")


# Module-level, not only a fixture: hypothesis tests run their body many times per fixture.
_HELSINKI_7 = synthetic_helsinki(7)


@pytest.fixture(scope="module")
def helsinki() -> Weather:
    return _HELSINKI_7


def _monthly_mean(values: np.ndarray) -> np.ndarray:
    return np.bincount(ROW_MONTH, weights=values) / np.bincount(ROW_MONTH)


def _epoch(
    year: int, month: int, day: int, hour: int, minute: int, *, tz: timezone | ZoneInfo = EET
) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=tz).timestamp()


# --- synthetic year -------------------------------------------------------------------------------


def test_synthetic_year_has_8760_rows_at_helsinki_vantaa(helsinki: Weather) -> None:
    for values in (helsinki.t_out_c, helsinki.ghi_wm2, helsinki.dni_wm2, helsinki.dhi_wm2):
        assert values.shape == (8760,)
        assert values.dtype == np.float64
        assert np.all(np.isfinite(values))
    assert (helsinki.latitude_deg, helsinki.longitude_deg) == (60.32, 24.97)
    assert (helsinki.utc_offset_h, helsinki.elevation_m) == (2.0, 56.0)
    assert helsinki.ground_reflectance == 0.2


@pytest.mark.parametrize("seed", [0, 1, 7, 12345])
def test_synthetic_monthly_means_match_the_iwec_table(seed: int) -> None:
    weather = synthetic_helsinki(seed)
    np.testing.assert_allclose(_monthly_mean(weather.t_out_c), T_MEAN_C, atol=0.3)
    ghi_kwh = np.bincount(ROW_MONTH, weights=weather.ghi_wm2) / 1000.0  # hourly W/m² = Wh/m²
    np.testing.assert_allclose(ghi_kwh, GHI_KWH_M2, rtol=0.03)


def test_synthetic_daily_cycle_peaks_mid_afternoon_and_is_wider_in_summer(
    helsinki: Weather,
) -> None:
    by_hour = helsinki.t_out_c.reshape(365, 24)  # column k is the value at (k + 1):00
    june = by_hour[FIRST_DAY[5] : FIRST_DAY[6]].mean(axis=0)
    january = by_hour[FIRST_DAY[0] : FIRST_DAY[1]].mean(axis=0)
    at_15, at_05 = 14, 4
    assert june[at_15] > june[at_05] + 5.0
    assert january[at_15] > january[at_05]
    june_swing = june.max() - june.min()
    january_swing = january.max() - january.min()
    assert 6.0 < june_swing < 12.0
    assert 1.5 < january_swing < 5.0
    assert int(np.argmin(june)) in (3, 4, 5)  # minimum near 05:00 solar time (≈ 05:20 EET)
    assert int(np.argmax(june)) in (13, 14, 15)


def test_synthetic_irradiance_is_zero_at_night_and_never_negative(helsinki: Weather) -> None:
    mid_hour = np.arange(8760, dtype=np.float64) + 0.5
    elevation, _ = sun_position(60.32, 24.97, 2.0, mid_hour)
    night = elevation <= 0.0
    assert night.sum() > 2000  # a northern year has plenty of night
    for values in (helsinki.ghi_wm2, helsinki.dni_wm2, helsinki.dhi_wm2):
        assert np.all(values >= 0.0)
        assert np.all(values[night] == 0.0)
    assert helsinki.dni_wm2.max() <= 1100.0
    assert np.all(helsinki.dni_wm2[elevation < 3.0] == 0.0)  # zenith > 87°: no beam
    # Beam and diffuse add up to the global on the horizontal.
    cos_zenith = np.sin(np.radians(elevation))
    recomposed = helsinki.dni_wm2 * np.maximum(cos_zenith, 0.0) + helsinki.dhi_wm2
    np.testing.assert_allclose(recomposed, helsinki.ghi_wm2, atol=1e-6)
    # Erbs: the diffuse share never falls below its floor of 0.165 of the global.
    day = helsinki.ghi_wm2 > 0.0
    assert np.all(helsinki.dhi_wm2[day] >= 0.16 * helsinki.ghi_wm2[day])


def test_synthetic_is_deterministic_per_seed_and_varies_across_seeds() -> None:
    a, b, c = synthetic_helsinki(3), synthetic_helsinki(3), synthetic_helsinki(4)
    for field in ("t_out_c", "ghi_wm2", "dni_wm2", "dhi_wm2"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        assert np.abs(getattr(a, field) - getattr(c, field)).max() > 1.0
    np.testing.assert_allclose(_monthly_mean(a.t_out_c), _monthly_mean(c.t_out_c), atol=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_synthetic_day_to_day_variation_is_plausible(seed: int) -> None:
    daily = synthetic_helsinki(seed).t_out_c.reshape(365, 24).mean(axis=1)
    assert 2.0 < daily[: FIRST_DAY[1]].std() < 6.0  # January
    assert 1.0 < daily[FIRST_DAY[6] : FIRST_DAY[7]].std() < 4.0  # July
    # Weather persists for days: daily anomalies from the month's mean are autocorrelated.
    anomaly = daily - (np.bincount(DAY_MONTH, weights=daily) / MONTH_DAYS)[DAY_MONTH]
    lag1 = np.corrcoef(anomaly[:-1], anomaly[1:])[0, 1]
    assert 0.45 < lag1 < 0.9


def test_clear_winter_days_are_colder_and_clear_summer_days_warmer() -> None:
    winter_corr, summer_corr = [], []
    for seed in range(4):
        weather = synthetic_helsinki(seed)
        daily_t = weather.t_out_c.reshape(365, 24).mean(axis=1)
        daily_ghi = weather.ghi_wm2.reshape(365, 24).sum(axis=1)
        # Compare days within a month, so the seasonal trend does not count.
        t_anomaly = daily_t - (np.bincount(DAY_MONTH, weights=daily_t) / MONTH_DAYS)[DAY_MONTH]
        ghi_ratio = daily_ghi / (np.bincount(DAY_MONTH, weights=daily_ghi) / MONTH_DAYS)[DAY_MONTH]
        winter = np.isin(DAY_MONTH, [0, 1, 11])
        summer = np.isin(DAY_MONTH, [5, 6, 7])
        winter_corr.append(np.corrcoef(t_anomaly[winter], ghi_ratio[winter])[0, 1])
        summer_corr.append(np.corrcoef(t_anomaly[summer], ghi_ratio[summer])[0, 1])
    assert np.mean(winter_corr) < -0.15
    assert np.mean(summer_corr) > 0.15


# --- sun ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day_of_year", "noon_elevation_deg"),
    [
        (171, 90.0 - 60.32 + 23.44),  # June 21: 53.1°
        (354, 90.0 - 60.32 - 23.44),  # December 21: 6.2°
        (79, 90.0 - 60.32),  # March 21, equinox: 29.7°
    ],
)
def test_solar_noon_elevation_in_helsinki(day_of_year: int, noon_elevation_deg: float) -> None:
    minutes = day_of_year * 24 + np.arange(0, 24, 1 / 60)
    elevation, azimuth = sun_position(60.32, 24.97, 2.0, minutes)
    noon = int(np.argmax(elevation))
    assert elevation[noon] == pytest.approx(noon_elevation_deg, abs=0.5)
    assert azimuth[noon] == pytest.approx(180.0, abs=1.0)
    # Solar noon in Helsinki is 20 min after 12:00 EET minus the equation of time (±17 min).
    assert 11.9 < minutes[noon] - day_of_year * 24 < 12.7


def test_sun_rises_in_the_east_and_sets_in_the_west() -> None:
    june_21 = 171 * 24
    elevation, azimuth = sun_position(60.32, 24.97, 2.0, june_21 + np.array([6.0, 18.5]))
    assert np.all(elevation > 0.0)
    assert 45.0 < azimuth[0] < 100.0
    assert 260.0 < azimuth[1] < 315.0
    # Midnight in Helsinki in June: the sun stays just below the horizon.
    elevation, _ = sun_position(60.32, 24.97, 2.0, np.array([june_21 + 0.35]))
    assert -8.0 < elevation[0] < 0.0


def test_equinox_sun_at_the_equator_passes_overhead() -> None:
    minutes = 79 * 24 + np.arange(0, 24, 1 / 60)
    elevation, _ = sun_position(0.0, 0.0, 0.0, minutes)
    assert elevation.max() == pytest.approx(90.0, abs=0.5)


# --- incident solar -------------------------------------------------------------------------------


def _clearest_day(weather: Weather, month: int) -> int:
    daily = weather.ghi_wm2.reshape(365, 24).sum(axis=1)
    first, last = FIRST_DAY[month - 1], FIRST_DAY[month]
    return int(first + np.argmax(daily[first:last]))


def test_incident_solar_at_noon_on_a_clear_june_day(helsinki: Weather) -> None:
    row = _clearest_day(helsinki, 6) * 24 + 12  # the hour 12:00-13:00 EET holds solar noon
    solar = incident_solar(helsinki, np.array([row + 0.5]))[0]
    assert solar.shape == (len(FACADES),) == (5,)
    north, east, south, west, horizontal = solar
    ghi, dni, dhi = helsinki.ghi_wm2[row], helsinki.dni_wm2[row], helsinki.dhi_wm2[row]
    assert dni > 400.0  # a clear day
    sky_and_ground = dhi / 2 + 0.2 * ghi / 2
    assert north == pytest.approx(sky_and_ground)  # the sun is behind the north facade
    assert south > north + 0.5 * dni * np.cos(np.radians(55.0))
    assert horizontal == pytest.approx(ghi)
    assert abs(east - west) < 0.2 * south  # the sun is almost due south


def test_incident_solar_morning_sun_falls_on_the_east_facade(helsinki: Weather) -> None:
    row = _clearest_day(helsinki, 6) * 24 + 7  # 07:00-08:00 EET
    north, east, south, west, _ = incident_solar(helsinki, np.array([row + 0.5]))[0]
    assert east > max(north, south, west)
    assert west == pytest.approx(helsinki.dhi_wm2[row] / 2 + 0.2 * helsinki.ghi_wm2[row] / 2)


def test_incident_solar_horizontal_is_ghi_at_every_mid_hour(helsinki: Weather) -> None:
    solar = incident_solar(helsinki, np.arange(8760, dtype=np.float64) + 0.5)
    assert solar.shape == (8760, 5)
    np.testing.assert_allclose(solar[:, 4], helsinki.ghi_wm2, rtol=0, atol=1e-9)
    assert np.all(solar >= 0.0)
    # Over a year in Helsinki the south facade collects the most, the north the least.
    yearly = solar.sum(axis=0)
    assert yearly[2] > yearly[1] > yearly[0]
    assert yearly[2] > yearly[3] > yearly[0]


def test_incident_solar_is_dark_at_night_and_interpolates_between_hours(helsinki: Weather) -> None:
    night = FIRST_DAY[11] * 24 + np.array([0.5, 2.0, 23.9])  # December nights
    np.testing.assert_array_equal(incident_solar(helsinki, night), 0.0)
    row = _clearest_day(helsinki, 5) * 24 + 10
    between = incident_solar(helsinki, np.array([row + 1.0]))[0, 4]
    assert between == pytest.approx(0.5 * (helsinki.ghi_wm2[row] + helsinki.ghi_wm2[row + 1]))


def test_incident_solar_wraps_around_the_year(helsinki: Weather) -> None:
    hours = np.array([10.25, 4000.5])
    np.testing.assert_allclose(
        incident_solar(helsinki, hours), incident_solar(helsinki, hours + 8760.0), atol=1e-6
    )
    np.testing.assert_allclose(
        incident_solar(helsinki, hours), incident_solar(helsinki, hours - 2 * 8760.0), atol=1e-6
    )


def test_incident_solar_rejects_bad_times(helsinki: Weather) -> None:
    with pytest.raises(ValueError, match="finite"):
        incident_solar(helsinki, np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="one-dimensional"):
        incident_solar(helsinki, np.zeros((2, 2)))


@settings(max_examples=200)
@given(
    hours=st.lists(
        st.floats(min_value=0.0, max_value=8760.0, exclude_max=True), min_size=1, max_size=40
    ),
    latitude=st.floats(min_value=-90.0, max_value=90.0),
    longitude=st.floats(min_value=-180.0, max_value=180.0),
)
def test_incident_solar_is_finite_and_non_negative(
    hours: list[float], latitude: float, longitude: float
) -> None:
    weather = _HELSINKI_7
    located = dataclasses.replace(weather, latitude_deg=latitude, longitude_deg=longitude)
    for w in (weather, located):
        solar = incident_solar(w, np.array(hours))
        assert solar.shape == (len(hours), 5)
        assert np.all(np.isfinite(solar))
        assert np.all(solar >= 0.0)


# --- Weather --------------------------------------------------------------------------------------


def test_weather_validates_and_freezes_its_arrays(helsinki: Weather) -> None:
    with pytest.raises(ValueError, match=r"shape \(8760,\)"):
        dataclasses.replace(helsinki, t_out_c=np.zeros(8759))
    with pytest.raises(ValueError, match=">= 0"):
        dataclasses.replace(helsinki, ghi_wm2=np.full(8760, -1.0))
    with pytest.raises(ValueError, match="latitude"):
        dataclasses.replace(helsinki, latitude_deg=91.0)
    source = np.zeros(8760)
    weather = dataclasses.replace(helsinki, t_out_c=source)
    source[0] = 99.0  # the Weather keeps its own copy
    assert weather.t_out_c[0] == 0.0
    with pytest.raises(ValueError, match="read-only"):
        weather.t_out_c[0] = 1.0


# --- EPW ------------------------------------------------------------------------------------------

_FLAGS = "?9?9?9?9E0?9?9?9?9?9?9?9?9?9?9?9?9?9?9?9*9*9?9*9*9"


def _epw_header(records_per_hour: int = 1) -> list[str]:
    return [
        "LOCATION,Helsinki-Vantaa,-,FIN,IWEC Data,029740,60.32,24.97,2.0,56.0",
        "DESIGN CONDITIONS,0",
        "TYPICAL/EXTREME PERIODS,0",
        "GROUND TEMPERATURES,0",
        "HOLIDAYS/DAYLIGHT SAVINGS,No,0,0,0",
        "COMMENTS 1,written by tests/sim/test_weather.py",
        "COMMENTS 2,values from sim.weather.synthetic_helsinki",
        f"DATA PERIODS,1,{records_per_hour},Data,Friday, 1/ 1,12/31",
    ]


def _epw_row(
    year: int, month: int, day: int, hour: int, *, t: float, ghi: float, dni: float, dhi: float
) -> str:
    fields = [
        f"{year}",
        f"{month}",
        f"{day}",
        f"{hour}",
        "60",
        _FLAGS,
        f"{t:.1f}",
        "-5.0",
        "80",
        "101300",
        "0",
        "1415",
        "300",
        f"{ghi:.0f}",
        f"{dni:.0f}",
        f"{dhi:.0f}",
        *["0"] * 5,  # illuminances, zenith luminance, wind direction
        "3.1",
        "5",
        "5",
        "20.0",
        "77777",
        "9",
        "999999999",
        "10",
        "0.100",
        "0",
        "88",
        "0.200",
        "0.0",
        "1.0",
    ]
    assert len(fields) == 35
    return ",".join(fields)


def _epw_data(weather: Weather, *, leap: bool = False) -> list[str]:
    rows = []
    i = 0
    year = 2028 if leap else 2027
    for month, n_days in enumerate(MONTH_DAYS, start=1):
        for day in range(1, n_days + (1 if leap and month == 2 else 0) + 1):
            for hour in range(1, 25):
                if month == 2 and day == 29:
                    rows.append(_epw_row(year, month, day, hour, t=33.3, ghi=0, dni=0, dhi=0))
                    continue
                rows.append(
                    _epw_row(
                        year,
                        month,
                        day,
                        hour,
                        t=weather.t_out_c[i],
                        ghi=weather.ghi_wm2[i],
                        dni=weather.dni_wm2[i],
                        dhi=weather.dhi_wm2[i],
                    )
                )
                i += 1
    return rows


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def epw_data(helsinki: Weather) -> list[str]:
    return _epw_data(helsinki)


def _with_field(line: str, index: int, value: str) -> str:
    fields = line.split(",")
    fields[index] = value
    return ",".join(fields)


def test_read_epw_round_trips_a_written_year(
    tmp_path: Path, helsinki: Weather, epw_data: list[str]
) -> None:
    weather = read_epw(_write(tmp_path / "helsinki.epw", _epw_header() + epw_data))
    assert weather.name == "Helsinki-Vantaa"
    assert (weather.latitude_deg, weather.longitude_deg) == (60.32, 24.97)
    assert (weather.utc_offset_h, weather.elevation_m) == (2.0, 56.0)
    np.testing.assert_allclose(weather.t_out_c, helsinki.t_out_c, atol=0.05 + 1e-9)
    for field in ("ghi_wm2", "dni_wm2", "dhi_wm2"):
        np.testing.assert_allclose(getattr(weather, field), getattr(helsinki, field), atol=0.5001)
    # The rounded file still reproduces the monthly climate.
    np.testing.assert_allclose(_monthly_mean(weather.t_out_c), T_MEAN_C, atol=0.3)


def test_read_epw_interpolates_missing_values(tmp_path: Path, epw_data: list[str]) -> None:
    data = list(epw_data)
    data[100] = _with_field(data[100], 6, "99.9")  # dry bulb missing
    for i in (4000, 4001, 4002):
        data[i] = _with_field(data[i], 13, "9999")  # GHI missing for three hours
    data[5000] = _with_field(data[5000], 14, "9999")  # DNI
    data[5000] = _with_field(data[5000], 15, "9999")  # DHI
    data[0] = _with_field(data[0], 6, "99.9")  # first row: interpolate across the year end
    weather = read_epw(_write(tmp_path / "gaps.epw", _epw_header() + data))
    reference = read_epw(_write(tmp_path / "full.epw", _epw_header() + epw_data))

    t, t_ref = weather.t_out_c, reference.t_out_c
    assert t[100] == pytest.approx((t_ref[99] + t_ref[101]) / 2)
    assert t[0] == pytest.approx((t_ref[8759] + t_ref[1]) / 2)
    ghi, ghi_ref = weather.ghi_wm2, reference.ghi_wm2
    expected = np.interp([4000, 4001, 4002], [3999, 4003], [ghi_ref[3999], ghi_ref[4003]])
    np.testing.assert_allclose(ghi[4000:4003], expected)
    for field in ("dni_wm2", "dhi_wm2"):
        values, ref = getattr(weather, field), getattr(reference, field)
        assert values[5000] == pytest.approx((ref[4999] + ref[5001]) / 2)
    untouched = np.ones(8760, dtype=bool)
    untouched[[0, 100]] = False
    np.testing.assert_array_equal(t[untouched], t_ref[untouched])


@pytest.mark.parametrize(
    ("n_rows", "line"),
    [(8759, 8 + 8759 + 1), (100, 8 + 100 + 1), (8761, 8 + 8760 + 1), (8790, 8 + 8784 + 1)],
)
def test_read_epw_rejects_a_wrong_row_count(
    tmp_path: Path, epw_data: list[str], n_rows: int, line: int
) -> None:
    data = (epw_data * 2)[:n_rows]
    path = _write(tmp_path / "short.epw", _epw_header() + data)
    with pytest.raises(WeatherFileError, match=rf"short\.epw, line {line}:.*8760") as caught:
        read_epw(path)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, IlmaError)


def test_read_epw_rejects_a_garbage_field(tmp_path: Path, epw_data: list[str]) -> None:
    data = list(epw_data)
    data[500] = _with_field(data[500], 6, "warm")
    path = _write(tmp_path / "garbage.epw", _epw_header() + data)
    with pytest.raises(WeatherFileError, match=r"garbage\.epw, line 509, field 7 .*'warm'"):
        read_epw(path)


@pytest.mark.parametrize(
    ("index", "value", "what"),
    [
        (6, "nan", "expected a number"),
        (13, "", "expected a number"),
        (13, "-5", "expected Wh/m² >= 0"),
        (6, "85.0", "expected -70 < °C < 70"),
        (3, "7", "expected month 1, day 2, hour 8"),
    ],
)
def test_read_epw_rejects_bad_values_with_their_line(
    tmp_path: Path, epw_data: list[str], index: int, value: str, what: str
) -> None:
    data = list(epw_data)
    data[31] = _with_field(data[31], index, value)
    path = _write(tmp_path / "bad.epw", _epw_header() + data)
    with pytest.raises(WeatherFileError, match=r"bad\.epw, line 40") as caught:
        read_epw(path)
    assert what in str(caught.value)


def test_read_epw_rejects_a_malformed_line_and_header(tmp_path: Path, epw_data: list[str]) -> None:
    data = list(epw_data)
    data[1234] = "2027,2,21,11,60"
    with pytest.raises(WeatherFileError, match=r"cut\.epw, line 1243: expected at least 16"):
        read_epw(_write(tmp_path / "cut.epw", _epw_header() + data))
    header = _epw_header()
    header[0] = "PLACE,Nowhere"
    with pytest.raises(WeatherFileError, match=r"head\.epw, line 1: expected 'LOCATION"):
        read_epw(_write(tmp_path / "head.epw", header + epw_data))
    with pytest.raises(WeatherFileError, match=r"sub\.epw, line 8: expected 1 record per hour"):
        read_epw(_write(tmp_path / "sub.epw", _epw_header(records_per_hour=4) + epw_data))
    with pytest.raises(WeatherFileError, match=r"tiny\.epw, line 4: file ends inside the header"):
        read_epw(_write(tmp_path / "tiny.epw", _epw_header()[:3]))


def test_read_epw_drops_feb_29_of_a_leap_year(tmp_path: Path, helsinki: Weather) -> None:
    data = _epw_data(helsinki, leap=True)
    assert len(data) == 8784
    weather = read_epw(_write(tmp_path / "leap.epw", _epw_header() + data))
    assert weather.t_out_c.shape == (8760,)
    assert not np.any(weather.t_out_c == 33.3)  # the Feb 29 marker rows are gone
    np.testing.assert_allclose(weather.t_out_c, helsinki.t_out_c, atol=0.05 + 1e-9)


def test_read_epw_accepts_crlf_and_trailing_blank_lines(
    tmp_path: Path, epw_data: list[str]
) -> None:
    path = tmp_path / "dos.epw"
    path.write_bytes(("\r\n".join(_epw_header() + epw_data) + "\r\n\r\n").encode("latin-1"))
    assert read_epw(path).t_out_c.shape == (8760,)


@pytest.fixture(scope="module")
def epw_lines(epw_data: list[str]) -> list[str]:
    return _epw_header() + epw_data


@settings(max_examples=12)
@given(
    row=st.integers(min_value=0, max_value=8759),
    field=st.sampled_from([1, 2, 3, 6, 13, 14, 15]),
    text=st.text(alphabet=st.characters(codec="utf-8"), max_size=8),
)
def test_read_epw_fails_only_with_weather_file_error(
    tmp_path_factory: pytest.TempPathFactory, epw_lines: list[str], row: int, field: int, text: str
) -> None:
    lines = list(epw_lines)
    lines[8 + row] = _with_field(lines[8 + row], field, text)
    path = _write(tmp_path_factory.mktemp("fuzz") / "fuzz.epw", lines)
    try:
        weather = read_epw(path)
    except WeatherFileError as exc:
        message = str(exc)
    else:
        assert np.all(np.isfinite(weather.t_out_c))
        assert np.all(weather.ghi_wm2 >= 0.0)
        return
    assert "fuzz.epw, line" in message


# --- sampling -------------------------------------------------------------------------------------


def test_typical_hour_of_year_uses_standard_time_and_folds_leap_days() -> None:
    cases = [
        (_epoch(2027, 1, 1, 0, 0), 0.0),
        (_epoch(2026, 12, 31, 23, 30), 8759.5),
        # 12:00 in Helsinki in July is summer time: 11:00 standard time.
        (_epoch(2027, 7, 1, 12, 0, tz=HELSINKI), 181 * 24 + 11.0),
        (_epoch(2028, 2, 28, 12, 0), 58 * 24 + 12.0),
        (_epoch(2028, 2, 29, 12, 0), 58 * 24 + 12.0),
        (_epoch(2028, 3, 1, 12, 0), 59 * 24 + 12.0),
        (_epoch(2028, 12, 31, 18, 0), 364 * 24 + 18.0),
        (_epoch(1999, 6, 21, 6, 15, tz=UTC), 171 * 24 + 8.25),
    ]
    epoch = np.array([e for e, _ in cases])
    np.testing.assert_allclose(
        typical_hour_of_year(epoch, 2.0), [h for _, h in cases], rtol=0, atol=1e-6
    )


def test_sample_at_exact_hours_returns_the_hourly_values(helsinki: Weather) -> None:
    rows = np.array([0, 4, 14, 4000, 8759])
    # Row h holds the temperature at the end of its hour: h + 1 hours after Jan 1 00:00 EET.
    epoch = _epoch(2027, 1, 1, 0, 0) + 3600.0 * (rows + 1)
    series = sample(helsinki, epoch)
    np.testing.assert_allclose(series.t_out_c, helsinki.t_out_c[rows], rtol=0, atol=1e-9)
    halfway = sample(helsinki, epoch[:1] + 1800.0).t_out_c[0]
    assert halfway == pytest.approx((helsinki.t_out_c[0] + helsinki.t_out_c[1]) / 2)


def test_sample_wraps_over_the_year_boundary(helsinki: Weather) -> None:
    clock = make_clock(date(2026, 12, 31), 2, 60, HELSINKI)
    series = sample(helsinki, clock.epoch_s)
    n = clock.n_steps
    assert n == 2 * 1440
    assert series.t_out_c.shape == series.t_out_24h_c.shape == (n,)
    assert series.solar_wm2.shape == (n, 5)
    for values in (series.t_out_c, series.t_out_24h_c, series.solar_wm2):
        assert np.all(np.isfinite(values))
    # 23:00 on Dec 31 is the end of row 8758; midnight the end of row 8759; 01:00 of row 0.
    t = helsinki.t_out_c
    assert series.t_out_c[23 * 60] == pytest.approx(t[8758])
    assert series.t_out_c[24 * 60] == pytest.approx(t[8759])
    assert series.t_out_c[25 * 60] == pytest.approx(t[0])
    # No jump at the boundary: minute steps change by a sliver of the hourly change.
    hourly_change = np.abs(np.diff(t, append=t[0])).max()  # Dec 31 24:00 to Jan 1 01:00 included
    assert np.abs(np.diff(series.t_out_c)).max() < hourly_change / 60 + 1e-9
    assert np.abs(np.diff(series.t_out_24h_c)).max() < 0.05


def test_sample_24h_mean_covers_the_previous_day(helsinki: Weather) -> None:
    t = helsinki.t_out_c
    rows = np.array([0, 10, 23, 24, 500, 4000, 8759])
    epoch = _epoch(2027, 1, 1, 0, 0) + 3600.0 * (rows + 1)
    series = sample(helsinki, epoch)
    for k, h in enumerate(rows):
        window = t[np.arange(h - 24, h + 1) % 8760]  # 25 values: the ends count half
        trapezoid = (window.sum() - 0.5 * (window[0] + window[-1])) / 24.0
        assert series.t_out_24h_c[k] == pytest.approx(trapezoid, abs=1e-9)
        assert series.t_out_24h_c[k] == pytest.approx(window[1:].mean(), abs=0.2)


def test_sample_first_day_of_a_run_uses_the_days_before(helsinki: Weather) -> None:
    clock = make_clock(date(2027, 1, 1), 1, 600, HELSINKI)
    series = sample(helsinki, clock.epoch_s)
    december_31 = helsinki.t_out_c[8736:8760]  # values at 01:00 ... 24:00 of Dec 31
    assert series.t_out_24h_c[0] == pytest.approx(december_31.mean(), abs=0.2)
    assert series.t_out_c[0] == pytest.approx(december_31[-1])


def test_sample_solar_is_taken_at_the_step_start(helsinki: Weather) -> None:
    clock = make_clock(date(2027, 6, 10), 1, 900, HELSINKI)
    series = sample(helsinki, clock.epoch_s)
    hours = typical_hour_of_year(clock.epoch_s, 2.0)
    np.testing.assert_array_equal(series.solar_wm2, incident_solar(helsinki, hours))
    assert hours[0] == pytest.approx(160 * 24 - 1.0)  # local midnight is 23:00 standard time
    assert series.solar_wm2[:, 2].max() > 300.0


def test_sample_a_year_of_minutes(helsinki: Weather) -> None:
    clock = make_clock(date(2027, 1, 1), 365, 60, HELSINKI)
    series = sample(helsinki, clock.epoch_s)
    assert series.t_out_c.shape == (525_600,)
    assert series.solar_wm2.shape == (525_600, 5)
    assert series.t_out_c.mean() == pytest.approx(helsinki.t_out_c.mean(), abs=0.01)
    # Minute samples of the interpolated GHI integrate to the hourly total.
    assert series.solar_wm2[:, 4].sum() / 60 == pytest.approx(helsinki.ghi_wm2.sum(), rel=1e-3)
