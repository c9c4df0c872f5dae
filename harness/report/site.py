"""The web leaderboard: ``harness site RUN_DIR... -o DIR`` writes one self-contained DIR/index.html.

The page is built from the same rows as leaderboard.csv (:func:`harness.report.leaderboard.combine`
over the runs), with a few columns joined from the same runs: the engine, the p90 latency of the
headline case, the warnings of the setup's repetitions, the star rating and the size and workload
classes it is rated in. Everything the page shows travels inline as JSON; the page's own script
and style (harness/report/site/) and plotly's JavaScript (shipped inside the plotly package) are
inlined too, so the file opens from disk with no server and makes no network request (its
Content-Security-Policy forbids any).

Star rating (as AI Energy Score rates models): within each energy method × workload class × size
class, the range of energy per query from the lowest to the highest is cut into five equal bands;
the lowest band gets 5 stars, the highest 1. A class with a single setup is not rated.

History: runs of one suite over time; each setup's energy per token, energy per query and accuracy
per run, and the changes that ``harness compare`` (:func:`harness.report.compare.compare_runs`)
flags as regressions between each run and the one before it (the runs before that as its
history, as the command line reads them).
"""

from __future__ import annotations

import html
import json
import math
import os
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from harness import store
from harness.engines import DEFAULT_ENGINE
from harness.errors import HarnessError
from harness.report.analysis import Analysis
from harness.report.check import FAIL
from harness.report.compare import HISTORY_RUNS, compare_runs
from harness.report.leaderboard import combine
from harness.report.leaderboard import leaderboard as leaderboard_of
from harness.report.load import Run, open_runs
from harness.report.serving import closed_loop
from harness.report.shapes import LATENCY, Shapes
from harness.report.tables import Tables
from harness.workloads import kinds

#: size classes by parameter count: (upper bound exclusive, name)
SIZE_CLASSES = [
    (1e7, "< 10M"),
    (1e8, "10M–100M"),
    (1e9, "100M–1B"),
    (1e10, "1B–10B"),
    (1e11, "10B–100B"),
    (math.inf, "≥ 100B"),
]
STAR_RULE = (
    "Stars compare setups measured the same way (energy method), on the same workload class "
    "(prompt and new tokens of the headline inference shape) and in the same size class "
    "(parameters: " + ", ".join(name for _, name in SIZE_CLASSES) + "). Within a class the range "
    "of energy per query, from the lowest to the highest, is cut into five equal bands: the "
    "lowest band gets ★★★★★, the highest ★. A class with a single setup is not rated."
)
HISTORY_METRICS = ["energy_per_token_j", "energy_per_query_j", "accuracy"]
DEFAULT_THRESHOLD = 0.05

ASSETS = "site"


# --- rows -------------------------------------------------------------------------------------


def size_class(params: float | None) -> str | None:
    """The size class of a parameter count (None where the count is unknown)."""
    if params is None or pd.isna(params):
        return None
    for bound, name in SIZE_CLASSES:
        if params < bound:
            return name
    return SIZE_CLASSES[-1][1]


def workload_class(prompt_tokens, new_tokens) -> str | None:
    if pd.isna(prompt_tokens) or pd.isna(new_tokens):
        return None
    return f"infer p{int(prompt_tokens)} n{int(new_tokens)}"


def star_ratings(rows: pd.DataFrame) -> pd.Series:
    """1–5 stars per row by :data:`STAR_RULE` (nullable integers; NA where not rated)."""
    stars = pd.Series(pd.NA, index=rows.index, dtype="Int64")
    energy = pd.to_numeric(rows["energy_per_query_j"], errors="coerce")
    keys = ["energy_method", "workload_class", "size_class"]
    rated = rows[keys].notna().all(axis=1) & energy.notna()
    for _, idx in rows[rated].groupby(keys, sort=False).groups.items():
        e = energy.loc[idx]
        if len(e) < 2:
            continue
        lo, hi = float(e.min()), float(e.max())
        if hi == lo:
            stars.loc[idx] = 5
            continue
        band = np.minimum(np.floor((e.to_numpy() - lo) / ((hi - lo) / 5)), 4)
        stars.loc[idx] = (5 - band).astype(int)
    return stars


