"""Reports of a run: statistics, summary and leaderboard tables, carbon, figures, report.md.

``build_report(run_dir)`` is what ``harness run`` calls at its end and ``harness report`` runs.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["build_report"]


def build_report(run_dir: str | os.PathLike, *, figures: bool = True) -> Path:
    """Write ``run_dir/report/`` (summary.csv, leaderboard.csv, cases.csv, report.md, figures/).

    Returns the report folder. A path that is not a run folder raises HarnessError.
    ``figures=False`` skips the plots (most of the time a report takes).
    """
    from harness import store
    from harness.report import measurements, sections
    from harness.report.analysis import Analysis
    from harness.report.csvfiles import write_csv
    from harness.report.load import open_run

    analysis = Analysis(open_run(run_dir))
    tables = analysis.tables
    out = analysis.run.path / "report"
    out.mkdir(exist_ok=True)
    measurements.write(tables, analysis.making.produced)  # produce_j, embodied_g, co2e_total_g
    _write_checked_measurements(analysis.run)
    _write_carbon(tables, out)
    for section in sections.applying(analysis):
        for name, frame in section.tables(analysis).items():
            write_csv(frame, out / name)
    if figures:
        sections.draw(analysis, out / "figures")
    store.write_text(out / "report.md", sections.render(analysis))
    return out


def _write_carbon(tables, out: Path) -> None:
    """report/embodied.json (what the embodied figures rest on) and report/boamps/<case_id>.json
    (each training and inference case in the BoAmps format, where codecarbon ships it)."""
    from harness import store
    from harness.carbon import boamps

    if tables.accounting is not None:
        store.write_json(out / "embodied.json", tables.accounting.to_dict())
    if boamps.available():
        folder = out / "boamps"
        folder.mkdir(exist_ok=True)
        for case_id, report in boamps.reports(tables.run, tables.run.frame).items():
            store.write_json(folder / f"{case_id}.json", report)


def _write_checked_measurements(run) -> None:
    """measurements.parquet and .csv with each row's ``check`` and ``check_rules`` (harness check).

    The runner writes them after each case without a verdict (the rules need the whole case);
    the report adds it, row for row, to the table as the runner wrote it.
    """
    from harness import store

    frame = store.load_results(run.path)
    if len(frame) != len(run.frame) or "check" not in run.frame.columns:
        return
    frame["check"] = run.frame["check"].to_numpy()
    frame["check_rules"] = run.frame["check_rules"].to_numpy()
    store.write_parquet(run.path / store.MEASUREMENTS_PARQUET, frame)
    store.write_csv(run.path / store.MEASUREMENTS_CSV, frame)
