"""report.md: what was run, where, how energy was obtained; then the tables and the figures.

The markdown tables are compact views (headline figures with their intervals); the CSV files
beside report.md hold every column. Long tables stop after ``MAX_ROWS`` rows and say so.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from harness.report.tables import Tables

MAX_ROWS = 40


def fmt(value, digits: int = 4) -> str:
    """A number to ``digits`` significant figures; blanks for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str):
        return value
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if abs(v) < 1e15 and (v.is_integer() or abs(v) >= 10 ** (digits - 1)):
        return f"{round(v):,}"
    return f"{v:.{digits}g}"


def fmt_ci(row, col: str) -> str:
    mid = fmt(row.get(col))
    lo, hi = fmt(row.get(f"{col}_ci_low"), 3), fmt(row.get(f"{col}_ci_high"), 3)
    if mid and lo and hi:
        return f"{mid} ({lo}–{hi})"
    return mid


def escape(text) -> str:
    """Cell text that cannot break the table or inject HTML."""
    s = "" if text is None else str(text)
    if s == "nan":
        return ""
    return (
        s.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("|", "\\|")
        .replace("\r", " ")
        .replace("\n", " ")
    )


def table(rows: list[dict], columns: list[tuple[str, str]], total: int | None = None) -> str:
    """A markdown table of ``rows`` (dicts of formatted cells) under headers ``columns``."""
    if not rows:
        return "_(none)_\n"
    head = "| " + " | ".join(h for _, h in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(escape(r.get(k, "")) for k, _ in columns) + " |" for r in rows]
    more = ""
    if total is not None and total > len(rows):
        more = f"\n_First {len(rows)} of {total} rows; the CSV file has all of them._\n"
    return "\n".join([head, rule, *body]) + "\n" + more


def _records(frame: pd.DataFrame) -> list[dict]:
    return frame.head(MAX_ROWS).to_dict("records")


def header(tables: Tables) -> str:
    run, m = tables.run, tables.run.manifest
    suite = run.suite
    host = m.get("host") or {}
    host_text = ", ".join(
        f"{k}: {fmt(v)}" for k, v in host.items() if isinstance(v, (str, int, float))
    )
    cases = tables.cases
    methods = tables.methods or ["unknown"]
    sources = sorted({s for v in cases["energy_sources"].dropna() for s in str(v).split("+") if s})
    n_cases = run.frame["case_id"].nunique()
    lines = [
        f"# Report: {escape(run.suite_name) or 'run'} ({escape(run.run_id)})",
        "",
        f"{escape(suite.get('description', ''))}".strip(),
        "",
        f"- **Run**: `{escape(run.run_id)}`, started {escape(run.started)}, "
        f"finished {escape(m.get('finished', '?'))}",
        f"- **Where**: {escape(host_text) or 'host not recorded'}",
        f"- **Cases**: {n_cases} ({len(tables.failed)} failed), {len(run.frame)} repetition rows",
        f"- **Energy**: {', '.join(methods)}; sources: {escape(', '.join(sources)) or 'none recorded'}.",
    ]
    if "estimated" in methods:
        lines.append(
            "  Estimated figures come from a model (TDP × utilisation, RAM per GB), not a sensor; "
            "they are labelled `estimated` in every table and never pooled with measured ones."
        )
    sensors = m.get("sensors")
    if isinstance(sensors, list) and sensors:
        ok = [
            f"{s.get('source')}:{s.get('domain')}"
            for s in sensors
            if isinstance(s, dict) and s.get("status", "ok") == "ok"
        ]
        if ok:
            lines.append(f"- **Sensors available**: {escape(', '.join(ok))}")
    g = tables.grid
    carbon = (
        f"{fmt(g.intensity_g_per_kwh)} gCO2e/kWh ({escape(g.source)}), PUE {fmt(g.pue)}"
        if g.known
        else "no grid intensity given: no CO2e figures"
    )
    lines += [
        f"- **Carbon**: {carbon}",
        "- **Statistics**: medians over repetitions; ranges in brackets are 95% t-intervals on the "
        "mean (accuracy with one pass: ± 1.96 standard errors). Headline inference shape: the "
        "largest batch size measured for each setup.",
        "",
    ]
    return "\n".join(lines)


