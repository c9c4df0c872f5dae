"""The serving part of a report: ``serve`` cases by variant and concurrency, and what they buy.

- ``serving.csv``: one row per serve case (model, variant, engine, concurrency): medians over
  its repetitions of energy per token and per request, tokens and requests per second, TTFT and
  inter-token latency percentiles, the steady-state seconds; the GGUF file's size and what
  making it cost (``produce_j``);
- the figure ``serving.png``: energy per token and per request against concurrency, one line per
  variant;
- open-loop cases (Poisson arrivals at ``rate_rps``) are rows of their own, keyed by the rate;
  the concurrency curve and its gain are closed-loop only;
- in report.md: that table, energy per token at the highest concurrency against concurrency 1
  per variant, model size per variant, accuracy per variant, and the same model in-process
  (``infer`` at batch 1) against served (``serve`` at concurrency 1).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.engines import DEFAULT_ENGINE
from harness.report.figure import Figure
from harness.workloads import kinds

SERVE_METRICS = [
    "energy_per_token_j",
    "energy_per_request_j",
    "tokens_per_s",
    "requests_per_s",
    "ttft_p50_s",
    "ttft_p90_s",
    "ttft_p99_s",
    "itl_p50_s",
    "itl_p90_s",
    "itl_p99_s",
    "latency_p50_s",
    "tpot_s",
    "tpot_p50_s",
    "tpot_p90_s",
    "tpot_p99_s",
    "steady_s",
    "min_steady_s",
    "inflight_avg",
    "offered_rps",
    "energy_j",
    "client_energy_j",
    "client_cpu_s",
]
#: summed over a case's repetitions: requests and prompt tokens
SERVE_COUNTS = ["requests_ok", "requests_failed", "sent_prompt_tokens", "server_prompt_tokens"]
KEYS = [
    "model",
    "variant",
    "engine",
    "hardware",
    "energy_method",
    "concurrency",
    "rate_rps",
    "prefix_cache",
]
FACTS = [
    "quantization",
    "model_size_mb",
    "produce_j",
    "prompt_tokens",
    "new_tokens",
    "client_energy_method",
    "first_error",
]


def _ok(frame: pd.DataFrame) -> pd.DataFrame:
    if "status" in frame.columns:
        frame = frame[frame["status"].fillna("ok") == "ok"]
    return frame


def serve_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per serve case: medians of the serving metrics over its repetitions."""
    if "workload" not in frame.columns:
        return pd.DataFrame(columns=KEYS + FACTS + SERVE_METRICS)
    empty = KEYS + FACTS + SERVE_METRICS + SERVE_COUNTS + ["warnings"]
    f = _ok(frame[frame["workload"].isin(kinds(unit="request"))]).copy()
    if f.empty:
        return pd.DataFrame(columns=empty)
    for col in empty:
        if col not in f.columns:
            f[col] = None
    numeric = SERVE_METRICS + SERVE_COUNTS + ["concurrency", "rate_rps", "model_size_mb"]
    for col in numeric + ["produce_j"]:
        f[col] = pd.to_numeric(f[col], errors="coerce")
    # records from before prefix_cache was an axis were served with the cache on
    f["prefix_cache"] = f["prefix_cache"].astype(object).where(f["prefix_cache"].notna(), None)
    g = f.groupby(KEYS, dropna=False)
    out = g[SERVE_METRICS].median()
    out = out.join(g[SERVE_COUNTS].sum(min_count=1)).join(g[FACTS].first())
    out = out.join(g["warnings"].agg(_warnings)).join(g.size().to_frame("n")).reset_index()
    return out.sort_values(
        ["model", "variant", "rate_rps", "concurrency"], kind="stable", na_position="first"
    ).reset_index(drop=True)


def _warnings(values: pd.Series) -> str:
    """Each distinct warning of a case's repetitions once, in order: the row says what it has."""
    seen: list[str] = []
    for v in values.dropna():
        for w in str(v).split(";"):
            if w.strip() and w.strip() not in seen:
                seen.append(w.strip())
    return ";".join(seen)


