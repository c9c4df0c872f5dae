"""Write notebooks/analysis.ipynb (outputs cleared). Run after editing the cells below:

python notebooks/make_analysis.py
"""

from __future__ import annotations

from nbkit import notebook, write

CELLS = [
    (
        "md",
        """# Analysis of one harness run

What a run cost in energy and carbon, and what it bought in accuracy and speed. The notebook reads a
run folder (`results/<run_id>/`), shows the summary per setup (model × variant × hardware), the
Pareto front of accuracy against energy, and the carbon figures.

Set `HARNESS_RUN_DIR` to choose a run; by default the newest run under `results/` is used.""",
    ),
    (
        "code",
        """import json
import os
from pathlib import Path


def newest_run() -> Path:
    \"\"\"The run folder under results/ (or $HARNESS_RESULTS) that started last.\"\"\"
    roots = [Path(os.environ.get("HARNESS_RESULTS", "results")), Path("results"), Path("../results")]
    runs = [m.parent for root in roots if root.is_dir() for m in root.glob("*/manifest.json")]
    if not runs:
        raise FileNotFoundError("no run folder under results/: set HARNESS_RUN_DIR to one")

    def started(run: Path) -> tuple[str, str]:
        manifest = json.loads((run / "manifest.json").read_text())
        return (str(manifest.get("started") or ""), run.name)

    return max(runs, key=started)


RUN_DIR = Path(os.environ.get("HARNESS_RUN_DIR") or newest_run())
print("run folder:", RUN_DIR)""",
    ),
    (
        "code",
        """import pandas as pd

import harness

df = harness.load_results(RUN_DIR)
pd.set_option("display.max_columns", 40)
print(f"{len(df)} repetitions in {df['case_id'].nunique()} cases")
df.groupby(["workload", "status", "energy_method"], dropna=False).size().rename("repetitions").to_frame()""",
    ),
    (
        "md",
        """## Summary per setup

One row per setup at its **headline shape** (the largest batch size measured). Each figure is the
median over repetitions; the `_ci_low`/`_ci_high` columns in `summary.csv` give the 95% interval.
`energy_method` says whether a sensor measured the energy or a model estimated it: the two are
never mixed in one number.""",
    ),
    (
        "code",
        """from harness.report.load import open_run
from harness.report.tables import build_tables

tables = build_tables(open_run(RUN_DIR))
setups = tables.setups.reset_index()
view = [
    "model", "variant", "hardware", "energy_method", "accuracy", "headline_batch_size",
    "energy_per_query_j", "energy_per_token_j", "wh_per_1000_queries", "tokens_per_s",
    "energy_to_train_j",
]
setups[[c for c in view if c in setups.columns]]""",
    ),
    (
        "md",
        """## Accuracy against energy

Each point is a setup; the black staircase is the Pareto front: no other setup is both cheaper and
more accurate. The title says whether the energy was measured or estimated.""",
    ),
    (
        "code",
        """import tempfile

from IPython.display import Image, display

from harness.report import plots

figures = Path(tempfile.mkdtemp(prefix="harness-figures-"))
pareto_png = plots.pareto(tables, figures / "pareto.png")
if pareto_png is None:
    print("no Pareto front: the run has no setup with both an accuracy and an inference energy")
else:
    display(Image(filename=str(pareto_png)))""",
    ),
    (
        "md",
        """## Carbon

CO2e = energy × PUE × grid intensity. The intensity comes from the suite's `carbon` block
(codecarbon's data for a country, or a number given in the suite).""",
    ),
    (
        "code",
        """grid = tables.grid
if grid.known:
    print(f"grid intensity: {grid.intensity_g_per_kwh:g} gCO2e/kWh ({grid.source}), PUE {grid.pue:g}")
else:
    print("the suite gave no carbon block: no CO2e figures")
carbon = [
    "model", "variant", "hardware", "energy_method", "headline_batch_size",
    "co2e_g_per_1000_queries", "co2e_g_per_training_run", "break_even_queries", "co2e_lifetime_g",
]
setups[[c for c in carbon if c in setups.columns]]""",
    ),
]


def build():
    return notebook(CELLS)


if __name__ == "__main__":
    write(build(), "analysis.ipynb")
