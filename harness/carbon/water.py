"""Water a workload consumes: on site (cooling) and in making its electricity.

water_l = E_IT,kWh × (WUE + PUE × EWIF)

* WUE (``wue_l_per_kwh``): the data centre's on-site water usage effectiveness, litres evaporated
  per kWh of IT energy (The Green Grid's metric; codecarbon's ``wue`` since its #941).
* EWIF (``electricity_water_l_per_kwh``): litres consumed per kWh of electricity generated
  (thermal and hydro plants' evaporation); the facility draws PUE × E_IT from the grid.

Defaults are averages with their source, labelled as defaults so a report never passes them off
as the site's figure.
"""

from __future__ import annotations

from harness.units import J_PER_KWH

#: Shehabi et al. 2016, United States Data Center Energy Usage Report (LBNL-1005775): 1.8 L/kWh,
#: the average on-site WUE of US data centres
DEFAULT_WUE_L_PER_KWH = 1.8
WUE_SOURCE = "default 1.8 L/kWh: US data-centre average, Shehabi et al. 2016 (LBNL-1005775)"
#: Reig et al. 2020 (WRI, Guidance for calculating water use embedded in purchased
#: electricity), US average consumption 3.14 L/kWh, as used by Li et al. 2023 (Making AI less
#: thirsty)
DEFAULT_ELECTRICITY_WATER_L_PER_KWH = 3.14
ELECTRICITY_WATER_SOURCE = (
    "default 3.14 L/kWh: US generation average, Reig et al. 2020 (WRI), as in Li et al. 2023"
)


def factors(carbon: dict) -> dict:
    """The water factors of a suite's carbon block, each with where it came from."""
    wue = carbon.get("wue_l_per_kwh")
    ewif = carbon.get("electricity_water_l_per_kwh")
    return {
        "wue_l_per_kwh": DEFAULT_WUE_L_PER_KWH if wue is None else float(wue),
        "wue_origin": WUE_SOURCE if wue is None else "given in the suite",
        "electricity_water_l_per_kwh": (
            DEFAULT_ELECTRICITY_WATER_L_PER_KWH if ewif is None else float(ewif)
        ),
        "electricity_water_origin": (
            ELECTRICITY_WATER_SOURCE if ewif is None else "given in the suite"
        ),
    }


def water_l(energy_j: float, pue: float, wue_l_per_kwh: float, ewif_l_per_kwh: float) -> float:
    """Litres of water for ``energy_j`` of IT energy: on site plus in the electricity."""
    kwh = energy_j / J_PER_KWH
    return kwh * (wue_l_per_kwh + pue * ewif_l_per_kwh)