def steady_note(r) -> str:
    """The steady window's seconds, flagged where it was shorter than its ``min_steady_s``."""
    steady, floor = r.get("steady_s"), r.get("min_steady_s")
    if pd.isna(steady):
        return ""
    if pd.notna(floor) and steady < floor:
        return f"{steady:.3g} ⚠ under min_steady_s {floor:g}"
    return f"{steady:.3g}"


def closed_loop(serve: pd.DataFrame) -> pd.DataFrame:
    """The closed-loop rows (a concurrency, no arrival rate), of a table or of raw records."""
    if "rate_rps" not in serve.columns:
        return serve
    return serve[pd.to_numeric(serve["rate_rps"], errors="coerce").isna()]


def _load(r) -> str:
    cache = ", prefix cache on" if r.get("prefix_cache") is True else ""
    if pd.notna(r.get("rate_rps")):
        offered = r.get("offered_rps")
        seen = f" (offered {offered:.3g})" if pd.notna(offered) else ""
        return f"Poisson {r['rate_rps']:g} rps{seen}, {int(r['concurrency'])} slots{cache}"
    return f"{int(r['concurrency'])} in flight{cache}"


def _prefill(r) -> str:
    """Prompt tokens the server prefilled (its metrics) of those sent."""
    server, sent = r.get("server_prompt_tokens"), r.get("sent_prompt_tokens")
    if pd.isna(sent):
        return ""
    if pd.isna(server):
        return f"? / {sent:.0f}"
    return f"{server:.0f} / {sent:.0f}"


