"""The report's CSV files: written atomically through ``store``, encoded by ``harness.csvsafe``
(the one formula-safe encoder, which lives below ``store`` since measurements.csv uses it too)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.csvsafe import to_csv_text


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write neutralised, atomically (``store.write_bytes``)."""
    from harness import store

    store.write_text(Path(path), to_csv_text(frame))
    return Path(path)
