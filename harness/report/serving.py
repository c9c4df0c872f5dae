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
    "steady_s",
    "energy_j",
]
KEYS = ["model", "variant", "engine", "hardware", "energy_method", "concurrency", "rate_rps"]
FACTS = ["quantization", "model_size_mb", "produce_j", "prompt_tokens", "new_tokens"]


def _ok(frame: pd.DataFrame) -> pd.DataFrame:
    if "status" in frame.columns:
        frame = frame[frame["status"].fillna("ok") == "ok"]
    return frame


def serve_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per serve case: medians of the serving metrics over its repetitions."""
    if "workload" not in frame.columns:
        return pd.DataFrame(columns=KEYS + FACTS + SERVE_METRICS)
    f = _ok(frame[frame["workload"] == "serve"]).copy()
    if f.empty:
        return pd.DataFrame(columns=KEYS + FACTS + SERVE_METRICS)
    for col in KEYS + FACTS + SERVE_METRICS:
        if col not in f.columns:
            f[col] = None
    for col in SERVE_METRICS + ["concurrency", "rate_rps", "model_size_mb", "produce_j"]:
        f[col] = pd.to_numeric(f[col], errors="coerce")
    g = f.groupby(KEYS, dropna=False)
    out = g[SERVE_METRICS].median()
    out = out.join(g[FACTS].first()).join(g.size().to_frame("n")).reset_index()
    return out.sort_values(
        ["model", "variant", "rate_rps", "concurrency"], kind="stable", na_position="first"
    ).reset_index(drop=True)


def closed_loop(serve: pd.DataFrame) -> pd.DataFrame:
    """The closed-loop rows (a concurrency, no arrival rate), of a table or of raw records."""
    if "rate_rps" not in serve.columns:
        return serve
    return serve[pd.to_numeric(serve["rate_rps"], errors="coerce").isna()]


def _load(r) -> str:
    if pd.notna(r.get("rate_rps")):
        return f"Poisson {r['rate_rps']:g} rps, {int(r['concurrency'])} slots"
    return f"{int(r['concurrency'])} in flight"


def accuracy_by_variant(frame: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per model, variant and task (engine included: served accuracy is its own)."""
    if "workload" not in frame.columns:
        return pd.DataFrame()
    f = _ok(frame[frame["workload"] == "accuracy"]).copy()
    if f.empty or "accuracy" not in f.columns:
        return pd.DataFrame()
    for col in ("engine", "accuracy_stderr", "task"):
        if col not in f.columns:
            f[col] = None
    f["engine"] = f["engine"].fillna("transformers")
    keep = ["model", "variant", "engine", "task", "accuracy", "accuracy_stderr"]
    return (
        f[keep].groupby(["model", "variant", "engine", "task"], dropna=False).first().reset_index()
    )


def in_process_vs_served(frame: pd.DataFrame, serve: pd.DataFrame) -> pd.DataFrame:
    """The same model in-process (infer, smallest batch) beside served (lowest concurrency)."""
    serve = closed_loop(serve)
    if serve.empty or "workload" not in frame.columns:
        return pd.DataFrame()
    infer = _ok(frame[frame["workload"] == "infer"]).copy()
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


def section(frame: pd.DataFrame, table, fmt) -> str:
    """The report.md section; empty when the run has no serve cases.

    ``table`` and ``fmt`` are report.markdown's (passed in: markdown imports this module).
    """

    def _fmt(value, digits: int = 3) -> str:
        return fmt(value, digits)

    serve = serve_table(frame)
    if serve.empty:
        return ""
    parts = [
        "## Serving\n",
        "Served requests measured in the steady state only (closed-loop, the window opens when "
        "`concurrency` requests are in flight with their first tokens, and closes when fewer "
        "remain; open-loop, at Poisson arrivals of `rate_rps`, it spans the arrivals after the "
        "first tenth). "
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
            "steady": _fmt(r["steady_s"]),
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
        ("steady", "steady s"),
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
                        "se": _fmt(r["accuracy_stderr"], 2),
                    }
                    for _, r in acc.iterrows()
                ],
                [("setup", "setup"), ("task", "task"), ("acc", "accuracy"), ("se", "stderr")],
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