def accuracy_by_variant(frame: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per model, variant and task (engine included: served accuracy is its own)."""
    if "workload" not in frame.columns:
        return pd.DataFrame()
    f = _ok(frame[frame["workload"].isin(kinds(scores=True))]).copy()
    if f.empty or "accuracy" not in f.columns:
        return pd.DataFrame()
    for col in ("engine", "accuracy_stderr", "task", "samples"):
        if col not in f.columns:
            f[col] = None
    f["engine"] = f["engine"].fillna(DEFAULT_ENGINE)
    keep = ["model", "variant", "engine", "task", "accuracy", "accuracy_stderr", "samples"]
    out = f[keep].groupby(["model", "variant", "engine", "task"], dropna=False).first()
    out = out.reset_index()
    from harness.report.stats import samples_from_stderr, wilson

    n = pd.to_numeric(out["samples"], errors="coerce")
    acc = pd.to_numeric(out["accuracy"], errors="coerce")
    n = n.where(n > 0, samples_from_stderr(acc, pd.to_numeric(out["accuracy_stderr"])))
    out["accuracy_ci_low"], out["accuracy_ci_high"] = wilson(acc, n)
    return out


def in_process_vs_served(frame: pd.DataFrame, serve: pd.DataFrame) -> pd.DataFrame:
    """The same model in-process (infer, smallest batch) beside served (lowest concurrency)."""
    serve = closed_loop(serve)
    if serve.empty or "workload" not in frame.columns:
        return pd.DataFrame()
    infer = _ok(frame[frame["workload"].isin(kinds(unit="query"))]).copy()
    if infer.empty:
        return pd.DataFrame()
    for col in ("energy_per_token_j", "tokens_per_s", "batch_size", "ttft_s"):
        infer[col] = pd.to_numeric(infer.get(col), errors="coerce")
    rows = []
    for model, inf in infer.groupby("model"):
        b = inf["batch_size"].min()
        inf = inf[inf["batch_size"] == b]
        for variant, iv in inf.groupby("variant"):
            rows.append(
                {
                    "model": model,
                    "how": f"in-process {variant} (batch {int(b)})",
                    "energy_per_token_j": iv["energy_per_token_j"].median(),
                    "tokens_per_s": iv["tokens_per_s"].median(),
                    "ttft_s": iv["ttft_s"].median(),
                }
            )
        sv = serve[serve["model"] == model]
        if sv.empty:
            continue
        c = sv["concurrency"].min()
        for _, r in sv[sv["concurrency"] == c].iterrows():
            rows.append(
                {
                    "model": model,
                    "how": f"served {r['variant']} ({r['engine']}, concurrency {int(c)})",
                    "energy_per_token_j": r["energy_per_token_j"],
                    "tokens_per_s": r["tokens_per_s"],
                    "ttft_s": r["ttft_p50_s"],
                }
            )
    return pd.DataFrame(rows)


def concurrency_gain(serve: pd.DataFrame) -> pd.DataFrame:
    """Per variant: energy per token at the highest concurrency against concurrency 1."""
    serve = closed_loop(serve)
    rows = []
    for (model, variant), g in serve.groupby(["model", "variant"]):
        lo, hi = g["concurrency"].min(), g["concurrency"].max()
        if lo == hi:
            continue
        e_lo = g.loc[g["concurrency"] == lo, "energy_per_token_j"].median()
        e_hi = g.loc[g["concurrency"] == hi, "energy_per_token_j"].median()
        rows.append(
            {
                "model": model,
                "variant": variant,
                "low": int(lo),
                "high": int(hi),
                "energy_per_token_j_low": e_lo,
                "energy_per_token_j_high": e_hi,
                "ratio": e_hi / e_lo if e_lo else None,
            }
        )
    return pd.DataFrame(rows)


def figure(serve: pd.DataFrame, path: Path) -> Path | None:
    """Energy per token and per request against concurrency, one line per variant."""
    serve = closed_loop(serve)
    if serve.empty or serve["concurrency"].nunique() < 1:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.report.png import save_png

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for (model, variant, method), g in serve.groupby(["model", "variant", "energy_method"]):
        g = g.sort_values("concurrency")
        label = f"{model}/{variant}" + (" (estimated)" if method == "estimated" else "")
        for ax, col in zip(axes, ("energy_per_token_j", "energy_per_request_j"), strict=True):
            ax.plot(g["concurrency"], g[col], marker="o", label=label)
    for ax, what in zip(axes, ("energy per token (J)", "energy per request (J)"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("concurrency (requests in flight)")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Served in the steady state: energy against concurrency")
    fig.tight_layout()
    return save_png(fig, path)


def _draw(analysis, path: Path) -> Path | None:
    return None if analysis.served.empty else figure(analysis.served, path)


FIGURE = Figure(
    "serving.png",
    _draw,
    "Served in the steady state: energy per token and per request against concurrency, "
    "per variant.",
)


def section(frame: pd.DataFrame, table, fmt, serve: pd.DataFrame | None = None) -> str:
    """The report.md section; empty when the run has no serve cases.

    ``table`` and ``fmt`` are report.markdown's (passed in: markdown imports this module);
    ``serve`` is :func:`serve_table` of ``frame`` where the caller has it (the analysis's).
    """

    def _fmt(value, digits: int = 3) -> str:
        return fmt(value, digits)

    if serve is None:
        serve = serve_table(frame)
    if serve.empty:
        return ""
    parts = [
        "## Serving\n",
        "Served requests measured in the steady state only (closed-loop, the window opens when "
        "`concurrency` requests are in flight with their first tokens, and closes when fewer "
        "remain; open-loop, at Poisson arrivals of `rate_rps`, it spans the arrivals after the "
        "first tenth, and the rate the window saw is published beside the asked one). Every "
        "measured request is prefilled in full (no prompt or prefix cache, fresh prompts each "
        "repetition) unless the row says the prefix cache was on; prefilled / sent: the prompt "
        "tokens the server says it prefilled (its metrics) against those sent. TPOT per "
        "request is (latency − TTFT) / (output tokens − 1), its median here. Figures are over "
        "successful requests; failed: requests that failed (the case fails past "
        "`max_failed_share`). The load generator's share of the CPU energy, by CPU time, is "
        "subtracted where CPU energy is in the figure (`client_energy_j`). "
        "Energy per request is energy per token × new_tokens. Latencies in seconds.\n",
    ]
    rows = [
        {
            "setup": f"{r['model']}/{r['variant']} ({r['engine']})",
            "c": _load(r),
            "ept": _fmt(r["energy_per_token_j"]),
            "epr": _fmt(r["energy_per_request_j"]),
            "tps": _fmt(r["tokens_per_s"]),
            "rps": _fmt(r["requests_per_s"]),
            "ttft": " / ".join(_fmt(r[c]) for c in ("ttft_p50_s", "ttft_p90_s", "ttft_p99_s")),
            "itl": " / ".join(_fmt(r[c]) for c in ("itl_p50_s", "itl_p90_s", "itl_p99_s")),
            "tpot": _fmt(r["tpot_s"]),
            "steady": steady_note(r),
            "failed": "" if pd.isna(r["requests_failed"]) else f"{r['requests_failed']:.0f}",
            "prefill": _prefill(r),
            "client": _fmt(r["client_energy_j"]),
            "method": r["energy_method"],
        }
        for _, r in serve.iterrows()
    ]
    cols = [
        ("setup", "setup"),
        ("c", "load"),
        ("ept", "J/token"),
        ("epr", "J/request"),
        ("tps", "tokens/s"),
        ("rps", "requests/s"),
        ("ttft", "TTFT p50/p90/p99"),
        ("itl", "ITL p50/p90/p99"),
        ("tpot", "TPOT"),
        ("steady", "steady s"),
        ("failed", "failed"),
        ("prefill", "prefilled / sent"),
        ("client", "client J"),
        ("method", "energy"),
    ]
    parts.append(table(rows, cols, len(serve)))
    gain = concurrency_gain(serve)
    if not gain.empty:
        parts.append("\nEnergy per token at the highest concurrency against concurrency 1:\n")
        parts.append(
            table(
                [
                    {
                        "setup": f"{r['model']}/{r['variant']}",
                        "lo": f"{_fmt(r['energy_per_token_j_low'])} J at {r['low']}",
                        "hi": f"{_fmt(r['energy_per_token_j_high'])} J at {r['high']}",
                        "ratio": _fmt(r["ratio"]),
                    }
                    for _, r in gain.iterrows()
                ],
                [("setup", "setup"), ("lo", "low"), ("hi", "high"), ("ratio", "high / low")],
            )
        )
    sizes = serve.groupby(["model", "variant"], dropna=False)[
        ["quantization", "model_size_mb", "produce_j"]
    ].first()
    parts.append("\nModel files served (GGUF size, and the energy to export and quantise it):\n")
    parts.append(
        table(
            [
                {
                    "setup": f"{m}/{v}",
                    "q": r["quantization"] or "",
                    "mb": _fmt(r["model_size_mb"], 4),
                    "pj": _fmt(r["produce_j"]),
                }
                for (m, v), r in sizes.iterrows()
            ],
            [("setup", "setup"), ("q", "quantization"), ("mb", "size MiB"), ("pj", "produce J")],
        )
    )
    acc = accuracy_by_variant(frame)
    if not acc.empty:
        parts.append("\nAccuracy per variant (served variants scored through their server):\n")
        parts.append(
            table(
                [
                    {
                        "setup": f"{r['model']}/{r['variant']} ({r['engine']})",
                        "task": r["task"],
                        "acc": _fmt(r["accuracy"]),
                        "ci": f"{_fmt(r['accuracy_ci_low'])} – {_fmt(r['accuracy_ci_high'])}",
                        "n": "" if pd.isna(r["samples"]) else f"{float(r['samples']):.0f}",
                    }
                    for _, r in acc.iterrows()
                ],
                [
                    ("setup", "setup"),
                    ("task", "task"),
                    ("acc", "accuracy"),
                    ("ci", "95% interval (Wilson)"),
                    ("n", "questions"),
                ],
            )
        )
    both = in_process_vs_served(frame, serve)
    if not both.empty:
        parts.append("\nThe same model in-process and served:\n")
        parts.append(
            table(
                [
                    {
                        "model": r["model"],
                        "how": r["how"],
                        "ept": _fmt(r["energy_per_token_j"]),
                        "tps": _fmt(r["tokens_per_s"]),
                        "ttft": _fmt(r["ttft_s"]),
                    }
                    for _, r in both.iterrows()
                ],
                [
                    ("model", "model"),
                    ("how", "how"),
                    ("ept", "J/token"),
                    ("tps", "tokens/s"),
                    ("ttft", "TTFT s"),
                ],
            )
        )
    return "\n".join(parts)
