"""Grid carbon intensity and PUE: what one kilowatt-hour drawn here emits.

Intensities come from the data codecarbon ships (no network): ``global_energy_mix.json`` per
country (ISO 3166 alpha-3, ``carbon_intensity`` in gCO2e/kWh), and for a ``region`` the finer
tables it also ships: US states (EPA eGRID, lbs/MWh), Nordic bidding zones and Chinese provinces
(gCO2e/kWh). CO2e of a record = energy × PUE × intensity (``harness.records.derive``).

An hourly series (``intensity_file``: a CSV of timestamp, gCO2e/kWh, as Electricity Maps and
WattTime export them) replaces the flat figure: a window's energy is spread evenly over its
duration and each hour's part is weighed by that hour's intensity (:func:`window_intensity`).
Readings finer than an hour are averaged per hour (:class:`IntensitySeries`).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from functools import lru_cache
from pathlib import Path

from harness.errors import HarnessError

G_PER_LB = 453.59237
#: regional tables of codecarbon, by the country they refine
_REGIONAL = {
    "USA": "2023/usa_emissions.json",
    "SWE": "nordic_emissions.json",
    "NOR": "nordic_emissions.json",
    "FIN": "nordic_emissions.json",
    "CHN": "2023/china_provincial_emissions.json",
}


def _data_dir() -> Path:
    try:
        import importlib.util

        spec = importlib.util.find_spec("codecarbon")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        raise HarnessError(
            "carbon: codecarbon is not installed, so country intensities are unknown; "
            "give intensity_g_per_kwh instead"
        )
    return Path(spec.origin).parent / "data" / "private_infra"


@lru_cache(maxsize=8)
def _load(relative: str) -> dict:
    path = _data_dir() / relative
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise HarnessError(f"carbon: cannot read codecarbon's {relative}: {e}") from None


def country_intensity(country: str) -> float:
    """gCO2e/kWh of a country's grid (ISO 3166 alpha-3, e.g. FRA)."""
    table = _load("global_energy_mix.json")
    row = table.get(country.upper())
    if not row or row.get("carbon_intensity") is None:
        raise HarnessError(
            f"carbon.country: unknown country code {country!r} (ISO 3166 alpha-3, e.g. FRA, USA)"
        )
    return float(row["carbon_intensity"])


def region_intensity(country: str, region: str) -> float:
    """gCO2e/kWh of a region: a US state, a Nordic bidding zone (SE3) or a Chinese province."""
    country = country.upper()
    relative = _REGIONAL.get(country)
    if relative is None:
        raise HarnessError(
            f"carbon.region: codecarbon has no regional data for {country} "
            f"(it has {', '.join(sorted(_REGIONAL))}); give intensity_g_per_kwh instead"
        )
    table = _load(relative)
    key = region.strip().lower()
    if country == "USA":
        for name, row in table.items():
            if name.startswith("_") or not isinstance(row, dict):
                continue
            if key in (name.lower(), str(row.get("regionCode", "")).lower()):
                return float(row["emissions"]) * G_PER_LB / 1000.0  # lbs/MWh -> g/kWh
    else:
        for code, row in table.get("data", {}).items():
            names = [code.lower(), str(row.get("description", "")).lower(), *row.get("names", [])]
            if key in names or key.upper() == code:
                return float(row["emission_factor"])
    raise HarnessError(f"carbon.region: unknown region {region!r} of {country}")


def intensity(carbon: dict) -> tuple[float, float]:
    """``(g_per_kwh, pue)`` from a suite's carbon block."""
    pue = float(carbon.get("pue") or 1.0)
    if carbon.get("intensity_file"):
        return read_series(carbon["intensity_file"]).mean_g_per_kwh, pue
    explicit = carbon.get("intensity_g_per_kwh")
    if explicit is not None:
        return float(explicit), pue
    country = carbon.get("country")
    if not country:
        raise HarnessError("carbon: give country, intensity_g_per_kwh or intensity_file")
    region = carbon.get("region")
    if region:
        return region_intensity(country, region), pue
    return country_intensity(country), pue


