"""``harness export github-benchmark RUN_DIR -o FILE``: github-action-benchmark's custom JSON.

The action's ``customSmallerIsBetter`` tool reads a JSON array of ``{name, value, unit, range?,
extra?}`` (its ``BenchmarkResult``: ``value`` a number, the others text) and charts each name over
commits, alerting when a value grows past its threshold. One entry per ok case and figure:
energy per query (``J/query``) and per token (``J/token``), seconds per query (``s/query``) for
inference, and the energy of a training case (``J``). The value is the median over the case's
repetitions; ``range`` is the half-width of the 95% interval of the mean (the report's own,
``harness.report.stats.describe``); ``extra`` says how the energy was obtained, the interval, n and
the case. The energy method is part of the name, so that measured and estimated figures never
share a chart.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from harness.workloads import makes_model

#: (figure, unit, how a repetition's value is computed from its row)
FIGURES = (
    ("energy per query", "J/query", lambda r: r.get("energy_per_query_j")),
    ("energy per token", "J/token", lambda r: r.get("energy_per_token_j")),
    ("time per query", "s/query", lambda r: _ratio(r.get("duration_s"), r.get("queries"))),
)


def _ratio(a, b):
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return None
    return a / b if b > 0 and math.isfinite(a) else None


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _shape(row: dict) -> str:
    parts = []
    for col, prefix in (
        ("batch_size", "b"),
        ("concurrency", "c"),
        ("prompt_tokens", "p"),
        ("new_tokens", "n"),
    ):
        v = row.get(col)
        if _finite(v):
            parts.append(f"{prefix}{int(v)}")
    return "-".join(parts)


def entries(frame: pd.DataFrame) -> list[dict]:
    """The benchmark entries of a run's repetitions (``open_run(...).frame``)."""
    from harness.report.stats import describe

    ok = frame[frame["status"] == "ok"]
    out: list[dict] = []
    for _, g in ok.groupby("case_id", sort=False):
        rows = g.to_dict("records")
        first = rows[0]
        method = first.get("energy_method") or "unknown"
        label = first.get("case") or first.get("case_id")
        workload = first.get("workload")
        if makes_model(workload):
            energy = [r["energy_j"] for r in rows if _finite(r.get("energy_j"))]
            if energy:
                out.append(
                    {
                        "name": f"{label} energy to train [{method}]",
                        "unit": "J",
                        "value": float(sum(energy)),
                        "extra": f"{method}; {len(energy)} blocks of steps; case {first['case_id']}",
                    }
                )
            continue
        for figure, unit, value_of in FIGURES:
            values = [v for v in (value_of(r) for r in rows) if _finite(v)]
            if not values:
                continue
            stats = describe(values)
            entry = {
                "name": f"{label} {figure} [{method}]",
                "unit": unit,
                "value": stats["median"],
            }
            extra = f"{method}; median of {stats['n']}"
            if stats["n"] > 1 and _finite(stats["ci_low"]):
                entry["range"] = f"± {(stats['ci_high'] - stats['ci_low']) / 2:.4g}"
                extra += f"; 95% CI {stats['ci_low']:.4g} to {stats['ci_high']:.4g}"
            shape = _shape(first)
            entry["extra"] = (
                extra + (f"; shape {shape}" if shape else "") + f"; case {first['case_id']}"
            )
            out.append(entry)
    return out


def export(run_dir: str | Path, output: str | Path) -> list[dict]:
    """Write the run's entries to ``output`` (atomically); returns them."""
    from harness import store
    from harness.errors import HarnessError
    from harness.report.load import open_run

    run = open_run(run_dir)
    found = entries(run.frame)
    if not found:
        raise HarnessError(f"{run_dir}: no ok case with an energy figure to export")
    out = Path(output)
    if out.is_dir():
        raise HarnessError(f"{out}: is a folder; give a file name")
    store.write_bytes(out, (json.dumps(found, indent=2) + "\n").encode())
    return found
