"""report.md: what was run, where, how energy was obtained; then the tables and the figures.

The markdown tables are compact views (headline figures with their intervals); the CSV files
beside report.md hold every column. Long tables stop after ``MAX_ROWS`` rows and say so.
"""

from __future__ import annotations

import math
import re

import pandas as pd

from harness.report.shapes import Shapes
from harness.report.tables import SETUP, Tables

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
        "mean (accuracy: Wilson's score interval over the task's samples). Headline inference "
        "shape: the "
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


# --- carbon beyond the plug (issue 15) -------------------------------------------------------


def boundary_ladder(tables: Tables) -> pd.DataFrame:
    """The ladder per setup (harness.carbon.boundary.ladder): inference at each setup's headline
    shape, and its training run."""
    from harness import store
    from harness.carbon.boundary import ladder
    from harness.report.tables import from_scratch, headline
    from harness.workloads import trait

    cases = tables.cases
    ids: dict[tuple, tuple] = {}
    order: list[tuple] = []
    if not cases.empty:
        kind_of = dict(zip(cases["case_id"], cases["workload"], strict=True))
        for (m, v, h, _), r in headline(cases).iterrows():
            kind = kind_of[r["case_id"]]
            ids[(m, v, h, kind)] = (kind, r["case_id"])
        train = cases[cases["workload"].isin(from_scratch()) & cases["model"].notna()]
        for r in _records(train):
            ids[(r["model"], r["variant"], r["hardware"], r["workload"])] = (
                r["workload"],
                r["case_id"],
            )
    # a setup's use (per 1,000 queries) before its making (per training run)
    order = sorted(ids, key=lambda k: (bool(trait(k[3], "makes_model", False)), k[:3]))
    try:
        idle = store.read_json(tables.run.path / store.IDLE)
    except (OSError, ValueError):
        idle = None
    by_setup = {k: ids[k] for k in order}
    return ladder(tables.run.frame, idle, by_setup)