def settings(carbon: dict) -> dict:
    """The carbon columns' inputs, as ``harness.records.derive`` takes them, plus their origin.

    With an ``intensity_file`` the hourly series rides along as ``intensity_series``
    (``[[hour_start_unix_s, g_per_kwh], ...]``) and ``intensity_g_per_kwh`` is its mean; the
    water factors (``harness.carbon.water``) are always filled, labelled with their source.
    """
    from harness.carbon import water

    g_per_kwh, pue = intensity(carbon)
    out = {"intensity_g_per_kwh": g_per_kwh, "pue": pue}
    if carbon.get("intensity_file"):
        series = read_series(carbon["intensity_file"])
        out["origin"] = f"hourly series {Path(carbon['intensity_file']).name} ({series.span()})"
        out["intensity_series"] = series.points
    elif carbon.get("intensity_g_per_kwh") is not None:
        out["origin"] = "given in the suite"
    elif carbon.get("region"):
        out["origin"] = f"codecarbon data for {carbon['country']}/{carbon['region']}"
    else:
        out["origin"] = f"codecarbon data for {carbon['country']}"
    out.update(water.factors(carbon))
    return out


# ---------------------------------------------------------------------- hourly series
HOUR_S = 3600.0
#: header names read as the intensity column, first found wins (Electricity Maps, WattTime, ours)
_VALUE_COLUMNS = (
    "g_per_kwh",
    "intensity_g_per_kwh",
    "carbon intensity gco₂eq/kwh (lca)",
    "carbon intensity gco₂eq/kwh (direct)",
    "carbon_intensity_gco2eq_per_kwh",
    "carbonintensity",
    "carbon_intensity",
    "value",
)
_TIME_COLUMNS = ("timestamp", "datetime (utc)", "datetime", "point_time", "time", "date")


