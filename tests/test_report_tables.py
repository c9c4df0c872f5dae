"""summary.csv and leaderboard.csv: shape, order, CSV safety, the latest row over many runs."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from fakeruns import accuracy_case, infer_case, standard_cases, train_case, write_run

from harness.cli import main
from harness.csvsafe import neutralise, to_csv_text
from harness.report import build_report
from harness.report.leaderboard import COLUMNS

EVIL = '=HYPERLINK("http://x","y")'
DOCS = Path(__file__).resolve().parents[1] / "docs" / "leaderboard.md"


def _read(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_formula_cells_cannot_execute(tmp_path):
    cases = [
        train_case(EVIL, "+v", "@hw", [10.0, 10.0]),
        infer_case(EVIL, "+v", "@hw", 8, 2.0, trace=False),
        accuracy_case(EVIL, "+v", "@hw", "t", 0.5),
    ]
    report = build_report(write_run(tmp_path, cases), figures=False)
    for name in ("leaderboard.csv", "summary.csv", "cases.csv"):
        rows = _read(report / name)
        assert rows, name
        for row in rows:
            assert row["model"] == "'" + EVIL, name
            assert row["variant"] == "'+v" and row["hardware"] == "'@hw"
            for value in row.values():
                assert not (value or "x").startswith(("=", "+", "@", "\t", "\r")), (name, value)
    board = pd.read_csv(report / "leaderboard.csv")
    assert board["energy_per_query_j"].dtype.kind == "f" and board["batch_size"].iloc[0] == 8
    # the markdown report shows the name as text too
    assert "HYPERLINK" in (report / "report.md").read_text()


def test_numbers_stay_numbers_and_negative_numbers_are_not_text():
    frame = pd.DataFrame({"x": [-0.5, 2.0], "name": ["-rm", "ok"], "t": ["\tx", "\rz"]})
    text = to_csv_text(frame)
    assert text.startswith('"x","name","t"\n-0.5,"\'-rm","\'\tx"\n2.0,"ok","\'\rz"\n')
    back = pd.read_csv(__import__("io").StringIO(text))
    assert back["x"].tolist() == [-0.5, 2.0]
    assert neutralise(frame)["name"].tolist() == ["'-rm", "ok"]


def test_leaderboard_columns_order_and_docs(tmp_path):
    report = build_report(write_run(tmp_path, standard_cases()), figures=False)
    with (report / "leaderboard.csv").open() as f:
        header = next(csv.reader(f))
    assert header == COLUMNS
    documented = re.findall(r"^\| \d+ \| `([a-z0-9_]+)` \|", DOCS.read_text(), flags=re.M)
    assert documented == COLUMNS
    rows = _read(report / "leaderboard.csv")
    assert {r["schema_version"] for r in rows} == {"2"}
    acc = [float(r["accuracy"]) for r in rows]
    assert acc == sorted(acc, reverse=True)
    assert all(r["batch_size"] == "8" for r in rows)  # headline: the largest batch measured


def test_ties_in_accuracy_sort_by_energy(tmp_path):
    cases = []
    for model, e in (("hi", 3.0), ("lo", 1.0), ("mid", 2.0)):
        cases += [
            infer_case(model, "fp32", "cpu", 4, e, trace=False),
            accuracy_case(model, "fp32", "cpu", "t", 0.5),
        ]
    rows = _read(build_report(write_run(tmp_path, cases), figures=False) / "leaderboard.csv")
    assert [r["model"] for r in rows] == ["lo", "mid", "hi"]


def test_summary_has_a_row_per_setup_and_shape_columns(tmp_path):
    report = build_report(write_run(tmp_path, standard_cases()), figures=False)
    summary = pd.read_csv(report / "summary.csv")
    assert len(summary) == 4  # 2 models x 2 variants on one hardware
    for col in (
        "energy_per_token_j_b1",
        "energy_per_token_j_b8",
        "energy_per_token_j_b8_ci_low",
        "energy_per_token_j_b8_ci_high",
        "tokens_per_s_b8",
        "n_b8",
        "accuracy_arith_mc",
        "accuracy_arith_mc_ci_low",
        "energy_to_train_j",
        "co2e_g_per_1000_queries_b8",
        "break_even_queries",
    ):
        assert col in summary.columns, col
    row = summary[(summary["model"] == "tiny-l") & (summary["variant"] == "fp32")].iloc[0]
    # standard_cases: tiny-l fp32 at batch 8 costs 8 * 0.3 = 2.4 J per query, 32 tokens per query
    assert row["energy_per_query_j_b8"] == pytest.approx(2.4)
    assert row["energy_per_token_j_b8"] == pytest.approx(2.4 / 32)
    assert row["energy_to_train_j"] == pytest.approx(3 * 800.0)
    assert row["n_b8"] == 3


def test_mixed_methods_are_separate_rows(tmp_path):
    cases = standard_cases() + [
        infer_case("tiny-s", "fp32", "edge", 8, 0.5, method="estimated", trace=False)
    ]
    cases += [infer_case("tiny-s", "fp32", "edge", 1, 0.9, trace=False)]
    report = build_report(write_run(tmp_path, cases), figures=False)
    summary = pd.read_csv(report / "summary.csv")
    edge = summary[summary["hardware"] == "edge"].set_index("energy_method")
    assert sorted(edge.index) == ["estimated", "measured"]
    assert edge.loc["estimated", "energy_per_query_j_b8"] == pytest.approx(0.5)
    assert pd.isna(edge.loc["estimated", "energy_per_query_j_b1"])
    assert edge.loc["measured", "energy_per_query_j_b1"] == pytest.approx(0.9)
    assert "estimated" in (report / "report.md").read_text()


def test_leaderboard_over_runs_keeps_the_latest_row_per_key(tmp_path, capsys):
    old = write_run(tmp_path, standard_cases(scale=1.0), suite="s", started="2025-01-01T00:00:00Z")
    new = write_run(
        tmp_path, standard_cases(scale=2.0)[:5], suite="s", started="2025-02-01T00:00:00Z"
    )
    out = tmp_path / "board.csv"
    # given newest first: order on the command line does not matter
    assert main(["leaderboard", str(new), str(old), "-o", str(out)]) == 0
    rows = {(r["model"], r["variant"], r["batch_size"]): r for r in _read(out)}
    # standard_cases()[:5]: tiny-s fp32 at batches 1 and 8 (headline 8), tiny-s int8 at batch 1
    # only (a new key); the other rows stay those of the old run
    assert len(rows) == 5
    assert rows[("tiny-s", "fp32", "8")]["run_id"] == new.name
    assert float(rows[("tiny-s", "fp32", "8")]["energy_per_query_j"]) == pytest.approx(0.6)
    assert rows[("tiny-s", "int8", "1")]["run_id"] == new.name
    assert rows[("tiny-s", "int8", "8")]["run_id"] == old.name
    assert rows[("tiny-l", "fp32", "8")]["run_id"] == old.name
    capsys.readouterr()
    # a folder of runs works too, and stdout is the default
    assert main(["leaderboard", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert next(csv.reader(text.splitlines())) == COLUMNS and new.name in text


def test_leaderboard_bad_paths_exit_2(tmp_path, capsys):
    assert main(["leaderboard", str(tmp_path / "nope")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["leaderboard", str(tmp_path / "empty")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 2


# --------------------------------------------------------------------- leaderboard key and merging
def _on_host(cases, host):
    for c in cases:
        for rep in c.reps:
            rep["node"] = host
    return cases


def test_rows_from_two_machines_never_overwrite_each_other(tmp_path):
    a = write_run(
        tmp_path, _on_host(standard_cases(), "host-a"), suite="s", started="2025-01-01T00:00:00Z"
    )
    b = write_run(
        tmp_path,
        _on_host(standard_cases(scale=3.0), "host-b"),
        suite="s",
        started="2025-01-02T00:00:00Z",
    )
    out = tmp_path / "board.csv"
    assert main(["leaderboard", str(a), str(b), "-o", str(out)]) == 0
    rows = _read(out)
    hosts = {(r["model"], r["variant"], r["batch_size"], r["host"]) for r in rows}
    assert len(rows) == 8 and {h for *_, h in hosts} == {"host-a", "host-b"}
    assert {r["device"] for r in rows} == {"cpu"}


def test_a_newer_row_without_accuracy_keeps_the_older_accuracy(tmp_path):
    old = write_run(tmp_path, standard_cases(), suite="s", started="2025-01-01T00:00:00Z")
    energy_only = [c for c in standard_cases(scale=2.0) if c.workload != "accuracy"]
    new = write_run(tmp_path, energy_only, suite="s", started="2025-02-01T00:00:00Z")
    out = tmp_path / "board.csv"
    assert main(["leaderboard", str(old), str(new), "-o", str(out)]) == 0
    rows = _read(out)
    assert len(rows) == 4 and all(r["run_id"] == new.name for r in rows)
    assert all(r["accuracy"] != "" and r["accuracy_run_id"] == old.name for r in rows)
    old_rows = {(r["model"], r["variant"]): r["accuracy"] for r in _read_board(old, tmp_path)}
    assert {(r["model"], r["variant"]): r["accuracy"] for r in rows} == old_rows


def _read_board(run, tmp_path):
    out = tmp_path / f"{run.name}.csv"
    assert main(["leaderboard", str(run), "-o", str(out)]) == 0
    return _read(out)


def test_leaderboard_csvs_merge_unless_their_schema_differs(tmp_path, capsys):
    old = write_run(tmp_path / "runs", standard_cases(), suite="s", started="2025-01-01T00:00:00Z")
    new = write_run(
        tmp_path / "runs", standard_cases(scale=2.0)[:5], suite="s", started="2025-02-01T00:00:00Z"
    )
    board = tmp_path / "old.csv"
    assert main(["leaderboard", str(old), "-o", str(board)]) == 0
    merged, direct = tmp_path / "merged.csv", tmp_path / "direct.csv"
    assert main(["leaderboard", str(board), str(new), "-o", str(merged)]) == 0
    assert main(["leaderboard", str(old), str(new), "-o", str(direct)]) == 0
    assert _read(merged) == _read(direct)
    # a version-1 board: its columns mean something else; refused in one line
    v1 = pd.read_csv(board)
    v1["schema_version"] = 1
    v1.drop(columns=["device", "host", "accuracy_run_id"]).to_csv(tmp_path / "v1.csv", index=False)
    capsys.readouterr()
    assert main(["leaderboard", str(tmp_path / "v1.csv"), str(new)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "schema_version 1" in err[0] and "Traceback" not in err[0]


def test_the_report_uses_the_intensity_recorded_in_the_run(tmp_path):
    from harness.report.load import open_run
    from harness.report.tables import build_tables

    # the run recorded 999 g/kWh for its country when it ran; today's data say otherwise
    run = write_run(tmp_path, standard_cases(), carbon={"country": "FRA", "pue": 1.1})
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["carbon"] = {"country": "FRA", "pue": 1.1, "intensity_g_per_kwh": 999.0, "origin": "x"}
    (run / "manifest.json").write_text(json.dumps(manifest))
    grid = build_tables(open_run(run)).grid
    assert grid.intensity_g_per_kwh == 999.0 and grid.pue == 1.1
    assert "recorded" in grid.source


def test_warnings_that_differ_only_in_their_numbers_are_one_line_with_their_range(tmp_path):
    case = infer_case("m", "fp32", "cpu", 1, 2.0, reps=3, trace=False)
    texts = [
        "58% of tokens came together;the client used 18% of one core",
        "53% of tokens came together;window of 0.0171 s is short;the client used 20% of one core",
        "47% of tokens came together",
    ]
    for row, text in zip(case.reps, texts, strict=True):
        row["warnings"] = text
    md = (build_report(write_run(tmp_path, [case]), figures=False) / "report.md").read_text()
    section = md.split("## Warnings", 1)[1]
    assert "  - 47–58% of tokens came together (3 of 3 windows)" in section
    assert "  - the client used 18–20% of one core (2 of 3 windows)" in section
    assert "  - window of 0.0171 s is short (1 of 3 windows)" in section
    assert "53%" not in section  # no near-copy a window