def summary_section(tables: Tables) -> str:
    s = tables.setups.reset_index()
    rows = []
    for r in _records(s):
        rows.append(
            {
                "setup": f"{r['model']}/{r['variant']}/{r['hardware']}",
                "method": r["energy_method"],
                "acc": fmt_ci(r, "accuracy"),
                "b": fmt(r.get("headline_batch_size")),
                "epq": fmt_ci(r, "energy_per_query_j"),
                "ept": fmt_ci(r, "energy_per_token_j"),
                "wh": fmt(r.get("wh_per_1000_queries")),
                "tps": fmt(r.get("tokens_per_s")),
                "train": fmt_ci(r, "energy_to_train_j"),
            }
        )
    cols = [
        ("setup", "model/variant/hardware"),
        ("method", "energy"),
        ("acc", "accuracy"),
        ("b", "batch"),
        ("epq", "J/query"),
        ("ept", "J/token"),
        ("wh", "Wh/1000 queries"),
        ("tps", "tokens/s"),
        ("train", "J to train"),
    ]
    return (
        "## Summary (headline shape)\n\n"
        + table(rows, cols, len(s))
        + (
            "\nEvery batch size and task is in `summary.csv` (columns suffixed `_b<batch>`, "
            "`accuracy_<task>`).\n"
        )
    )


def leaderboard_section(board: pd.DataFrame) -> str:
    rows = [
        {
            "rank": str(i + 1),
            "setup": f"{r['model']}/{r['variant']}/{r['hardware']}",
            "method": r["energy_method"],
            "b": fmt(r["batch_size"]),
            "acc": fmt(r["accuracy"]),
            "epq": fmt(r["energy_per_query_j"]),
            "co2": fmt(r["co2e_g_per_1000_queries"]),
        }
        for i, r in enumerate(_records(board))
    ]
    cols = [
        ("rank", "#"),
        ("setup", "model/variant/hardware"),
        ("method", "energy"),
        ("b", "batch"),
        ("acc", "accuracy"),
        ("epq", "J/query"),
        ("co2", "gCO2e/1000 queries"),
    ]
    return "## Leaderboard\n\nBy accuracy, then energy per query.\n\n" + table(
        rows, cols, len(board)
    )


def carbon_section(tables: Tables) -> str:
    if not tables.grid.known:
        return "## Carbon\n\nNo grid intensity: the suite has no carbon block.\n"
    s = tables.setups.reset_index()
    rows = [
        {
            "setup": f"{r['model']}/{r['variant']}/{r['hardware']}",
            "method": r["energy_method"],
            "q": fmt_ci(r, "co2e_g_per_1000_queries"),
            "t": fmt(r.get("co2e_g_per_training_run")),
        }
        for r in _records(s)
    ]
    cols = [
        ("setup", "model/variant/hardware"),
        ("method", "energy"),
        ("q", "gCO2e per 1,000 queries"),
        ("t", "gCO2e per training run"),
    ]
    g = tables.grid
    intro = (
        f"CO2e = energy × PUE ({fmt(g.pue)}) × grid intensity ({fmt(g.intensity_g_per_kwh)} "
        f"gCO2e/kWh, {escape(g.source)}).\n\n"
    )
    return "## Carbon\n\n" + intro + table(rows, cols, len(s))


def lifetime_section(tables: Tables) -> str:
    s = tables.setups.reset_index()
    s = s[s["energy_lifetime_j"].notna()]
    n = tables.run.queries_lifetime
    rows = [
        {
            "setup": f"{r['model']}/{r['variant']}/{r['hardware']}",
            "method": r["lifetime_energy_method"],
            "train": fmt(r["lifetime_train_energy_j"]),
            "from": r["train_setup"],
            "life": fmt(r["energy_lifetime_kwh"]),
            "co2": fmt(r["co2e_lifetime_g"]),
            "share": fmt(100 * r["inference_share_lifetime"], 3),
            "be": fmt(r["break_even_queries"]),
        }
        for r in _records(s)
    ]
    cols = [
        ("setup", "model/variant/hardware"),
        ("method", "energy"),
        ("train", "J to train"),
        ("from", "trained as"),
        ("life", f"kWh for training + {n:,} queries"),
        ("co2", "gCO2e lifetime"),
        ("share", "inference share (%)"),
        ("be", "break-even queries"),
    ]
    intro = (
        f"Training energy plus {n:,} queries at the headline shape (suite `report.queries_lifetime`). "
        "Break-even: the number of queries whose inference energy equals the training energy "
        "(energy to train ÷ energy per query).\n\n"
    )
    return "## Lifetime\n\n" + intro + table(rows, cols, len(s))


