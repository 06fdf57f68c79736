"""Defaults from the standards: ventilation rates and people per zone type, comfort classes."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# Confidence marks follow ../shared/notes/domain.md: [V] read in the source, [S] quoted by a
# secondary source, [U] from memory and unchecked. Every default here can be overridden per zone.


class ZoneKind(StrEnum):
    """What a zone is used for; it sets ventilation rates, people and their schedule."""

    OFFICE = "office"
    OPEN_OFFICE = "open_office"
    MEETING_ROOM = "meeting_room"
    CLASSROOM = "classroom"
    LECTURE_HALL = "lecture_hall"
    CAFETERIA = "cafeteria"
    CORRIDOR = "corridor"
    LOBBY = "lobby"


@dataclass(frozen=True)
class KindDefaults:
    """Per-kind defaults. Rates in L/s (SI with L for readability, converted once in params)."""

    rp_ls_per_person: float  # ASHRAE 62.1-2016 Table 6-1 people outdoor air rate
    ra_ls_per_m2: float  # ASHRAE 62.1-2016 Table 6-1 area outdoor air rate
    m2_per_person: float  # design density when design_occupancy is not given
    co2_generation_ls_per_person: float  # CO2 emitted per person
    sensible_w_per_person: float  # sensible heat per person
    equipment_w_m2: float  # lights and plug loads while the zone is in use


# Rp/Ra: ASHRAE 62.1-2016 Table 6-1 [S] (office, conference, classroom 9+, lecture hall rows);
# cafeteria, corridor and lobby rows [U]. Densities: EN 16798-1 / EN 15251 default m²/person [S]
# (single office 10, open plan 15, meeting 2, auditorium 0.75, classroom 2); cafeteria 1.5,
# corridor and lobby [U]. CO2 generation: adults in offices 0.0048 L/s (Persily & de Jonge 2017)
# [V via BOPTEST]; seated audiences 0.0042 L/s (MBL example value) [V]; pupils 11-16 years
# 0.0029 L/s (Persily) [S], a mixed school 0.0035. Sensible heat: ASHRAE Fundamentals ch. 18
# Table 1: seated very light work 70 W, moderately active 75 W, theater 65 W [S].
KIND_DEFAULTS: dict[ZoneKind, KindDefaults] = {
    ZoneKind.OFFICE: KindDefaults(2.5, 0.3, 10.0, 0.0048, 70.0, 12.0),
    ZoneKind.OPEN_OFFICE: KindDefaults(2.5, 0.3, 15.0, 0.0048, 70.0, 12.0),
    ZoneKind.MEETING_ROOM: KindDefaults(2.5, 0.3, 2.0, 0.0048, 70.0, 8.0),
    ZoneKind.CLASSROOM: KindDefaults(5.0, 0.6, 2.0, 0.0035, 65.0, 8.0),
    ZoneKind.LECTURE_HALL: KindDefaults(3.8, 0.3, 0.75, 0.0042, 65.0, 6.0),
    ZoneKind.CAFETERIA: KindDefaults(3.8, 0.9, 1.5, 0.0052, 75.0, 15.0),
    ZoneKind.CORRIDOR: KindDefaults(0.0, 0.3, 50.0, 0.0048, 75.0, 4.0),
    ZoneKind.LOBBY: KindDefaults(3.8, 0.3, 10.0, 0.0048, 75.0, 6.0),
}


class ComfortClass(StrEnum):
    """Indoor climate class: EN 16798-1 categories I-IV or the Finnish classification S1-S3."""

    I = "I"  # noqa: E741  (the standard's own name)
    II = "II"
    III = "III"
    IV = "IV"
    S1 = "S1"
    S2 = "S2"
    S3 = "S3"


@dataclass(frozen=True)
class ClassDefaults:
    """What a comfort class asks for.

    The operative temperature band is `t_mid_c(T_out,24h) ± half_width_k` for the adaptive Finnish
    classes and the fixed `[t_low_c, t_high_c]` for the EN categories.
    """

    qp_ls_per_person: float
    qb_ls_per_m2: float
    co2_above_outdoor_ppm: float | None  # EN 16798-1 gives the limit relative to outdoor air
    co2_absolute_ppm: float | None  # the Finnish classes give it absolute
    t_low_c: float | None
    t_high_c: float | None
    adaptive_half_width_k: float | None


# EN 16798-1:2019 Tables B.6/B.7 [S]: q_p, q_B for low-polluting buildings, ΔCO2 550/800/1350;
# category IV has no upper CO2 bound in the standard, the Cat III boundary is used [U].
# Operative temperature (offices, winter min / summer max) I 21/25.5, II 20/26, III 19/27 [S];
# IV 18/28 extrapolated [U].
# Finnish classification 2018: CO2 750/950/1200 ppm absolute [U], rates 2008 version (S1 10 L/s·p
# + 0.5 L/s·m², S2 7 + 0.5) [S]; S3 at the Decree 1009/2017 minimum 6 L/s·p [S] + 0.35 L/s·m² [U];
# S1/S2 band 21.5 + 0.2·clamp(T_out,24h, 0, 20) ± 0.5 / ± 1.0 K [U, weak source]; S3 20-27 °C [U].
CLASS_DEFAULTS: dict[ComfortClass, ClassDefaults] = {
    ComfortClass.I: ClassDefaults(10.0, 1.0, 550.0, None, 21.0, 25.5, None),
    ComfortClass.II: ClassDefaults(7.0, 0.7, 800.0, None, 20.0, 26.0, None),
    ComfortClass.III: ClassDefaults(4.0, 0.4, 1350.0, None, 19.0, 27.0, None),
    ComfortClass.IV: ClassDefaults(2.5, 0.3, 1350.0, None, 18.0, 28.0, None),
    ComfortClass.S1: ClassDefaults(10.0, 0.5, None, 750.0, None, None, 0.5),
    ComfortClass.S2: ClassDefaults(7.0, 0.5, None, 950.0, None, None, 1.0),
    ComfortClass.S3: ClassDefaults(6.0, 0.35, None, 1200.0, 20.0, 27.0, None),
}

# Finnish adaptive target: 21.5 °C plus 0.2 K per K of the 24 h mean outdoor temperature between
# 0 and 20 °C [U, weak source]; see `comfort_band` in controller.law.
ADAPTIVE_BASE_C = 21.5
ADAPTIVE_SLOPE = 0.2
ADAPTIVE_T_OUT_RANGE_C = (0.0, 20.0)

# Decree 1009/2017 (Ministry of the Environment, Finland): minimum design outdoor air per person.
FINNISH_MIN_LS_PER_PERSON = 6.0

# ISO 13790 thermal mass classes: internal heat capacity per floor area (J/(K·m²)) and the mass
# area factor f_ms [V: MBL ThermalZones/ISO13790/Data].
THERMAL_MASS: dict[str, tuple[float, float]] = {
    "light": (110e3, 2.5),
    "medium": (165e3, 2.5),
    "heavy": (260e3, 3.0),
}
