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
    from harness.report import techniques
    from harness.report.csvfiles import write_csv
    from harness.report.leaderboard import leaderboard
    from harness.report.load import open_run
    from harness.report.markdown import render
    from harness.report.plots import draw_all
    from harness.report.tables import build_tables

    run = open_run(run_dir)
    tables = build_tables(run)
    out = run.path / "report"
    out.mkdir(exist_ok=True)
    board = leaderboard(tables)
    making = techniques.build(tables)
    from harness.report import measurements

    measurements.write(tables, making.produced)  # produce_j, embodied_g, co2e_total_g filled
    write_csv(techniques.summary_with_produce(tables, making), out / "summary.csv")
    write_csv(board, out / "leaderboard.csv")
    write_csv(tables.cases, out / "cases.csv")
    _write_checked_measurements(run)
    _write_carbon(tables, out)
    if not making.techniques.empty:
        write_csv(making.techniques, out / "techniques.csv")
    if not making.forecasts.empty:
        write_csv(making.forecasts, out / "forecasts.csv")
    drawn = draw_all(tables, out / "figures") if figures else {}
    from harness.report import serving

    served = serving.serve_table(run.frame)
    if not served.empty:
        write_csv(served, out / "serving.csv")
        if figures and (drawn_serving := serving.figure(served, out / "figures" / "serving.png")):
            drawn["serving.png"] = drawn_serving
    from harness.report.markdown import checks_lines

    opening, checks = checks_lines(tables.verdicts)
    text = techniques.with_techniques(
        render(tables, board, drawn),
        making.sentence,
        [*techniques.sections(making, tables), checks],
    )
    lines = text.split("\n")
    at = 3 if making.sentence else 1  # under the title and its answer: the checks' counts
    lines[at:at] = opening
    text = "\n".join(lines)
    from harness import store

    store.write_text(out / "report.md", text)
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