def _engines(run: Run) -> dict[str, str]:
    """variant name -> engine, from the records where they carry one, else the suite."""
    out = {}
    for v in run.suite.get("variants") or []:
        if isinstance(v, dict) and v.get("name"):
            out[str(v["name"])] = str(v.get("engine") or DEFAULT_ENGINE)
    frame = run.frame
    if "engine" in frame.columns:
        known = frame[frame["engine"].notna() & frame["variant"].notna()]
        for variant, engine in known.groupby("variant")["engine"].first().items():
            out[str(variant)] = str(engine)
    return out


def _warning_texts(value) -> list[str]:
    """The warnings of one record: a list, a JSON list, or one text (kept whole: a warning's own
    text may hold '; ', as in "cpu:0: counter reset inside the window; energy after it only")."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v) for v in value if str(v)]
    text = str(value).strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            return [str(v) for v in json.loads(text) if str(v)]
        except ValueError:
            pass
    return [text]


def _setup_warnings(run: Run) -> dict[tuple, list[str]]:
    """(model, variant, hardware, energy_method) -> the distinct warnings of its repetitions."""
    frame = run.frame
    if "warnings" not in frame.columns:
        return {}
    out: dict[tuple, list[str]] = {}
    keys = ["model", "variant", "hardware", "energy_method"]
    for row in frame[[*keys, "warnings"]].itertuples(index=False):
        texts = _warning_texts(row.warnings)
        if texts:
            seen = out.setdefault(tuple(row[:4]), [])
            seen.extend(t for t in texts if t not in seen)
    return out


def _extras(tables: Tables) -> pd.DataFrame:
    """Per setup of one run: engine, headline p90 latency, warnings (joined on run and setup)."""
    run = tables.run
    setups = tables.setups.reset_index()
    engines = _engines(run)
    cases = tables.cases.set_index(["case_id", "energy_method"])
    p90 = []
    for case_id, method in zip(setups.get("case_id", []), setups["energy_method"], strict=False):
        key = (case_id, method)
        p90.append(float(cases.at[key, "latency_p90_s"]) if key in cases.index else math.nan)
    warnings = _setup_warnings(run)
    shapes = Shapes.of(tables)
    keys = setups[["model", "variant", "hardware", "energy_method"]].itertuples(index=False)
    return pd.DataFrame(
        {
            "run_id": run.run_id,
            "model": setups["model"],
            "variant": setups["variant"],
            "hardware": setups["hardware"],
            "energy_method": setups["energy_method"],
            "engine": [engines.get(str(v), DEFAULT_ENGINE) for v in setups["variant"]],
            "latency_p90_s": p90 if len(p90) == len(setups) else math.nan,
            "shapes": [shape_figures(shapes, tuple(k)) for k in keys],
            "warnings": [
                warnings.get((m, v, h, e), [])
                for m, v, h, e in setups[
                    ["model", "variant", "hardware", "energy_method"]
                ].itertuples(index=False)
            ],
        }
    )


#: what the compare view takes at a shape both setups measured (harness/report/shapes.py)
SHAPE_FIGURES = ["energy_per_query_j", "energy_per_token_j", "tokens_per_s", *LATENCY]


def shape_figures(shapes: Shapes, key) -> list[list]:
    """Each shape a setup measured, as ``[key, label, figures...]`` in the order the shapes rule
    prefers: the compare view sets two setups side by side at the first of A's that B also has."""
    out = []
    for shape, row in shapes.listed(key):
        figures = [row.get(c) for c in SHAPE_FIGURES]
        figures = [_short(float(v)) if pd.notna(v) else None for v in figures]
        tag = f"{shape.workload}:{shape.size}:{shape.prompt_tokens:g}:{shape.new_tokens:g}"
        out.append([tag, shape.label, *figures])
    return out


