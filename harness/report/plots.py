"""The report's figures (matplotlib, Agg): report/figures/*.png.

Each figure has units on its axes and says in its title whether its energy figures are measured or
estimated. Figures without data in the run are skipped. Layouts are fixed (legends outside the
axes, margins set by hand) rather than computed by a tight bounding box, which would draw every
figure twice. Power traces are read only for the few cases drawn, never for the whole run.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import (  # noqa: E402
    EngFormatter,
    FuncFormatter,
    LogLocator,
    NullFormatter,
    NullLocator,
)

from harness.report import knob_sweeps as report_knobs  # noqa: E402
from harness.report import serving as report_serving  # noqa: E402
from harness.report import techniques as report_techniques  # noqa: E402
from harness.report.figure import Figure  # noqa: E402
from harness.report.png import DPI, save_png  # noqa: E402,F401
from harness.report.recommend import pareto_by_method, setup_label  # noqa: E402
from harness.report.tables import Tables  # noqa: E402
from harness.workloads import kinds

MAX_TRACES = 6
MAX_SERIES = 8
MAX_LEGEND = 12
MAX_FRONT_LABELS = 12
MARKERS = {"measured": "o", "estimated": "^", "unknown": "s"}
MARKER_NAMES = {"o": "●", "^": "▲", "s": "■"}
VARIANT_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def method_note(methods) -> str:
    """What the figure's energy is: measured, estimated, or both (with their markers)."""
    methods = sorted({m for m in methods if isinstance(m, str)})
    if methods == ["measured"]:
        return "energy measured by sensors"
    if methods == ["estimated"]:
        return "energy ESTIMATED (no sensor measured it)"
    if not methods:
        return "energy method unknown"
    marks = ", ".join(f"{m} {MARKER_NAMES[MARKERS.get(m, 's')]}" for m in methods)
    return f"energy: {marks} (never pooled)"


def _colors(names) -> dict:
    cmap = plt.get_cmap("tab10")
    return {name: cmap(i % 10) for i, name in enumerate(dict.fromkeys(names))}


def _wide(values) -> bool:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return bool(len(v)) and v.max() / v.min() > 20


