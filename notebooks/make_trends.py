"""Write notebooks/trends.ipynb (outputs cleared). Run after editing the cells below:

python notebooks/make_trends.py
"""

from __future__ import annotations

from nbkit import notebook, write

CELLS = [
    (
        "md",
        """# Trends of a scheduled suite

The runs of one suite over time (a nightly `harness run` from cron, a systemd timer or CI): each
setup's energy per token, energy per query and accuracy per run, with the changes that
`harness compare` flags as regressions against the run before marked in red. The same view as the
History tab of `harness site`.

Set `HARNESS_RUNS_DIR` to the folder of runs (default: `$HARNESS_RESULTS`, else `results/`) and
`HARNESS_SUITE` to choose a suite (default: the suite with the most runs).""",
    ),
    (
        "code",
        """import os
from collections import Counter
from pathlib import Path

from harness.report.load import open_runs

RUNS_DIR = Path(os.environ.get("HARNESS_RUNS_DIR") or os.environ.get("HARNESS_RESULTS") or "results")
runs = open_runs([RUNS_DIR])
counts = Counter(r.suite_name for r in runs)
SUITE = os.environ.get("HARNESS_SUITE") or counts.most_common(1)[0][0]
runs = [r for r in runs if r.suite_name == SUITE]
if len(runs) < 2:
    raise ValueError(f"suite {SUITE!r} has {len(runs)} run(s) in {RUNS_DIR}: trends need two or more")
print(f"suite {SUITE}: {len(runs)} runs in {RUNS_DIR}, {runs[0].started} to {runs[-1].started}")""",
    ),
    (
        "md",
        """## Each setup per run

One row per run and setup, at the setup's headline inference shape (its largest batch size). Energy
figures are medians over repetitions, labelled with how they were obtained (`energy_method`).""",
    ),
    (
        "code",
        """import pandas as pd

from harness.report.site import DEFAULT_THRESHOLD, HISTORY_METRICS, history
from harness.report.tables import build_tables

THRESHOLD = float(os.environ.get("HARNESS_THRESHOLD") or DEFAULT_THRESHOLD)
points, regressions = history([build_tables(r) for r in runs], THRESHOLD)
points["started"] = pd.to_datetime(points["started"], utc=True)
points.pivot_table(
    index=["setup", "energy_method"], columns="started", values="energy_per_token_j"
).rename(columns=lambda t: t.strftime("%Y-%m-%d %H:%M"))""",
    ),
    (
        "md",
        """## Over time

Lines: each setup's figure per run. Red crosses: runs in which `harness compare` found the change
against the run before beyond noise (the 95% intervals do not overlap) and past the threshold.""",
    ),
    (
        "code",
        """import io

import matplotlib.pyplot as plt
from IPython.display import Image, display

LABEL = {
    "energy_per_token_j": "energy per token (J)",
    "energy_per_query_j": "energy per query (J)",
    "accuracy": "accuracy (fraction)",
}
fig, axes = plt.subplots(len(HISTORY_METRICS), 1, figsize=(9, 3.2 * len(HISTORY_METRICS)), sharex=True)
for ax, metric in zip(axes, HISTORY_METRICS):
    for (setup, method), p in points.sort_values("started").groupby(["setup", "energy_method"]):
        p = p.dropna(subset=[metric])
        if len(p):
            ax.plot(p["started"], p[metric], marker="o", label=f"{setup} ({method})")
    flagged = regressions[regressions["metric"] == metric].merge(points, on=["run_id", "setup"])
    flagged = flagged.dropna(subset=[metric])
    if len(flagged):
        ax.scatter(flagged["started"], flagged[metric], marker="x", s=120, color="red", zorder=5,
                   label="regression (harness compare)")
    ax.set_ylabel(LABEL[metric])
    ax.grid(alpha=0.3)
axes[0].set_title(f"{SUITE}: {len(runs)} runs")
axes[0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
axes[-1].set_xlabel("run started (UTC)")
fig.autofmt_xdate()
fig.tight_layout()
png = io.BytesIO()
fig.savefig(png, format="png", dpi=100)
plt.close(fig)
display(Image(data=png.getvalue()))  # shown whatever the backend (also Agg, as in tests)""",
    ),
    (
        "md",
        """## Regressions

Every change `harness compare` flags between consecutive runs: energy on the setup's headline
case, accuracy on any of its tasks, and cases that were ok and then failed (`status`).""",
    ),
    (
        "code",
        """print(f"{len(regressions)} regressions (threshold {THRESHOLD:g}) in {len(runs) - 1} comparisons")
regressions.assign(change=regressions["change_rel"].map(lambda v: "" if pd.isna(v) else f"{100 * v:+.1f}%"))[
    ["run_id", "base_run_id", "setup", "metric", "base", "new", "change", "note"]
]""",
    ),
]


def build():
    return notebook(CELLS)


if __name__ == "__main__":
    write(build(), "trends.ipynb")
