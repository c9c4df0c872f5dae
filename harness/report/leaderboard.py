"""leaderboard.csv: one row per model × variant × hardware × headline inference shape.

The headline shape is the setup's largest batch size measured (see ``tables.headline``). The
column order is fixed and documented in docs/leaderboard.md; ``schema_version`` changes when it
does. Rows are sorted by accuracy (highest first), then energy per query (lowest first); rows
without a figure sort last. Over several runs, the latest result per key wins (manifest start
time, then run_id). The key names the machine (``device`` and ``host``), so rows measured on two
machines never overwrite each other; a newer row without an accuracy keeps the accuracy of the
latest older row of its key (``accuracy_run_id`` says which run it comes from).

Leaderboards can be merged from their CSV files too (``harness leaderboard board.csv RUN_DIR``);
one of another ``schema_version`` is refused: its columns mean something else.
"""

from __future__ import annotations

import math

import pandas as pd

from harness.report.tables import Tables

SCHEMA_VERSION = 2

KEY = [
    "model",
    "variant",
    "hardware",
    "device",
    "host",
    "batch_size",
    "prompt_tokens",
    "new_tokens",
]
#: carried from an older row of the key when the newest has no accuracy
ACCURACY_COLUMNS = [
    "accuracy",
    "accuracy_ci_low",
    "accuracy_ci_high",
    "accuracy_tasks",
    "accuracy_run_id",
]

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
    # schema_version 2
    "device",
    "host",
    "accuracy_run_id",
    # harness check's verdict of the row (pass|warn|fail) and the rules that warned or failed
    "check",
    "check_rules",
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
    hostname = (tables.run.manifest.get("host") or {}).get("hostname")
    rows["host"] = (
        rows["node"].where(rows["node"].notna(), hostname) if "node" in rows else hostname
    )
    rows["accuracy_run_id"] = rows["run_id"].where(rows["accuracy"].notna(), None)
    rows["co2e_g_per_training_run"] = tables.grid.co2e_g(rows["lifetime_train_energy_j"])
    for col in COLUMNS:
        if col not in rows.columns:
            rows[col] = None
    return finish(rows[COLUMNS])


def finish(rows: pd.DataFrame) -> pd.DataFrame:
    """Whole numbers as integers, then the documented order: accuracy desc, energy asc."""
    rows = rows.copy()
    for col in INTEGER_COLUMNS:
        rows[col] = _to_float(rows[col]).round().astype("Int64")
    for col in COLUMNS:
        if col not in INTEGER_COLUMNS and col not in _TEXT:
            rows[col] = _to_float(rows[col])
    rows = rows.sort_values(
        ["accuracy", "energy_per_query_j", "energy_per_token_j", "model", "variant", "hardware"],
        ascending=[False, True, True, True, True, True],
        na_position="last",
        kind="stable",
    )
    return rows.reset_index(drop=True)


def _to_float(column: pd.Series) -> pd.Series:
    """Floats of a column, NaN where a cell is empty or not a number.

    Text cells (a board read back from its CSV) go through Python's ``float``, which reads back
    exactly the shortest repr the CSV was written with; pandas 2's ``to_numeric`` parses text with
    a faster parser that can be off in the last digit, so a merged board would differ from one
    built from the runs.
    """
    if pd.api.types.is_numeric_dtype(column):
        return pd.to_numeric(column, errors="coerce").astype(float)

    def one(value) -> float:
        if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
            return math.nan
        try:
            return float(value)
        except (TypeError, ValueError):
            return math.nan

    return pd.Series([one(v) for v in column], index=column.index, dtype=float)


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
    "device",
    "host",
    "accuracy_run_id",
    "check",
    "check_rules",
}


def combine(per_run: list[pd.DataFrame]) -> pd.DataFrame:
    """One leaderboard over runs given oldest first: the latest row per key wins."""
    frames = [f for f in per_run if len(f)]
    if not frames:
        return finish(pd.DataFrame(columns=COLUMNS))
    rows = pd.concat(frames, ignore_index=True)
    # measured after estimated, so that within one run the measured figure is kept
    rows["_measured"] = rows["energy_method"] == "measured"
    rows = rows.sort_values(["started", "run_id", "_measured"], kind="stable").reset_index(
        drop=True
    )
    # the newest row of a key without an accuracy keeps the latest older one's
    has = rows["accuracy"].notna()
    carried = rows[ACCURACY_COLUMNS].where(has, None).astype(object)
    carried = carried.groupby([rows[k].astype(str) for k in KEY], sort=False).ffill()
    for col in ACCURACY_COLUMNS:
        rows[col] = rows[col].where(has, carried[col])
    rows = rows.drop_duplicates(KEY, keep="last").drop(columns="_measured")
    return finish(rows)


def read_board(path) -> pd.DataFrame:
    """A leaderboard CSV written by this harness, or HarnessError naming what is wrong with it."""
    from pathlib import Path

    from harness.csvsafe import restore_cell
    from harness.errors import HarnessError

    path = Path(path)
    try:
        board = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise HarnessError(f"{path}: not a readable leaderboard CSV ({e})") from None
    if "schema_version" not in board.columns:
        raise HarnessError(f"{path}: not a leaderboard CSV (no schema_version column)")
    versions = sorted(set(board["schema_version"].dropna()))
    if versions != [str(SCHEMA_VERSION)] and len(board):
        raise HarnessError(
            f"{path}: a leaderboard of schema_version {', '.join(versions) or '?'}; this harness "
            f"writes schema_version {SCHEMA_VERSION}, whose columns differ: rebuild it from its "
            "run folders instead of merging"
        )
    for col in ("check", "check_rules"):  # a board written before rows were checked
        if col not in board.columns:
            board[col] = None
    missing = [c for c in COLUMNS if c not in board.columns]
    if missing:
        raise HarnessError(f"{path}: not a leaderboard CSV (no column {missing[0]})")
    board = board[COLUMNS].map(restore_cell)
    return finish(board)