def _log_axis(axis, values, *, eng: bool = False) -> None:
    """A log axis with readable labels: plain numbers (0.05, not 5×10⁻²), or SI (1M) for counts.

    Narrow ranges (under two decades) also label 2 and 5 between the powers of ten, so an axis
    never shows a single tick label.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    decades = np.log10(v.max() / v.min()) if len(v) else 3
    subs = (1.0, 2.0, 5.0) if decades < 2 else (1.0,)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(EngFormatter(sep="") if eng else FuncFormatter(lambda x, _: f"{x:g}"))
    axis.set_minor_formatter(NullFormatter())


def _save(fig, path: Path) -> Path:
    return save_png(fig, path)


def _yerr(frame: pd.DataFrame, col: str) -> np.ndarray | None:
    lo, hi = frame.get(f"{col}_ci_low"), frame.get(f"{col}_ci_high")
    if lo is None or hi is None:
        return None
    mid = frame[col].to_numpy(float)
    err = np.vstack([mid - lo.to_numpy(float), hi.to_numpy(float) - mid])
    return np.where(np.isfinite(err), np.clip(err, 0, None), 0.0)


def _legend_right(fig, handles, title: str, y: float = 0.88) -> float:
    """A legend in the right margin from height ``y`` down; returns where it ends (figure y)."""
    if len(handles) > MAX_LEGEND:
        extra = len(handles) - MAX_LEGEND + 1
        handles = handles[: MAX_LEGEND - 1] + [Line2D([], [], ls="", label=f"… {extra} more")]
    fig.legend(
        handles=handles,
        title=title,
        loc="upper left",
        bbox_to_anchor=(0.79, y),
        fontsize=8,
        title_fontsize=9,
        frameon=False,
    )
    return y - 0.045 * (len(handles) + 1.5)


def _accuracy_what(tables: Tables) -> str:
    if len(tables.tasks) == 1:
        return f"{tables.tasks[0]}, fraction correct"
    return "mean over tasks, fraction correct"


def _label_points(
    ax, points: list[tuple[float, float, str]], taken: list | None = None, color: str = "black"
) -> int:
    """Label points left-above, else right-below; skip a label that would overlap another
    (those in ``taken``, which grows). Returns how many labels were drawn.
    """
    fig = ax.figure
    fig.canvas.draw()  # settle limits and transforms first, or the boxes measured are stale
    renderer = fig.canvas.get_renderer()
    taken = [] if taken is None else taken
    drawn = 0
    for x, y, text in points:
        for offset, ha, va in (((-7, 5), "right", "bottom"), ((7, -5), "left", "top")):
            t = ax.annotate(
                text,
                (x, y),
                textcoords="offset points",
                xytext=offset,
                ha=ha,
                va=va,
                fontsize=8,
                color=color,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.85, "lw": 0},
                zorder=4,
            )
            box = t.get_window_extent(renderer)
            inside = ax.get_window_extent(renderer)
            clear = box.x0 >= inside.x0 and box.x1 <= inside.x1 and box.y1 <= inside.y1
            if clear and not any(box.overlaps(o) for o in taken):
                taken.append(box)
                drawn += 1
                break
            t.remove()
    return drawn


def pareto(tables: Tables, path: Path) -> Path | None:
    """Accuracy against Wh per 1,000 queries at each setup's headline shape; the front marked."""
    s = tables.setups.reset_index()
    s = s[s["accuracy"].notna() & (s["wh_per_1000_queries"] > 0)].reset_index(drop=True)
    if s.empty:
        return None
    s["label"] = setup_label(s)
    x, y = s["wh_per_1000_queries"].to_numpy(float), s["accuracy"].to_numpy(float)
    front = pareto_by_method(x, y, s["energy_method"])  # one front per energy method
    colors = _colors(s["hardware"])
    fig = plt.figure(figsize=(10, 6))
    ax = fig.add_axes((0.09, 0.1, 0.68, 0.76))
    for (hw, method), g in s.groupby(["hardware", "energy_method"], sort=False):
        on = front[g.index]
        marker = MARKERS.get(method, "s")
        ax.scatter(
            x[g.index][~on], y[g.index][~on], color=colors[hw], alpha=0.4, marker=marker, s=28
        )
        ax.scatter(
            x[g.index][on],
            y[g.index][on],
            color=colors[hw],
            marker=marker,
            s=75,
            edgecolor="black",
            linewidth=1.1,
            zorder=3,
        )
    for method, f in s[front].groupby("energy_method", sort=False):
        f = f.sort_values("wh_per_1000_queries")
        style = "-" if method == "measured" else "--"
        ax.step(
            f["wh_per_1000_queries"],
            f["accuracy"],
            where="post",
            color="black",
            lw=1.2,
            ls=style,
            zorder=2,
        )
    f = s[front].sort_values("wh_per_1000_queries")
    if _wide(x):
        ax.set_xscale("log")
        _log_axis(ax.xaxis, x)
    ax.set_xlabel("energy per 1,000 queries (Wh) at each setup's headline batch size")
    ax.set_ylabel(f"accuracy ({_accuracy_what(tables)})")
    ax.grid(alpha=0.3)
    # label the front, spread along it when it is long; crowded labels are skipped, not overlapped
    picks = np.unique(np.linspace(0, len(f) - 1, min(len(f), MAX_FRONT_LABELS)).round().astype(int))
    fl = f.iloc[picks]
    taken: list = []
    labelled = _label_points(
        ax, list(zip(fl["wh_per_1000_queries"], fl["accuracy"], fl["label"], strict=True)), taken
    )
    if len(s) <= MAX_FRONT_LABELS:  # a small run: name the dominated setups too, in grey
        d = s[~front]
        points = list(zip(d["wh_per_1000_queries"], d["accuracy"], d["label"], strict=True))
        _label_points(ax, points, taken, color="dimgrey")
    # colour only: the marker shape is the energy method
    handles = [Line2D([], [], color=c, marker="s", ls="", label=h) for h, c in colors.items()]
    end = _legend_right(fig, handles, "hardware")
    extra = [
        Line2D([], [], color="black", marker="o", mfc="white", ls="-", label="Pareto front"),
        Line2D([], [], color="grey", marker="o", alpha=0.4, ls="", label="dominated"),
    ]
    extra += [
        Line2D([], [], color="grey", marker=MARKERS.get(m, "s"), ls="", label=m)
        for m in tables.methods
        if len(tables.methods) > 1
    ]
    _legend_right(fig, extra, "", y=end)
    note = f"; {labelled} of {len(f)} front setups labelled" if labelled < len(f) else ""
    fig.suptitle(
        f"Accuracy against inference energy, Pareto front in black\n{method_note(s['energy_method'])}{note}",
        fontsize=11,
        x=0.43,
    )
    return _save(fig, path)