def site_rows(all_tables: list[Tables], boards: list[pd.DataFrame] | None = None) -> pd.DataFrame:
    """leaderboard.csv's rows over the runs (oldest first), plus the page's joined columns.

    ``boards``: each run's leaderboard where the caller has it (its Analysis's), in the same order.
    """
    if boards is None:
        boards = [leaderboard_of(t) for t in all_tables]
    board = combine(boards)
    on = ["run_id", "model", "variant", "hardware", "energy_method"]
    # a column the leaderboard itself carries is the leaderboard's (warnings: both, merged)
    own_warnings = board.pop("warnings") if "warnings" in board.columns else None
    extras = [e for e in (_extras(t) for t in all_tables) if len(e)]
    if extras:
        extra = pd.concat(extras, ignore_index=True)
        extra = extra[[c for c in extra.columns if c in on or c not in board.columns]]
        board = board.merge(extra, on=on, how="left")
    for col, empty in (
        ("engine", None),
        ("latency_p90_s", math.nan),
        ("warnings", None),
        ("shapes", None),
    ):
        if col not in board.columns:
            board[col] = empty
    board["engine"] = board["engine"].fillna(DEFAULT_ENGINE)
    board["shapes"] = [s if isinstance(s, list) else [] for s in board["shapes"]]
    joined = [w if isinstance(w, list) else [] for w in board["warnings"]]
    if own_warnings is not None:
        joined = [
            list(dict.fromkeys(_warning_texts(o) + w))
            for o, w in zip(own_warnings, joined, strict=True)
        ]
    board["warnings"] = joined
    board["setup"] = board["model"] + "/" + board["variant"] + "/" + board["hardware"]
    board["size_class"] = board["params"].map(size_class)
    board["workload_class"] = [
        workload_class(p, n)
        for p, n in zip(board["prompt_tokens"], board["new_tokens"], strict=True)
    ]
    board["stars"] = star_ratings(board)
    return board


# --- serving ----------------------------------------------------------------------------------

SERVING_COLUMNS = [
    "model",
    "variant",
    "hardware",
    "energy_method",
    "concurrency",
    "energy_per_request_j",
]


def serving_rows(runs: list[Run]) -> pd.DataFrame:
    """Median energy per request per setup and concurrency, where ``serve`` cases were measured."""
    parts = []
    for run in runs:
        f = run.frame
        if not {"concurrency", "energy_per_request_j"} <= set(f.columns):
            continue
        f = f[f["workload"].isin(kinds(unit="request")) & (f["status"] == "ok")]
        f = closed_loop(f)  # the curve is closed-loop; open-loop cases are in report.md
        f = f.assign(
            concurrency=pd.to_numeric(f["concurrency"], errors="coerce"),
            energy_per_request_j=pd.to_numeric(f["energy_per_request_j"], errors="coerce"),
        ).dropna(subset=["concurrency", "energy_per_request_j"])
        if len(f):
            parts.append(f.assign(_started=run.started, _run=run.run_id))
    if not parts:
        return pd.DataFrame(columns=SERVING_COLUMNS)
    f = pd.concat(parts, ignore_index=True)
    keys = ["model", "variant", "hardware", "energy_method", "concurrency"]
    # the latest run per setup and concurrency, as in the leaderboard
    latest = f.groupby(keys, dropna=False)["_run"].transform("last")
    f = f[f["_run"] == latest]
    out = f.groupby(keys, dropna=False)["energy_per_request_j"].median().reset_index()
    return out[SERVING_COLUMNS].sort_values(keys, kind="stable").reset_index(drop=True)


# --- history ----------------------------------------------------------------------------------

HISTORY_POINT_COLUMNS = ["suite", "run_id", "started", "setup", "energy_method", *HISTORY_METRICS]
REGRESSION_COLUMNS = [
    "suite",
    "run_id",
    "base_run_id",
    "setup",
    "metric",
    "base",
    "new",
    "change_rel",
    "case",
    "note",
]


