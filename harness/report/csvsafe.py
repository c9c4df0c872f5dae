"""CSV files of the report, written through the one formula-safe encoder (``harness/csvsafe.py``).

The encoder lives below ``store`` (which writes measurements.csv with it); this module adds the
atomic write for the report's own CSVs.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.csvsafe import (  # noqa: F401  (the report's names for them)
    FORMULA_STARTS,
    neutralise,
    neutralise_cell,
    restore_cell,
    to_csv_text,
)


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write neutralised, atomically (``store.write_bytes``)."""
    from harness import store

    store.write_text(Path(path), to_csv_text(frame))
    return Path(path)