def _params_plot(
    tables: Tables, s: pd.DataFrame, ycol: str, ylabel: str, title: str, path: Path
) -> Path:
    colors = _colors(s["hardware"])
    variants = list(dict.fromkeys(s["variant"]))
    vmark = {v: VARIANT_MARKERS[i % len(VARIANT_MARKERS)] for i, v in enumerate(variants)}
    fig = plt.figure(figsize=(10, 6))
    ax = fig.add_axes((0.1, 0.1, 0.67, 0.76))
    for (hw, variant), g in s.groupby(["hardware", "variant"], sort=False):
        g = g.sort_values("params")
        ax.errorbar(
            g["params"],
            g[ycol],
            yerr=_yerr(g, ycol),
            color=colors[hw],
            marker=vmark[variant],
            ls="-",
            lw=0.8,
            ms=6,
            capsize=2,
            alpha=0.8,
            mfc="none" if (g["energy_method"] == "estimated").all() else colors[hw],
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    _log_axis(ax.xaxis, s["params"], eng=True)
    _log_axis(ax.yaxis, s[ycol])
    ax.grid(alpha=0.3)
    ax.set_xlabel("parameters (count, log scale)")
    ax.set_ylabel(ylabel)
    end = _legend_right(
        fig, [Line2D([], [], color=c, lw=2, label=h) for h, c in colors.items()], "hardware"
    )
    _legend_right(
        fig,
        [Line2D([], [], color="grey", marker=m, ls="", label=v) for v, m in vmark.items()],
        "variant",
        y=end,
    )
    note = method_note(s["energy_method"])
    if len(set(s["energy_method"])) > 1:
        note += "; hollow markers: estimated"
    fig.suptitle(f"{title}\n{note}", fontsize=11, x=0.43)
    return _save(fig, path)


def energy_per_token_vs_params(tables: Tables, path: Path) -> Path | None:
    s = tables.setups.reset_index()
    s = s[(s["params"] > 0) & (s["energy_per_token_j"] > 0)]
    if s.empty:
        return None
    return _params_plot(
        tables,
        s,
        "energy_per_token_j",
        "energy per generated token (J, log scale)",
        "Energy per token against model size, per hardware (headline batch size; bars: 95% CI)",
        path,
    )


def training_energy_vs_params(tables: Tables, path: Path) -> Path | None:
    s = tables.setups.reset_index()
    if "energy_to_train_j" not in s.columns:
        return None
    s = s[(s["params"] > 0) & (s["energy_to_train_j"] > 0)]
    if s.empty:
        return None
    return _params_plot(
        tables,
        s,
        "energy_to_train_j",
        "energy to train (J, log scale)",
        "Training energy against model size (bars: 95% CI)",
        path,
    )


def _batch_setups(tables: Tables, infer: pd.DataFrame) -> tuple[list[str], int]:
    """Which setups to draw: those on the Pareto front first (cheapest first), then the rest in
    leaderboard order; only setups measured at two or more batch sizes. Returns (shown, total).
    """
    counts = infer.groupby("label", sort=False)["batch_size"].nunique()
    eligible = [lab for lab in counts.index if counts[lab] > 1] or list(counts.index)
    s = tables.setups.reset_index()
    s["label"] = setup_label(s) + np.where(s["energy_method"] == "estimated", " (est.)", "")
    s["front"] = pareto_by_method(
        s["wh_per_1000_queries"].to_numpy(float), s["accuracy"].to_numpy(float), s["energy_method"]
    )
    s = s.sort_values(
        ["front", "accuracy", "wh_per_1000_queries"],
        ascending=[False, False, True],
        na_position="last",
    )
    rank = {lab: i for i, lab in enumerate(s["label"])}
    ordered = sorted(eligible, key=lambda lab: rank.get(lab, len(rank)))
    return ordered[:MAX_SERIES], len(eligible)


def batch_scaling(tables: Tables, path: Path) -> Path | None:
    """Throughput and energy per token against batch size, one line per setup (capped)."""
    c = tables.cases
    infer = c[
        c["workload"].isin(kinds(unit="query")) & c["model"].notna() & c["batch_size"].notna()
    ].copy()
    if infer.empty:
        return None
    infer["label"] = setup_label(infer) + np.where(
        infer["energy_method"] == "estimated", " (est.)", ""
    )
    shown, total = _batch_setups(tables, infer)
    infer = infer[infer["label"].isin(shown)]
    # several prompt/new lengths at one batch size: the headline rule's choice (most new tokens)
    infer = infer.sort_values(["batch_size", "new_tokens", "prompt_tokens"]).drop_duplicates(
        ["label", "batch_size"], keep="last"
    )
    colors = _colors(shown)
    legend_rows = (len(shown) + 3) // 4
    bottom = 0.13 + 0.045 * legend_rows
    fig = plt.figure(figsize=(12, 5.5 + 0.25 * legend_rows))
    top = 0.84
    axes = [
        fig.add_axes((0.07, bottom, 0.4, top - bottom)),
        fig.add_axes((0.57, bottom, 0.4, top - bottom)),
    ]
    for lab in shown:
        g = infer[infer["label"] == lab].sort_values("batch_size")
        for ax, col in zip(axes, ("tokens_per_s", "energy_per_token_j"), strict=True):
            ax.errorbar(
                g["batch_size"],
                g[col],
                yerr=_yerr(g, col),
                marker="o",
                ms=4,
                capsize=2,
                lw=1.2,
                color=colors[lab],
                label=lab,
            )
    ticks = sorted(infer["batch_size"].unique())
    for ax, col in zip(axes, ("tokens_per_s", "energy_per_token_j"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(int(t)) for t in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("batch size (queries per batch, log scale)")
        ax.grid(alpha=0.3)
        if _wide(infer[col]):
            ax.set_yscale("log")
            _log_axis(ax.yaxis, infer[col])
    axes[0].set_ylabel("throughput (generated tokens/s)")
    axes[1].set_ylabel("energy per generated token (J)")
    axes[0].set_title("Throughput", fontsize=10)
    axes[1].set_title("Energy per token", fontsize=10)
    note = method_note(infer["energy_method"])
    if total > len(shown):
        note += f"; {len(shown)} of {total} setups shown (Pareto front first)"
    fig.suptitle(f"Batch size scaling (bars: 95% CI)\n{note}", fontsize=11)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="lower center",
        ncol=4,
        fontsize=8,
        frameon=False,
        bbox_to_anchor=(0.5, 0.0),
    )
    return _save(fig, path)


def traced_cases(tables: Tables, limit: int = MAX_TRACES) -> list[tuple[pd.Series, Path]]:
    """Up to ``limit`` cases with a trace: the costliest of each workload type first, then the
    costliest of the rest. Only the chosen cases' folders are looked at.
    """
    c = tables.cases.sort_values("energy_sum_j", ascending=False, na_position="last")
    c = c.drop_duplicates("case_id")
    first = c.drop_duplicates("workload")
    order = pd.concat([first, c.drop(index=first.index)])
    found = []
    for _, row in order.iterrows():
        p = tables.run.trace_path(row["case_id"])
        if p.is_file():
            found.append((row, p))
            if len(found) == limit:
                break
    return found


def power_traces(tables: Tables, path: Path) -> Path | None:
    traces = []
    for row, p in traced_cases(tables):
        try:
            t = pd.read_parquet(p, columns=["t_s", "domain", "watts"])
        except (OSError, ValueError, KeyError):
            continue
        if len(t):
            traces.append((row, t))
    if not traces:
        return None
    cols = 2 if len(traces) > 1 else 1
    rows = (len(traces) + cols - 1) // cols
    height = 1.4 + 2.9 * rows
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, height), squeeze=False)
    fig.subplots_adjust(
        left=0.08, right=0.98, bottom=0.55 / height, top=1 - 1.25 / height, hspace=0.5, wspace=0.2
    )
    domains = sorted({d for _, t in traces for d in t["domain"].unique()})
    colors = _colors(domains)
    for ax, (row, t) in zip(axes.flat, traces, strict=False):
        for domain, g in t.groupby("domain", sort=True):
            ax.plot(g["t_s"].to_numpy(), g["watts"].to_numpy(), lw=0.8, color=colors[domain])
        title = textwrap.shorten(str(row["case"]), 70, placeholder="…")
        ax.set_title(f"{title}  [{row['energy_method']}]", fontsize=9)
        ax.set_xlabel("time since the case started (s)", fontsize=9)
        ax.set_ylabel("power (W)", fontsize=9)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(traces) :]:
        ax.axis("off")
    handles = [Line2D([], [], color=c, lw=2, label=d) for d, c in colors.items()]
    fig.legend(
        handles=handles,
        loc="upper center",
        ncol=len(handles),
        fontsize=9,
        frameon=False,
        bbox_to_anchor=(0.5, 1 - 0.62 / height),
    )
    # the case's energy figure may be estimated even where power was sampled
    note = method_note([r["energy_method"] for r, _ in traces])
    fig.suptitle(
        f"Sampled power by domain: the costliest case of each workload, then the costliest others\n{note}",
        fontsize=11,
        y=1 - 0.08 / height,
    )
    return _save(fig, path)


