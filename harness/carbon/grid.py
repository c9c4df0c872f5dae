"""Grid carbon intensity and PUE: what one kilowatt-hour drawn here emits.

Intensities come from the data codecarbon ships (no network): ``global_energy_mix.json`` per
country (ISO 3166 alpha-3, ``carbon_intensity`` in gCO2e/kWh), and for a ``region`` the finer
tables it also ships: US states (EPA eGRID, lbs/MWh), Nordic bidding zones and Chinese provinces
(gCO2e/kWh). CO2e of a record = energy × PUE × intensity (``harness.records.derive``).
"""

from __future__ import annotations

import json
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
    explicit = carbon.get("intensity_g_per_kwh")
    if explicit is not None:
        return float(explicit), pue
    country = carbon.get("country")
    if not country:
        raise HarnessError("carbon: give either country or intensity_g_per_kwh")
    region = carbon.get("region")
    if region:
        return region_intensity(country, region), pue
    return country_intensity(country), pue


def settings(carbon: dict) -> dict:
    """The carbon columns' inputs, as ``harness.records.derive`` takes them, plus their origin."""
    g_per_kwh, pue = intensity(carbon)
    if carbon.get("intensity_g_per_kwh") is not None:
        origin = "given in the suite"
    elif carbon.get("region"):
        origin = f"codecarbon data for {carbon['country']}/{carbon['region']}"
    else:
        origin = f"codecarbon data for {carbon['country']}"
    return {"intensity_g_per_kwh": g_per_kwh, "pue": pue, "origin": origin}
