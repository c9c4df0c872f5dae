"""`harness report` on synthetic runs: every file, valid PNG figures, honest labels."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from fakeruns import command_case, infer_case, standard_cases, write_run
from PIL import Image

from harness.cli import main
from harness.report import build_report
from harness.report.plots import FIGURES, method_note

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_report_writes_every_file_and_valid_pngs(tmp_path, capsys):
    run = write_run(tmp_path, standard_cases() + [command_case("script", "cpu", [5.0, 6.0, 7.0])])
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out.strip()
    assert out == str(run / "report")
    report = run / "report"
    for name in ("summary.csv", "leaderboard.csv", "cases.csv", "report.md"):
        assert (report / name).stat().st_size > 0, name
    pngs = sorted((report / "figures").glob("*.png"))
    assert sorted(p.name for p in pngs) == sorted(FIGURES)
    for p in pngs:
        assert p.read_bytes()[:8] == PNG_SIGNATURE, p
        with Image.open(p) as im:
            im.verify()
        with Image.open(p) as im:
            assert im.size[0] >= 600 and im.size[1] >= 400
    md = (report / "report.md").read_text()
    for p in pngs:
        assert f"(figures/{p.name})" in md
    for heading in ("## Summary", "## Leaderboard", "## Carbon", "## Lifetime", "## Commands"):
        assert heading in md
    assert "measured" in md and "codecarbon data for FRA" in md
    assert not list(report.rglob(".*tmp*")), "no temporary files left behind"


def test_report_of_an_estimated_run_says_so(tmp_path):
    cases = [infer_case("m", "fp32", "cpu", b, 1.0 / b, method="estimated") for b in (1, 4)]
    run = write_run(tmp_path, cases)
    assert main(["report", str(run)]) == 0
    md = (run / "report" / "report.md").read_text()
    assert "**Energy**: estimated" in md and "not a sensor" in md
    # no accuracy, no training: those figures are skipped, the rest drawn
    names = {p.name for p in (run / "report" / "figures").glob("*.png")}
    assert names == {"batch_scaling.png", "power_traces.png", "energy_per_token_vs_params.png"}


def test_method_note():
    assert method_note(["measured", "measured"]) == "energy measured by sensors"
    assert "ESTIMATED" in method_note(["estimated"])
    both = method_note(["measured", "estimated", None])
    assert "measured" in both and "estimated" in both and "never pooled" in both


@pytest.mark.parametrize("kind", ["missing", "plain", "file"])
def test_not_a_run_folder_is_one_line_exit_2(tmp_path, capsys, kind):
    path = tmp_path / "x"
    if kind == "plain":
        path.mkdir()
    elif kind == "file":
        path.write_text("hello")
    assert main(["report", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0]


def test_a_failed_case_is_listed(tmp_path):
    cases = standard_cases()
    broken = infer_case("tiny-s", "fp32", "cpu", 16, 1.0, trace=False)
    broken.status, broken.error, broken.reps = "failed", "out of memory", broken.reps[:1]
    report = build_report(write_run(tmp_path, cases + [broken]), figures=False)
    md = (report / "report.md").read_text()
    assert "## Failed cases" in md and "out of memory" in md and "(1 failed)" in md


def test_every_pareto_front_setup_is_labelled(tmp_path, monkeypatch):
    """Labels were measured before the figure's first draw, got stale boxes, and were dropped."""
    from harness.report import plots

    drawn = []
    real = plots._label_points

    def counting(ax, points, *args, **kwargs):
        n = real(ax, points, *args, **kwargs)
        drawn.append((n, len(points)))
        return n

    monkeypatch.setattr(plots, "_label_points", counting)
    run = write_run(tmp_path, standard_cases())
    build_report(run)
    assert drawn, "the Pareto figure labelled nothing"
    n, wanted = drawn[0]
    assert wanted >= 2
    assert n == wanted


def test_the_report_says_why_each_case_stopped(tmp_path):
    cases = standard_cases()
    noisy = infer_case("tiny-s", "fp32", "edge", 8, 1.0, reps=10, rel_noise=0.3, trace=False)
    cases.append(noisy)
    run = write_run(tmp_path, cases)
    result = next(p for p in (run / "cases").glob("*/result.json") if noisy.case_id in str(p))
    data = json.loads(result.read_text())
    for rep in data["repetitions"]:
        rep["stop_reason"] = "max_repeats"
    result.write_text(json.dumps(data))
    (run / "measurements.parquet").unlink()  # rebuilt from the result files
    text = (build_report(run, figures=False) / "report.md").read_text()
    section = text.split("## Repetitions and stopping")[1]
    assert "**max_repeats**: 1 cases" in section and "noisy figures" in section
    line = next(ln for ln in section.splitlines() if noisy.case in ln)
    assert "| 10 | max_repeats |" in line
    cases_csv = pd.read_csv(run / "report" / "cases.csv")
    assert "stop_reason" in cases_csv.columns