def carbon_by_hour(tables: Tables, path: Path) -> Path | None:
    """The same run at each hour of the day: its energy × PUE × the intensity file's mean at
    that hour (UTC), beside the CO2e it had at the hours it did run."""
    from harness.carbon import IntensitySeries

    series = (tables.run.manifest.get("carbon") or {}).get("intensity_series")
    frame = tables.run.frame
    ok = frame[frame["status"] == "ok"]
    if not series or ok.empty:
        return None
    s = IntensitySeries(series)
    energy_kwh = float(pd.to_numeric(ok["energy_j"], errors="coerce").sum()) / 3.6e6
    pue = float(pd.to_numeric(ok["pue"], errors="coerce").dropna().median())  # no pandas-2 warning
    pue = pue if np.isfinite(pue) else 1.0
    hours = list(range(24))
    co2 = [energy_kwh * pue * s.hour_of_day_g_per_kwh.get(h, s.mean_g_per_kwh) for h in hours]
    actual = float(pd.to_numeric(ok["co2e_g"], errors="coerce").sum())
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(hours, co2, color="#7aa6c2", label="had it run at this hour (file's mean)")
    ax.axhline(actual, color="black", linestyle="--", label=f"as it ran: {actual:.3g} g")
    ax.set_xticks(hours[::2])
    ax.set_xlabel("hour of the day (UTC)")
    ax.set_ylabel("gCO2e of the whole run")
    ax.set_title(f"The same run at each hour of the day ({energy_kwh * 1000:.3g} Wh × PUE {pue:g})")
    ax.legend(loc="upper right", fontsize=8)
    return _save(fig, path)


