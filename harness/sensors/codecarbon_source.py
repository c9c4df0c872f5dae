"""codecarbon's own tracker, run beside the other sensors as a cross-check.

Its energy is reported under ``Measurement.crosscheck_j["codecarbon"]`` and never added to a
total (``method = "crosscheck"``): codecarbon reads the same hardware, or estimates it, in its own
way, and agreement between the two is evidence, not a second measurement to sum.

The tracker runs offline (``OfflineEmissionsTracker``), writes no file (``output_methods=[]``),
sends nothing (no API output, no HTTP endpoint: ``emissions_endpoint=False`` so a config file
cannot add one) and logs errors only.

Reading codecarbon's cumulative energy at an arbitrary instant needs its private API (checked
against codecarbon 3.3): ``tracker._measure_power_and_energy()`` brings ``tracker._total_energy``
(an ``Energy`` in kWh) up to now. Its periodic energy scheduler would call the same method from
another thread without a lock, so it is stopped after ``start()``: energy is then accumulated
only at window edges, while codecarbon's 1-s power monitor keeps sampling CPU load in between.
``probe`` reports the source unavailable when that API is missing, rather than guessing.
"""

from __future__ import annotations

import logging
import re
import tempfile
from typing import Any

from harness.errors import HarnessError, SensorError
from harness.sensors.base import CODECARBON, OK, UNAVAILABLE, DomainStatus, Source
from harness.units import J_PER_KWH

_PRIVATE_API = ("_measure_power_and_energy",)


class CodecarbonSource(Source):
    """Cumulative joules from codecarbon's ``OfflineEmissionsTracker`` (cross-check only)."""

    name = "codecarbon"
    method = "crosscheck"

    def __init__(self, country: str = "FRA", measure_power_secs: float = 1.0):
        if not re.fullmatch(r"[A-Z]{3}", country or ""):
            raise HarnessError(
                f"codecarbon: country must be a 3-letter ISO code like FRA, not {country!r}"
            )
        if not measure_power_secs > 0:
            raise HarnessError(
                f"codecarbon: measure_power_secs must be positive, not {measure_power_secs}"
            )
        self.country = country
        self.measure_power_secs = float(measure_power_secs)
        self.update_period_s = self.measure_power_secs
        self._tracker: Any = None
        self._rows: list[DomainStatus] | None = None

    def probe(self) -> list[DomainStatus]:
        if self._rows is None:
            status, reason = self._check()
            self._rows = [DomainStatus(self.name, "codecarbon", CODECARBON, status, reason)]
        return list(self._rows)

    def _check(self) -> tuple[str, str]:
        try:
            import codecarbon
            from codecarbon import OfflineEmissionsTracker
        except Exception as e:
            return UNAVAILABLE, f"codecarbon not importable (pip install codecarbon): {e}"
        version = getattr(codecarbon, "__version__", "?")
        missing = [a for a in _PRIVATE_API if not hasattr(OfflineEmissionsTracker, a)]
        if missing:
            return UNAVAILABLE, (
                f"codecarbon {version} lacks {', '.join(missing)}, which this source reads "
                "energy through; use codecarbon 3.x"
            )
        return OK, (
            f"codecarbon {version} OfflineEmissionsTracker ({self.country}), a cross-check "
            "never added to totals"
        )

    def open(self) -> None:
        if self._tracker is not None:
            return
        from codecarbon import OfflineEmissionsTracker

        # quiet before construction too: the constructor logs warnings before it sets log_level
        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        tracker = OfflineEmissionsTracker(
            country_iso_code=self.country,
            measure_power_secs=self.measure_power_secs,
            output_methods=[],  # no emissions.csv, no API, no logger output
            emissions_endpoint=False,
            api_call_interval=-1,
            output_dir=tempfile.gettempdir(),  # never the cwd, should anything be written
            allow_multiple_runs=True,  # no lock file; several meters may run at once
            tracking_mode="machine",
            log_level="error",
            pue=1.0,
        )
        tracker.start()  # codecarbon swallows its own exceptions: check that it started
        if getattr(tracker, "_start_time", None) is None or not hasattr(tracker, "_total_energy"):
            tracker.stop()  # also wrapped in codecarbon's suppress(Exception)
            raise SensorError(
                "codecarbon's tracker did not start (run with codecarbon's log level at "
                "'info' to see why), or its private API changed"
            )
        scheduler = getattr(tracker, "_scheduler", None)
        if scheduler is not None:
            scheduler.stop()  # we drive _measure_power_and_energy ourselves (see module doc)
        self._tracker = tracker

    def read_energy_j(self) -> dict[str, float]:
        if self._tracker is None:
            return {}
        try:
            self._tracker._measure_power_and_energy()
            kwh = float(self._tracker._total_energy.kWh)
        except Exception as e:
            raise SensorError(f"codecarbon: cannot read its energy: {e}") from e
        return {"codecarbon": kwh * J_PER_KWH}

    def close(self) -> None:
        tracker, self._tracker = self._tracker, None
        if tracker is not None:
            try:
                tracker.stop()
            except Exception:
                pass  # a tracker that fails to stop has nothing left to tell us
