"""Carbon beyond the plug: grid intensity (flat or hourly) and PUE, embodied emissions of the
hardware, and water.

* :mod:`harness.carbon.grid`: gCO2e/kWh from codecarbon's shipped data, a suite's figure, or an
  hourly series file; PUE.
* :mod:`harness.carbon.water`: litres per kWh on site (WUE) and in the electricity.
* :mod:`harness.carbon.embodied`: manufacturing emissions of the machine by boaviztapi, used as
  a library (offline), amortised over the hardware's lifetime.
* :mod:`harness.carbon.boundary`: the report-time columns (embodied_g, co2e_total_g) and the
  boundary ladder.
"""

from harness.carbon.grid import (
    IntensitySeries,
    country_intensity,
    intensity,
    read_series,
    region_intensity,
    settings,
    window_intensity,
)

__all__ = [
    "IntensitySeries",
    "country_intensity",
    "intensity",
    "read_series",
    "region_intensity",
    "settings",
    "window_intensity",
]
