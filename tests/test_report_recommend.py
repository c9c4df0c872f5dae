"""`harness recommend` and the Pareto front on a made-up run whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from fakeruns import accuracy_case, infer_case, write_run

from harness.cli import main
from harness.report.load import open_run
from harness.report.recommend import candidates, pareto_mask, recommend
from harness.report.tables import build_tables

# setup: (accuracy, J per query at batch 8)
SETUPS = {"a": (0.9, 10.0), "b": (0.8, 4.0), "c": (0.6, 1.0), "d": (0.7, 5.0)}  # d: dominated by b


@pytest.fixture
def run(tmp_path):
    cases = []
    for model, (acc, e) in SETUPS.items():
        cases.append(infer_case(model, "fp32", "cpu", 1, 3 * e, rel_noise=0.01, trace=False))
        cases.append(infer_case(model, "fp32", "cpu", 8, e, rel_noise=0.01, trace=False))
        cases.append(accuracy_case(model, "fp32", "cpu", "arith", acc))
    return write_run(tmp_path, cases)


def test_pareto_mask():
    energy = np.array([1.0, 2.0, 2.0, 3.0, 4.0, np.nan, 1.0])
    accuracy = np.array([0.5, 0.6, 0.55, 0.6, 0.9, 0.99, 0.5])
    # (2, .55) is dominated by (2, .6); (3, .6) by (2, .6); the duplicate (1, .5) kept once
    assert pareto_mask(energy, accuracy).tolist() == [True, True, False, False, True, False, False]


def test_recommend_picks_the_cheapest_setup_meeting_the_target(run):
    # b: 0.8 over 200 samples, lower bound 0.74
    r = recommend(build_tables(open_run(run)), 0.7)
    assert r.chosen["setup"] == "b/fp32/cpu"
    assert r.most_accurate["setup"] == "a/fp32/cpu"
    assert r.saved_j == pytest.approx(6.0)
    assert r.saved_pct == pytest.approx(60.0)
    assert r.front["setup"].tolist() == ["c/fp32/cpu", "b/fp32/cpu", "a/fp32/cpu"]
    # the headline shape is the largest batch size
    assert set(r.candidates["batch_size"]) == {8}


def test_recommend_per_token_divides_by_tokens_per_query(run):
    r = recommend(build_tables(open_run(run)), 0.7, per="token")
    assert r.chosen["setup"] == "b/fp32/cpu"
    assert r.chosen["energy_per_token_j"] == pytest.approx(4.0 / 32)


def test_cli_recommend_prints_choice_front_and_saving(run, capsys):
    assert main(["recommend", str(run), "--min-accuracy", "0.7"]) == 0
    out = capsys.readouterr().out
    assert "recommended: b/fp32/cpu" in out
    assert "60.0%" in out and "6 J/query" in out
    front = out.split("Pareto front")[1]
    assert "a/fp32/cpu" in front and "c/fp32/cpu" in front and "d/fp32/cpu" not in front


def test_cli_recommend_exit_1_when_nothing_is_accurate_enough(run, capsys):
    assert main(["recommend", str(run), "--min-accuracy", "0.95"]) == 1
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1
    assert "best seen is 0.9" in out and "a/fp32/cpu" in out


def test_cli_recommend_bad_input_is_one_line_exit_2(run, tmp_path, capsys):
    assert main(["recommend", str(run), "--min-accuracy", "0.5", "--task", "nope"]) == 2
    assert main(["recommend", str(tmp_path / "missing"), "--min-accuracy", "0.5"]) == 2
    assert main(["recommend", str(run), "--min-accuracy", "7"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "nope" in err[0] and "Traceback" not in "".join(err)


def test_mean_over_tasks_leaves_out_setups_missing_a_task(tmp_path):
    cases = [
        infer_case("x", "fp32", "cpu", 8, 1.0, trace=False),
        accuracy_case("x", "fp32", "cpu", "t1", 0.9),
        infer_case("y", "fp32", "cpu", 8, 2.0, trace=False),
        accuracy_case("y", "fp32", "cpu", "t1", 0.6),
        accuracy_case("y", "fp32", "cpu", "t2", 0.8),
    ]
    tables = build_tables(open_run(write_run(tmp_path, cases)))
    cands, what = candidates(tables, None, "query")
    assert "mean" in what and cands["setup"].tolist() == ["y/fp32/cpu"]
    assert cands["accuracy"].iloc[0] == pytest.approx(0.7)
    by_task, _ = candidates(tables, "t1", "query")
    assert sorted(by_task["setup"]) == ["x/fp32/cpu", "y/fp32/cpu"]


# --------------------------------------------------------------------- bounds, methods, batch
def test_the_target_is_met_by_the_lower_bound_unless_asked_for_the_point(run, capsys):
    tables = build_tables(open_run(run))
    # b: 0.8 over 200 samples; its 95% lower bound (0.74) does not show 0.75
    assert recommend(tables, 0.75).chosen["setup"] == "a/fp32/cpu"
    assert recommend(tables, 0.75, by="point").chosen["setup"] == "b/fp32/cpu"
    assert main(["recommend", str(run), "--min-accuracy", "0.75", "--accuracy-by", "point"]) == 0
    out = capsys.readouterr().out
    assert "recommended: b/fp32/cpu" in out and "point estimate" in out


def test_measured_and_estimated_setups_are_never_on_one_front(tmp_path, capsys):
    cases = []
    for model, acc, e, method in (
        ("m1", 0.9, 10.0, "measured"),
        ("m2", 0.7, 4.0, "measured"),
        ("e1", 0.95, 1.0, "estimated"),  # an estimate that would dominate both
    ):
        cases.append(infer_case(model, "fp32", "cpu", 8, e, trace=False, method=method))
        cases.append(accuracy_case(model, "fp32", "cpu", "arith", acc, method=method))
    run = write_run(tmp_path, cases)
    r = recommend(build_tables(open_run(run)), 0.6)
    assert set(r.candidates["energy_method"]) == {"measured"}
    assert r.front["setup"].tolist() == ["m2/fp32/cpu", "m1/fp32/cpu"]
    assert r.chosen["setup"] == "m2/fp32/cpu" and r.left_out["setup"].tolist() == ["e1/fp32/cpu"]
    est = recommend(build_tables(open_run(run)), 0.6, method="estimated")
    assert est.front["setup"].tolist() == ["e1/fp32/cpu"]
    assert main(["recommend", str(run), "--min-accuracy", "0.6"]) == 0
    assert "estimated energy left out" in capsys.readouterr().out


def test_setups_are_compared_at_one_batch_size(tmp_path, capsys):
    cases = [
        # x measured batch 1 and 8; y only batch 1: the common batch size is 1
        infer_case("x", "fp32", "cpu", 1, 3.0, trace=False),
        infer_case("x", "fp32", "cpu", 8, 1.0, trace=False),
        accuracy_case("x", "fp32", "cpu", "arith", 0.9),
        infer_case("y", "fp32", "cpu", 1, 2.0, trace=False),
        accuracy_case("y", "fp32", "cpu", "arith", 0.9),
    ]
    run = write_run(tmp_path, cases)
    tables = build_tables(open_run(run))
    r = recommend(tables, 0.5)
    # at its headline batch 8, x (1 J) would beat y (2 J at batch 1): not a fair comparison
    assert r.batch_size == 1 and set(r.candidates["batch_size"]) == {1}
    assert r.chosen["setup"] == "y/fp32/cpu"
    at8 = recommend(tables, 0.5, batch_size=8)
    assert at8.candidates["setup"].tolist() == ["x/fp32/cpu"]
    assert main(["recommend", str(run), "--min-accuracy", "0.5"]) == 0
    assert "compared at batch size 1" in capsys.readouterr().out


def test_no_shared_batch_size_is_said(tmp_path, capsys):
    cases = [
        infer_case("x", "fp32", "cpu", 8, 1.0, trace=False),
        accuracy_case("x", "fp32", "cpu", "arith", 0.9),
        infer_case("y", "fp32", "cpu", 1, 2.0, trace=False),
        accuracy_case("y", "fp32", "cpu", "arith", 0.9),
    ]
    run = write_run(tmp_path, cases)
    assert main(["recommend", str(run), "--min-accuracy", "0.5"]) == 0
    assert "share no batch size" in capsys.readouterr().out


def test_setups_scored_without_an_energy_per_query_are_named_not_dropped(tmp_path, capsys):
    # a served variant: an accuracy, its energy per request in the Serving section only
    cases = [
        infer_case("a", "fp32", "cpu", 8, 10.0, trace=False),
        accuracy_case("a", "fp32", "cpu", "arith", 0.9),
        accuracy_case("a", "q4_0", "cpu", "arith", 0.9),
    ]
    path = write_run(tmp_path, cases)
    r = recommend(build_tables(open_run(path)), 0.5)
    assert r.chosen["setup"] == "a/fp32/cpu" and r.unpriced == ["a/q4_0/cpu"]
    assert main(["recommend", str(path), "--min-accuracy", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "note: 1 setup with an accuracy but no J/query not weighed" in out
    assert out.split("not weighed")[1].split("\n")[0].endswith("a/q4_0/cpu")


def test_setups_that_share_no_batch_size_are_not_weighed_at_their_own(tmp_path, capsys):
    # x and z at batch 8, y at batch 1 only: y (2 J at batch 1) was weighed against x (1 J at
    # batch 8), each at its own largest batch; now all at batch 8, y named as not compared
    cases = [
        infer_case("x", "fp32", "cpu", 8, 1.0, trace=False),
        accuracy_case("x", "fp32", "cpu", "arith", 0.9),
        infer_case("z", "fp32", "cpu", 8, 1.5, trace=False),
        accuracy_case("z", "fp32", "cpu", "arith", 0.9),
        infer_case("y", "fp32", "cpu", 1, 0.5, trace=False),
        accuracy_case("y", "fp32", "cpu", "arith", 0.9),
    ]
    run = write_run(tmp_path, cases)
    r = recommend(build_tables(open_run(run)), 0.5)
    assert sorted(r.candidates["setup"]) == ["x/fp32/cpu", "z/fp32/cpu"]
    assert set(r.candidates["shape"]) == {"batch 8"} and r.chosen["setup"] == "x/fp32/cpu"
    assert r.not_at_shape == ["y/fp32/cpu (batch 1)"]
    assert main(["recommend", str(run), "--min-accuracy", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "compared at batch 8 (the setups share no batch size); not compared" in out
    header = out.split("Pareto front")[1].splitlines()[1]
    assert "shape" in header.split()
