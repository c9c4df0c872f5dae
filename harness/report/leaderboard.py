"""leaderboard.csv: one row per model × variant × hardware × headline inference shape.

The headline shape is the setup's largest batch size measured (see ``tables.headline``). The
column order is fixed and documented in docs/leaderboard.md; ``schema_version`` changes when it
does. Rows are sorted by accuracy (highest first), then energy per query (lowest first); rows
without a figure sort last. Over several runs, the latest result per key wins (manifest start
time, then run_id).
"""

from __future__ import annotations

import pandas as pd

from harness.report.tables import Tables

SCHEMA_VERSION = 1

KEY = ["model", "variant", "hardware", "batch_size", "prompt_tokens", "new_tokens"]

#: the stable column order (docs/leaderboard.md lists each with unit and meaning)
COLUMNS = [
    "schema_version",
    "run_id",
    "suite",
    "started",
    "model",
    "variant",
    "hardware",
    "device_name",
    "params",
    "model_size_mb",
    "dtype",
    "quantization",
    "energy_method",
    "energy_sources",
    "batch_size",
    "prompt_tokens",
    "new_tokens",
    "accuracy",
    "accuracy_ci_low",
    "accuracy_ci_high",
    "accuracy_tasks",
    "energy_per_query_j",
    "energy_per_query_j_ci_low",
    "energy_per_query_j_ci_high",
    "energy_per_token_j",
    "energy_per_token_j_ci_low",
    "energy_per_token_j_ci_high",
    "wh_per_1000_queries",
    "tokens_per_s",
    "ttft_s",
    "tpot_s",
    "peak_rss_mb",
    "peak_vram_mb",
    "n",
    "energy_to_train_j",
    "train_setup",
    "intensity_g_per_kwh",
    "pue",
    "co2e_g_per_1000_queries",
    "co2e_g_per_training_run",
    "break_even_queries",
]
INTEGER_COLUMNS = ["schema_version", "params", "batch_size", "prompt_tokens", "new_tokens", "n"]

_FROM_HEADLINE = {
    "headline_batch_size": "batch_size",
    "headline_prompt_tokens": "prompt_tokens",
    "headline_new_tokens": "new_tokens",
}


def leaderboard(tables: Tables) -> pd.DataFrame:
    """The leaderboard rows of one run (unsorted across runs; see :func:`combine`)."""
    rows = tables.setups.reset_index().rename(columns=_FROM_HEADLINE)
    rows["schema_version"] = SCHEMA_VERSION
    rows["run_id"] = tables.run.run_id
    rows["suite"] = tables.run.suite_name
    rows["started"] = tables.run.started
    # the training behind the setup: its own, or the run's one training of the same model
    rows["energy_to_train_j"] = rows["lifetime_train_energy_j"]
    rows["co2e_g_per_training_run"] = tables.grid.co2e_g(rows["lifetime_train_energy_j"])
    for col in COLUMNS:
        if col not in rows.columns:
            rows[col] = None
    return finish(rows[COLUMNS])


def finish(rows: pd.DataFrame) -> pd.DataFrame:
    """Whole numbers as integers, then the documented order: accuracy desc, energy asc."""
    rows = rows.copy()
    for col in INTEGER_COLUMNS:
        rows[col] = pd.to_numeric(rows[col], errors="coerce").round().astype("Int64")
    for col in COLUMNS:
        if col not in INTEGER_COLUMNS and col not in _TEXT:
            rows[col] = pd.to_numeric(rows[col], errors="coerce").astype(float)
    rows = rows.sort_values(
        ["accuracy", "energy_per_query_j", "energy_per_token_j", "model", "variant", "hardware"],
        ascending=[False, True, True, True, True, True],
        na_position="last",
        kind="stable",
    )
    return rows.reset_index(drop=True)


_TEXT = {
    "run_id",
    "suite",
    "started",
    "model",
    "variant",
    "hardware",
    "device_name",
    "dtype",
    "quantization",
    "energy_method",
    "energy_sources",
    "accuracy_tasks",
    "train_setup",
}


def combine(per_run: list[pd.DataFrame]) -> pd.DataFrame:
    """One leaderboard over runs given oldest first: the latest row per key wins."""
    frames = [f for f in per_run if len(f)]
    if not frames:
        return finish(pd.DataFrame(columns=COLUMNS))
    rows = pd.concat(frames, ignore_index=True)
    # measured after estimated, so that within one run the measured figure is kept
    rows["_measured"] = rows["energy_method"] == "measured"
    rows = rows.sort_values(["started", "run_id", "_measured"], kind="stable")
    rows = rows.drop_duplicates(KEY, keep="last").drop(columns="_measured")
    return finish(rows)