def boundary_section(tables: Tables) -> str:
    """Carbon beyond the plug: the boundary ladder per setup, and the embodied share."""
    from harness.carbon.boundary import RUNG_TEXT, RUNGS

    acc = tables.accounting
    parts = ["## Carbon beyond the plug\n"]
    if acc is not None and acc.embodied is not None:
        e = acc.embodied
        kg, low, high = acc.charged_kg
        whole = "host" if acc.share is not None else "machine"
        text = f"Embodied emissions of the {whole}: {fmt(e.kg)} kgCO2e ({fmt(e.kg_min)} to "
        text += f"{fmt(e.kg_max)}, {escape(e.source)})"
        if acc.share is not None:
            text += (
                f"; this machine's share: {fmt(100 * acc.share.cpu, 3)} % of its parts, "
                f"{fmt(100 * acc.share.ram, 3)} % of its RAM, GPUs whole "
                f"({escape(acc.share.origin)}): {fmt(kg)} kgCO2e ({fmt(low)} to {fmt(high)})"
            )
        text += (
            f", amortised over {fmt(acc.lifetime_years)} years: {fmt(acc.g_per_s * 3600)} "
            "gCO2e per hour of use (suite `carbon.hardware_lifetime_years`).\n"
        )
        parts.append(text)
        if acc.warning:
            parts.append(f"**Warning:** {escape(acc.warning)}.\n")
        part_rows = [
            {"part": name, "kg": fmt(kg), "origin": e.origins.get(name, "")}
            for name, kg in e.parts.items()
        ]
        kg_head = "kgCO2e (whole host)" if acc.share is not None else "kgCO2e"
        parts.append(table(part_rows, [("part", "part"), ("kg", kg_head), ("origin", "known as")]))
    elif acc is not None:
        parts.append(f"No embodied emissions: {escape(acc.missing)}\n")
    lad = boundary_ladder(tables) if tables.grid.known else pd.DataFrame()
    if lad.empty:
        parts.append("No boundary ladder: the run has no inference or training figures.\n")
        return "\n".join(parts)
    parts.append(
        "Each step widens the boundary: GPU only (the accelerators' energy less their idle "
        "draw), + CPU and DRAM (the machine's active energy), + idle share (the machine's idle "
        "draw over the same time), × PUE, + embodied (the hardware's manufacturing, amortised). "
        "Wh, then gCO2e; inference per 1,000 queries at the headline shape, training per run.\n"
    )
    rows = []
    for r in _records(lad):
        row = {
            "setup": f"{r['model']}/{r['variant']}/{r['hardware']}",
            "per": r["per"],
            "method": r["energy_method"],
        }
        for rung in RUNGS:
            row[rung] = f"{fmt(r.get(f'{rung}_wh'), 3)} / {fmt(r.get(f'{rung}_g'), 3)}"
        total_g = r.get("embodied_g")
        amortised_g = total_g - r.get("pue_g") if total_g is not None else None
        ok = total_g is not None and not math.isnan(total_g) and total_g > 0
        row["share"] = fmt(100 * amortised_g / total_g, 3) if ok else "-"
        rows.append(row)
    cols = [("setup", "model/variant/hardware"), ("per", "per"), ("method", "energy")]
    cols += [(rung, f"{RUNG_TEXT[rung]} (Wh / g)") for rung in RUNGS]
    cols.append(("share", "embodied share (%)"))
    parts.append(table(rows, cols, len(lad)))
    return "\n".join(parts)


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
            "at": Shapes.of(tables).headline(tuple(r[c] for c in SETUP)) or "",
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
        ("at", "queries at"),
        ("life", f"kWh for training + {n:,} queries"),
        ("co2", "gCO2e lifetime"),
        ("share", "inference share (%)"),
        ("be", "break-even queries"),
    ]
    intro = (
        f"Training energy plus {n:,} queries at each setup's headline shape (*queries at*; suite "
        "`report.queries_lifetime`). "
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


STOP_REASONS = {
    "converged": "the energy's 95% interval came within target_rel_ci of its median",
    "max_repeats": "max_repeats reached before the interval was narrow enough: noisy figures",
    "time_budget": "stopped early to stay inside case_timeout_s",
    "planned": "the workload fixes its own count (training chunks, one accuracy pass)",
}


def repetitions_section(tables: Tables) -> str:
    """How many repetitions each case got and why it stopped (the stopping rule's verdict)."""
    c = tables.cases
    if c.empty or "stop_reason" not in c.columns:
        return ""
    reasons = c["stop_reason"].fillna("unknown")
    counts = reasons.value_counts()
    lines = ["## Repetitions and stopping\n"]
    for reason, count in counts.items():
        why = STOP_REASONS.get(reason, "")
        lines.append(f"- **{escape(reason)}**: {count} cases" + (f" ({why})" if why else ""))
    rows = [
        {
            "case": r["case"] or r["case_id"],
            "method": r["energy_method"],
            "n": fmt(r["n"]),
            "stop": r["stop_reason"] or "unknown",
            "cv": fmt(r.get("energy_j_cv"), 2),
        }
        for r in _records(c.sort_values("case", kind="stable"))
    ]
    cols = [
        ("case", "case"),
        ("method", "energy"),
        ("n", "repetitions"),
        ("stop", "stop reason"),
        ("cv", "energy CV"),
    ]
    return "\n".join(lines) + "\n\n" + table(rows, cols, len(c))


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


_NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")


def group_warnings(windows: list[list[str]]) -> list[str]:
    """One line per kind of warning over a case's windows: texts that differ only in their numbers
    are one kind, each number shown as its range over the windows that carried it, with how many
    of the windows did ("47–58% of tokens ... (3 of 3 windows)"), not one near-copy a window."""
    kinds: dict[str, list[list[str]]] = {}  # text with its numbers blanked -> each one's numbers
    pieces: dict[str, list[str]] = {}
    for texts in windows:
        for text in dict.fromkeys(texts):
            key = _NUMBER.sub("#", text)
            kinds.setdefault(key, []).append(_NUMBER.findall(text))
            pieces.setdefault(key, _NUMBER.split(text))
    lines = []
    for key, found in kinds.items():
        parts = pieces[key]
        out = [parts[0]]
        for i, rest in enumerate(parts[1:]):
            values = sorted({f[i] for f in found}, key=lambda v: float(v.replace(",", "")))
            out.append(values[0] if len(values) == 1 else f"{values[0]}–{values[-1]}")
            out.append(rest)
        line = "".join(out)
        if len(windows) > 1:
            line += f" ({len(found)} of {len(windows)} windows)"
        lines.append(line)
    return lines


def warnings_section(tables: Tables) -> str:
    """Per case, every kind of warning its windows carried: no figure is silently clean."""
    frame = tables.run.frame
    if frame.empty or "warnings" not in frame.columns:
        return ""
    per_case: dict[str, list[list[str]]] = {}
    for r in _records(frame):
        per_case.setdefault(str(r.get("case") or r.get("case_id")), []).append(
            split_warnings(r.get("warnings"))
        )
    per_case = {case: w for case, w in per_case.items() if any(w)}
    if not per_case:
        return ""
    parts = ["## Warnings\n", "What the sensors' checks noticed in each case's windows.\n"]
    for case, windows in sorted(per_case.items()):
        parts.append(f"- **{escape(case)}**")
        parts += [f"  - {escape(t)}" for t in group_warnings(windows)]
    return "\n".join(parts) + "\n"


def checks_lines(verdicts: list) -> tuple[list[str], str]:
    """report.md's opening line (the counts) with each failed case's failing rules under it,
    and a Checks section listing every case that warned or failed, rule by rule."""
    from harness.report.check import FAIL, PASS, summary_line

    head = ["", f"**{summary_line(verdicts)}**"]
    for v in verdicts:
        if v.check == FAIL:
            rules = ", ".join(
                f"{f.rule} ({escape(f.detail)})" for f, _ in v.findings if f.level == FAIL
            )
            head.append(f"- fail: {escape(v.case)}: {rules}")
    bad = [v for v in verdicts if v.check != PASS]
    if not bad:
        return head, ""
    lines = [
        "## Checks",
        "",
        "Each case that warned or failed `harness check`, and why (the rules "
        "and their sources: docs/methodology.md).",
        "",
        "| case | check | rule | level | figures | rows |",
        "|---|---|---|---|---|---|",
    ]
    for v in bad:
        for f, n in v.findings:
            if f.level != PASS:
                lines.append(
                    f"| {escape(v.case)} | {v.check} | {f.rule} | {f.level} | {escape(f.detail)} "
                    f"| {n} of {v.rows} |"
                )
    return head, "\n".join(lines) + "\n"