def commands_section(tables: Tables) -> str:
    c = tables.commands
    if c.empty:
        return ""
    rows = [
        {
            "case": r["case"],
            "hw": r["hardware"],
            "method": r["energy_method"],
            "d": fmt_ci(r, "duration_s"),
            "e": fmt_ci(r, "energy_j"),
            "n": fmt(r["n"]),
        }
        for r in _records(c)
    ]
    cols = [
        ("case", "command"),
        ("hw", "hardware"),
        ("method", "energy"),
        ("d", "time (s)"),
        ("e", "energy (J)"),
        ("n", "n"),
    ]
    return "## Commands\n\n" + table(rows, cols, len(c))


def failed_section(tables: Tables) -> str:
    f = tables.failed
    if f.empty:
        return ""
    rows = [{"case": r["case"] or r["case_id"], "error": r["error"]} for r in _records(f)]
    return "## Failed cases\n\n" + table(rows, [("case", "case"), ("error", "error")], len(f))


def split_warnings(joined) -> list[str]:
    """The warnings of one measurements row: joined by ";" (a text's own "; " has a space)."""
    if not isinstance(joined, str) or not joined.strip():
        return []
    return [w.strip() for w in re.split(r";(?! )", joined) if w.strip()]


def warnings_section(tables: Tables) -> str:
    """Per case, every distinct warning its windows carried: no figure is silently clean."""
    frame = tables.run.frame
    if frame.empty or "warnings" not in frame.columns:
        return ""
    per_case: dict[str, list[str]] = {}
    for r in _records(frame):
        texts = split_warnings(r.get("warnings"))
        if texts:
            found = per_case.setdefault(str(r.get("case") or r.get("case_id")), [])
            found += [t for t in texts if t not in found]
    if not per_case:
        return ""
    parts = ["## Warnings\n", "What the sensors' checks noticed in each case's windows.\n"]
    for case, texts in sorted(per_case.items()):
        parts.append(f"- **{escape(case)}**")
        parts += [f"  - {escape(t)}" for t in texts]
    return "\n".join(parts) + "\n"


FIGURE_TEXT = {
    "pareto.png": "Accuracy against energy per 1,000 queries; the black line is the Pareto front.",
    "energy_per_token_vs_params.png": "Energy per token against parameter count (log-log).",
    "batch_scaling.png": "Throughput and energy per token against batch size.",
    "training_energy_vs_params.png": "Training energy against parameter count (log-log).",
    "power_traces.png": "Sampled power of the costliest traced cases.",
    "serving.png": "Served in the steady state: energy per token and per request against "
    "concurrency, per variant.",
}


def serving_section(tables: Tables) -> str:
    """Serve cases by variant and concurrency (harness.report.serving); empty without any."""
    from harness.report import serving

    return serving.section(tables.run.frame, table, fmt)


def figures_section(figures: dict[str, Path]) -> str:
    if not figures:
        return "## Figures\n\n_No figures: the run has no data to draw._\n"
    parts = ["## Figures\n"]
    for name in figures:
        parts.append(f"{FIGURE_TEXT.get(name, name)}\n\n![{name}](figures/{name})\n")
    return "\n".join(parts)


def render(tables: Tables, board: pd.DataFrame, figures: dict[str, Path]) -> str:
    sections = [
        header(tables),
        summary_section(tables),
        serving_section(tables),
        leaderboard_section(board),
        carbon_section(tables),
        lifetime_section(tables),
        commands_section(tables),
        failed_section(tables),
        warnings_section(tables),
        figures_section(figures),
    ]
    return "\n".join(s for s in sections if s)