def _case_setups(run: Run) -> pd.DataFrame:
    """case label -> model/variant/hardware setup label and case id."""
    f = run.frame[run.frame["model"].notna()]
    cases = f.groupby("case", sort=False)[["case_id", "model", "variant", "hardware"]].first()
    cases["setup"] = cases["model"] + "/" + cases["variant"] + "/" + cases["hardware"]
    return cases


def history(
    all_tables: list[Tables], threshold: float = DEFAULT_THRESHOLD
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Points (one per run × setup) and regressions (``harness compare`` between consecutive runs
    of each suite). Energy regressions count on the setup's headline case; accuracy on any of its
    accuracy tasks; a case that was ok and failed is a ``status`` regression.
    """
    points, regressions = [], []
    by_suite: dict[str, list[Tables]] = {}
    for t in all_tables:
        by_suite.setdefault(t.run.suite_name, []).append(t)
    for suite, runs in by_suite.items():
        runs = sorted(runs, key=lambda t: t.run.sort_key())
        for t in runs:
            s = t.setups.reset_index()
            if s.empty:
                continue
            s["setup"] = s["model"] + "/" + s["variant"] + "/" + s["hardware"]
            p = pd.DataFrame(
                {
                    "suite": suite,
                    "run_id": t.run.run_id,
                    "started": t.run.started,
                    "setup": s["setup"],
                    "energy_method": s["energy_method"],
                }
            )
            for m in HISTORY_METRICS:
                p[m] = pd.to_numeric(s[m], errors="coerce") if m in s.columns else math.nan
            points.append(p)
        for i, (base, new) in enumerate(zip(runs, runs[1:], strict=False)):
            earlier = runs[max(0, i - (HISTORY_RUNS - 1)) : i][::-1]  # newest first
            regressions.append(_regressions(suite, base, new, threshold, earlier))
    pts = pd.concat(points, ignore_index=True) if points else pd.DataFrame()
    pts = pts.reindex(columns=HISTORY_POINT_COLUMNS)
    regs = [r for r in regressions if len(r)]
    reg = pd.concat(regs, ignore_index=True) if regs else pd.DataFrame()
    return pts, reg.reindex(columns=REGRESSION_COLUMNS)


def _regressions(
    suite: str, base: Tables, new: Tables, threshold: float, earlier: list[Tables]
) -> pd.DataFrame:
    rows = compare_runs(base.run, new.run, threshold, [t.run for t in earlier])
    rows = rows[rows["verdict"] == "regression"]
    if rows.empty:
        return pd.DataFrame(columns=REGRESSION_COLUMNS)
    cases = _case_setups(new.run)
    headline_ids = set(new.setups["case_id"].dropna()) if "case_id" in new.setups else set()
    out = []
    for r in rows.itertuples(index=False):
        if r.case not in cases.index:
            continue  # a command case: no setup to mark
        c = cases.loc[r.case]
        energy = r.metric in ("energy_per_token_j", "energy_per_query_j")
        if energy and c["case_id"] not in headline_ids:
            continue  # not the shape the leaderboard and the history show
        if r.metric not in (*HISTORY_METRICS, "status"):
            continue
        out.append(
            {
                "suite": suite,
                "run_id": new.run.run_id,
                "base_run_id": base.run.run_id,
                "setup": c["setup"],
                "metric": r.metric,
                "base": r.base,
                "new": r.new,
                "change_rel": r.change_rel,
                "case": r.case,
                "note": r.note,
            }
        )
    return pd.DataFrame(out, columns=REGRESSION_COLUMNS)


# --- labels -----------------------------------------------------------------------------------


def _fmt(value, unit: str = "", digits: int = 3) -> str:
    if value is None or pd.isna(value):
        return "—"
    return f"{float(value):.{digits}g}{(' ' + unit) if unit else ''}"


def label_svg(row: dict, generated: str) -> str:
    """A model's energy label: its best setup's stars, energy, accuracy and how it was measured."""
    e = html.escape
    stars = row.get("stars")
    rated = stars is not None and not pd.isna(stars)
    n = int(stars) if rated else 0
    star_text = ("★" * n + "☆" * (5 - n)) if rated else "not rated"
    lines = [
        ("setup", f"{row['variant']} on {row['hardware']}"),
        ("energy per query", _fmt(row.get("energy_per_query_j"), "J")),
        ("energy per 1,000 queries", _fmt(row.get("wh_per_1000_queries"), "Wh")),
        ("energy per token", _fmt(row.get("energy_per_token_j"), "J")),
        ("accuracy", _fmt(row.get("accuracy"))),
        ("energy", f"{row.get('energy_method')} ({row.get('energy_sources') or '—'})"),
        ("class", f"{row.get('workload_class') or '—'}, {row.get('size_class') or '—'}"),
    ]
    body = []
    y = 118
    for name, value in lines:
        body.append(
            f'<text x="16" y="{y}" font-size="12" fill="#555">{e(name)}</text>'
            f'<text x="304" y="{y}" font-size="13" text-anchor="end" font-weight="600">'
            f"{e(value)}</text>"
        )
        y += 24
    height = y + 14
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="320" height="{height}" '
        f'viewBox="0 0 320 {height}" font-family="Helvetica, Arial, sans-serif">'
        f'<rect x="1" y="1" width="318" height="{height - 2}" rx="10" fill="#fff" '
        f'stroke="#1b5e20" stroke-width="2"/>'
        f'<rect x="1" y="1" width="318" height="36" rx="10" fill="#1b5e20"/>'
        f'<text x="16" y="25" font-size="15" fill="#fff" font-weight="700">Energy label</text>'
        f'<text x="16" y="62" font-size="18" font-weight="700">{e(str(row["model"]))}</text>'
        f'<text x="16" y="92" font-size="22" fill="#e6a700">{e(star_text)}</text>'
        + "".join(body)
        + f'<text x="16" y="{height - 8}" font-size="9" fill="#777">energy-harness, {e(generated)}'
        f"</text></svg>"
    )


def best_per_model(rows: pd.DataFrame) -> pd.DataFrame:
    """Each model's setup with the least energy per query, in one energy method: measured where
    the model has a measured setup (the ranking never mixes the two)."""
    r = rows.assign(_measured=rows["energy_method"] == "measured")
    has_measured = r.groupby("model")["_measured"].transform("any")
    r = r[r["_measured"] == has_measured]
    r = r.sort_values(
        ["energy_per_query_j", "accuracy"], ascending=[True, False], na_position="last"
    )
    return r.drop_duplicates("model").drop(columns="_measured").sort_values("model")


# --- page -------------------------------------------------------------------------------------


def _short(v: float) -> float:
    """7 significant digits: what the page shows with room to spare, a third of the bytes."""
    return float(f"{v:.7g}") if math.isfinite(v) else v


def _jsonable(frame: pd.DataFrame) -> dict:
    """Columnar JSON: {columns, data}; NaN and NA as null, numpy scalars as Python ones."""
    columns = list(frame.columns)
    data = []
    for row in frame.itertuples(index=False):
        out = []
        for v in row:
            if isinstance(v, (list, tuple)):
                out.append(list(v))
            elif v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
                out.append(None)
            elif isinstance(v, (np.integer,)):
                out.append(int(v))
            elif isinstance(v, (np.floating, float)):
                out.append(None if math.isnan(v) else _short(float(v)))
            elif isinstance(v, (np.bool_, bool)):
                out.append(bool(v))
            else:
                out.append(v if isinstance(v, (int, str)) else str(v))
        data.append(out)
    return {"columns": columns, "data": data}


def _run_facts(run: Run) -> dict:
    m = run.manifest
    sensors = m.get("sensors") if isinstance(m.get("sensors"), list) else []
    measurement = run.suite.get("measurement") or {}
    return {
        "run_id": run.run_id,
        "suite": run.suite_name,
        "started": run.started,
        "host": m.get("host") if isinstance(m.get("host"), dict) else {},
        "sensors": [s for s in sensors if isinstance(s, dict)],
        "measurement": measurement if isinstance(measurement, dict) else {},
        "carbon": run.carbon_block or {},
    }


def site_data(
    runs: list[Run], threshold: float = DEFAULT_THRESHOLD, *, include_failed_checks: bool = False
) -> dict:
    """Everything the page shows, as JSON-ready data. Rows that failed ``harness check`` travel
    with the page (its toggle shows them, marked) but are rated and labelled only when
    ``include_failed_checks``."""
    analyses = [Analysis(r) for r in runs]  # each run's tables and leaderboard, computed once
    all_tables = [a.tables for a in analyses]
    rows = site_rows(all_tables, [a.board for a in analyses])
    failed = (rows["check"] == FAIL) & (not include_failed_checks)
    published, left_off = rows[~failed], int(failed.sum())
    if left_off:  # stars rank the rows on the board only
        rows["stars"] = star_ratings(published).reindex(rows.index).astype("Int64")
    points, regressions = history(all_tables, threshold)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    labels = {
        str(r["model"]): label_svg(r, generated)
        for r in best_per_model(published).to_dict(orient="records")
    }
    return {
        "generated": generated,
        "threshold": threshold,
        "star_rule": STAR_RULE,
        "include_failed_checks": include_failed_checks,
        "failed_checks_left_off": left_off,
        "runs": [_run_facts(r) for r in runs],
        "rows": _jsonable(rows),
        "serving": _jsonable(serving_rows(runs)),
        "history": {
            "metrics": HISTORY_METRICS,
            "points": _jsonable(points),
            "regressions": _jsonable(regressions),
        },
        "labels": labels,
    }


def _asset(name: str) -> str:
    return (resources.files("harness.report") / ASSETS / name).read_text(encoding="utf-8")


def _plotly_js() -> str:
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise HarnessError(
            "harness site needs plotly (its JavaScript is inlined in the page): "
            "pip install 'energy-harness[site]'"
        ) from None
    return get_plotlyjs()


def _inline_script(text: str) -> str:
    # a literal "</script" inside a script element would end it
    return text.replace("</script", "<\\/script")


def render_page(data: dict) -> str:
    """index.html: template, style, data, plotly and the page's script, all inline."""
    payload = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    payload = payload.replace("<", "\\u003c")  # JSON inside HTML: no tag can open
    page = _asset("index.html")
    parts = {
        "/*HARNESS_STYLE*/": _asset("style.css"),
        "/*HARNESS_PLOTLY*/": _inline_script(_plotly_js()),
        "/*HARNESS_APP*/": _inline_script(_asset("app.js")),
        "/*HARNESS_DATA*/": payload,
    }
    for marker, text in parts.items():
        if page.count(marker) != 1:
            raise AssertionError(f"site template: {marker} must appear once")
        before, after = page.split(marker)
        page = before + text + after
    return page


def build_site(
    run_dirs: list[str | os.PathLike],
    out_dir: str | os.PathLike,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    include_failed_checks: bool = False,
) -> Path:
    """Write ``out_dir/index.html`` (and ``out_dir/labels/<model>.svg``); returns the page's path."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise HarnessError(f"-o {out}: exists and is not a folder")
    if not out.parent.is_dir():
        raise HarnessError(f"-o {out}: no such folder {out.parent}")
    runs = open_runs(list(run_dirs))
    data = site_data(runs, threshold, include_failed_checks=include_failed_checks)
    page = render_page(data)
    out.mkdir(exist_ok=True)
    labels = out / "labels"
    labels.mkdir(exist_ok=True)
    for model, svg in data["labels"].items():
        _publish(labels / f"{_file_name(model)}.svg", svg)
    return _publish(out / "index.html", page)


def _publish(path: Path, text: str) -> Path:
    """Write atomically, readable by all: the page is meant to be served or shared as it is."""
    store.write_bytes(path, text.encode("utf-8"))
    os.chmod(path, 0o644)
    return path


def _file_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "model"