def energy_and_latency_vs_knob(tables: Tables, path: Path, knob: str) -> Path | None:
    """Energy per token and latency against a knob, one line per model/variant."""
    s = report_knobs.knob_points(tables, knob)
    if s.empty:
        return None
    _, xlabel, what = report_knobs.KNOB_AXES[knob]
    colors = _colors(s["series"])
    fig = plt.figure(figsize=(12, 5.5))
    axes = [fig.add_axes((0.07, 0.13, 0.31, 0.7)), fig.add_axes((0.45, 0.13, 0.31, 0.7))]
    panels = (
        ("energy_per_token_j", "energy per generated token (J)"),
        ("latency_p90_s", "p90 latency of a batch (s)"),
    )
    for series, g in s.groupby("series", sort=False):
        g = g.sort_values(knob)
        for ax, (col, _) in zip(axes, panels, strict=True):
            if g[col].notna().any():
                ax.errorbar(
                    g[knob],
                    g[col],
                    yerr=_yerr(g, col),
                    marker="o",
                    ms=5,
                    capsize=2,
                    lw=1.2,
                    color=colors[series],
                    label=series,
                )
    for ax, (_, ylabel) in zip(axes, panels, strict=True):
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].set_title("Energy per token", fontsize=10)
    axes[1].set_title("Latency", fontsize=10)
    handles = [Line2D([], [], color=c, marker="o", lw=1.2, label=n) for n, c in colors.items()]
    _legend_right(fig, handles, "model/variant")
    fig.suptitle(
        f"Energy per token and latency against {what} (headline batch size; bars: 95% CI)\n"
        f"{method_note(s['energy_method'])}",
        fontsize=11,
        x=0.45,
    )
    return _save(fig, path)