class IntensitySeries:
    """Hourly grid intensity: hour starts (unix seconds, UTC) and gCO2e/kWh, sorted.

    Readings finer than an hour (Electricity Maps' 5 and 15 minutes, WattTime's 5) are averaged
    per hour: each hour's figure is the plain mean of the readings stamped inside it, which is the
    time-weighted mean for evenly spaced readings (what both services export).
    """

    def __init__(self, points: list[list[float]]):
        if not points:
            raise HarnessError("carbon.intensity_file: the file has no rows")
        readings: dict[int, list[float]] = {}
        for t, g in points:
            readings.setdefault(int(float(t) // HOUR_S), []).append(float(g))
        #: readings in the file (or series) before averaging per hour
        self.readings = len(points)
        self.points = [[HOUR_S * h, sum(v) / len(v)] for h, v in sorted(readings.items())]
        self._by_hour = {int(t // HOUR_S): g for t, g in self.points}
        by_hod: dict[int, list[float]] = {}
        for t, g in self.points:
            by_hod.setdefault(int(t // HOUR_S) % 24, []).append(g)
        #: mean per hour of the day (UTC): the fallback for times the file does not cover
        self.hour_of_day_g_per_kwh = {h: sum(v) / len(v) for h, v in sorted(by_hod.items())}
        self.mean_g_per_kwh = sum(g for _, g in self.points) / len(self.points)

    def at_hour(self, hour: int) -> float:
        """gCO2e/kWh of the hour ``hour`` (unix seconds // 3600); outside the file: the mean of
        the same hour of the day in the file, else the file's mean."""
        found = self._by_hour.get(hour)
        if found is not None:
            return found
        return self.hour_of_day_g_per_kwh.get(hour % 24, self.mean_g_per_kwh)

    def covers(self, start_unix_s: float, end_unix_s: float) -> bool:
        hours = range(int(start_unix_s // HOUR_S), int(math.ceil(end_unix_s / HOUR_S)))
        return all(h in self._by_hour for h in hours)

    def span(self) -> str:
        first = dt.datetime.fromtimestamp(self.points[0][0], dt.timezone.utc)
        last = dt.datetime.fromtimestamp(self.points[-1][0], dt.timezone.utc)
        text = f"{len(self.points)} hours, {first:%Y-%m-%dT%H:%MZ} to {last:%Y-%m-%dT%H:%MZ}"
        if self.readings > len(self.points):
            text += f"; {self.readings} readings averaged per hour"
        return text


def _parse_time(text: str, where: str) -> float:
    text = text.strip()
    try:
        stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            return float(text)  # unix seconds
        except ValueError:
            raise HarnessError(
                f"{where}: {text!r} is not a timestamp (ISO 8601 or unix seconds)"
            ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)  # naive times are read as UTC
    return stamp.timestamp()


@lru_cache(maxsize=8)
def _read_series(path: str, mtime_ns: int) -> IntensitySeries:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as e:
        raise HarnessError(f"carbon.intensity_file: cannot read {path}: {e.strerror}") from None
    rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
    if not rows:
        raise HarnessError(f"carbon.intensity_file: {path} is empty")
    header = [c.strip().lower() for c in rows[0]]
    t_col = next((header.index(n) for n in _TIME_COLUMNS if n in header), None)
    g_col = next((header.index(n) for n in _VALUE_COLUMNS if n in header), None)
    if t_col is None or g_col is None:
        if len(header) == 2 and t_col is None and g_col is None:
            t_col, g_col = 0, 1  # no header names we know: timestamp, value
        else:
            raise HarnessError(
                f"carbon.intensity_file: {path}: need a timestamp column and a gCO2e/kWh column "
                f"(e.g. 'timestamp,g_per_kwh'), found {', '.join(header)}"
            )
    body = rows[1:]
    try:
        _parse_time(rows[0][t_col], "")
        body = rows  # the first row is data: there is no header
    except HarnessError:
        pass
    points = []
    for n, row in enumerate(body, start=len(rows) - len(body) + 1):
        where = f"carbon.intensity_file: {path} line {n}"
        if len(row) <= max(t_col, g_col):
            raise HarnessError(f"{where}: too few columns")
        t = _parse_time(row[t_col], where)
        try:
            g = float(row[g_col])
        except ValueError:
            raise HarnessError(f"{where}: {row[g_col]!r} is not a number of gCO2e/kWh") from None
        if not g >= 0 or math.isinf(g):
            raise HarnessError(f"{where}: intensity must be zero or more, not {row[g_col]!r}")
        points.append([t, g])
    return IntensitySeries(points)


def read_series(path: str | Path) -> IntensitySeries:
    """The hourly series of an intensity file (cached while the file is unchanged)."""
    p = Path(path)
    try:
        mtime = p.stat().st_mtime_ns
    except OSError as e:
        raise HarnessError(f"carbon.intensity_file: cannot read {p}: {e.strerror}") from None
    return _read_series(str(p), mtime)


def window_intensity(
    series: IntensitySeries | list, start_unix_s: float, duration_s: float
) -> float:
    """The mean gCO2e/kWh a window's energy met, its energy spread evenly over its duration.

    A window across an hour boundary is split: each hour weighs by the seconds of the window in
    it. (Spreading evenly is exact for a window at constant power; the harness's windows are
    seconds to minutes long, far below the hour the series resolves.)
    """
    if not isinstance(series, IntensitySeries):
        series = IntensitySeries(series)
    if not duration_s > 0:
        return series.at_hour(int(start_unix_s // HOUR_S))
    end = start_unix_s + duration_s
    total = 0.0
    t = start_unix_s
    while t < end:
        hour = int(t // HOUR_S)
        upto = min(end, (hour + 1) * HOUR_S)
        total += series.at_hour(hour) * (upto - t)
        t = upto
    return total / duration_s
