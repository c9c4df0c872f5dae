"""Run folders for the web leaderboard's tests: nightly runs of one suite, serving rows, warnings.

The runs are tests/fakeruns.py's synthetic runs; serving rows and warnings (columns that the
serve workload and the sensors' window warnings add to measurements) are appended to a run's
measurements.parquet as the runner would write them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from fakeruns import standard_cases, write_run

#: energy scale of each nightly run: the third costs 50% more (a regression harness compare flags)
NIGHTLY_SCALES = (1.0, 1.0, 1.5)


def nightly_runs(root: Path, scales: tuple[float, ...] = NIGHTLY_SCALES) -> list[Path]:
    """One run of suite ``nightly`` per day, oldest first, with :func:`standard_cases`."""
    return [
        write_run(
            root, standard_cases(scale=s), suite="nightly", started=f"2025-01-{i + 1:02d}T02:00:00Z"
        )
        for i, s in enumerate(scales)
    ]


def _append(run: Path, rows: pd.DataFrame) -> None:
    path = run / "measurements.parquet"
    frame = pd.read_parquet(path)
    frame = pd.concat([frame, rows], ignore_index=True)
    frame.to_parquet(path, index=False)


def add_serving(run: Path, model: str, variant: str, energy_by_concurrency: dict[int, list[float]]):
    """``serve`` repetitions of a setup: energy per request at each concurrency, one row each."""
    frame = pd.read_parquet(run / "measurements.parquet")
    ident = frame[(frame["model"] == model) & (frame["variant"] == variant)].iloc[0]
    rows = []
    for concurrency, energies in energy_by_concurrency.items():
        for i, e in enumerate(energies):
            rows.append(
                {
                    **{c: ident[c] for c in ("run_id", "suite", "model", "variant", "hardware")},
                    "energy_method": ident["energy_method"],
                    "case": f"{model}/{variant}/{ident['hardware']}/serve-c{concurrency}",
                    "case_id": f"serve{concurrency}",
                    "workload": "serve",
                    "status": "ok",
                    "repetition": i,
                    "concurrency": concurrency,
                    "requests": 64,
                    "energy_j": e * 64,
                    "energy_per_request_j": e,
                }
            )
    _append(run, pd.DataFrame(rows))


def add_warning(run: Path, model: str, variant: str, text: str) -> None:
    """Put ``text`` in the ``warnings`` column of every repetition of a setup."""
    path = run / "measurements.parquet"
    frame = pd.read_parquet(path)
    if "warnings" not in frame.columns:
        frame["warnings"] = None
    mask = (frame["model"] == model) & (frame["variant"] == variant)
    frame["warnings"] = frame["warnings"].astype(object)
    frame.loc[mask, "warnings"] = text
    frame.to_parquet(path, index=False)