def energy_vs_power_limit(tables: Tables, path: Path) -> Path | None:
    return energy_and_latency_vs_knob(tables, path, "power_limit_w")


def energy_vs_cpu_max_mhz(tables: Tables, path: Path) -> Path | None:
    return energy_and_latency_vs_knob(tables, path, "cpu_max_mhz")


def techniques(tables: Tables, path: Path) -> Path | None:
    """Accuracy retained against energy per query saved, by technique (report/techniques.py).

    A build draws it from its analysis (techniques.FIGURE); this is for a caller with tables only.
    """
    from harness.report.techniques import build, figure

    return figure(build(tables).techniques, path)


def _of_tables(draw):
    """A figure drawn from the analysis's tables."""
    return lambda analysis, path: draw(analysis.tables, path)


def _figures(*figures: Figure) -> dict[str, Figure]:
    return {f.name: f for f in figures}


FIGURES = _figures(
    Figure(
        "pareto.png",
        _of_tables(pareto),
        "Accuracy against energy per 1,000 queries; the black line is the Pareto front.",
    ),
    Figure(
        "energy_per_token_vs_params.png",
        _of_tables(energy_per_token_vs_params),
        "Energy per token against parameter count (log-log).",
    ),
    Figure(
        "batch_scaling.png",
        _of_tables(batch_scaling),
        "Throughput and energy per token against batch size.",
    ),
    Figure(
        "training_energy_vs_params.png",
        _of_tables(training_energy_vs_params),
        "Training energy against parameter count (log-log).",
    ),
    Figure(
        "power_traces.png",
        _of_tables(power_traces),
        "Sampled power of the costliest traced cases.",
    ),
    report_techniques.FIGURE,
    Figure(
        "carbon_by_hour.png",
        _of_tables(carbon_by_hour),
        "The same run at each hour of the day: its CO2e had it run then "
        "(the intensity file's mean per hour, UTC).",
    ),
)
#: drawn only for a run that swept a hardware knob (harness/report/knob_sweeps.py)
KNOB_FIGURES = _figures(
    Figure(
        "energy_vs_power_limit.png",
        _of_tables(energy_vs_power_limit),
        "Energy per token and p90 latency against the GPU power limit.",
    ),
    Figure(
        "energy_vs_cpu_max_mhz.png",
        _of_tables(energy_vs_cpu_max_mhz),
        "Energy per token and p90 latency against the CPU frequency cap.",
    ),
)
#: every figure of report.md's Figures section, in its order
GALLERY: list[Figure] = [*FIGURES.values(), *KNOB_FIGURES.values(), report_serving.FIGURE]
