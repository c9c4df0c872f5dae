"""Comparisons between setups at a shape both measured, and savings told apart from noise.

Each test plants a run in which the figure the report used to print was wrong (issue 24): a
variant measured only at batch 1 against its source's batch 8, a magnitude-pruned variant 3%
cheaper by chance, a break-even of "never" where an input was missing, a point estimate judged
within the accuracy tolerance with intervals wider than the tolerance.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
from fakeruns import accuracy_case, infer_case, train_case, write_run

from harness.report.load import open_run
from harness.report.shapes import Shapes
from harness.report.tables import build_tables
from harness.report.techniques import break_even_text, build


def _with(case, **extra):
    for r in case.reps:
        r.update(extra)
    return case


def _making(tmp_path, cases, **report):
    run = write_run(tmp_path, cases, report={"queries_lifetime": 1000, **report} or None)
    # rebuilt from the results, which carry every column (the fake parquet keeps only the known)
    (run / "measurements.parquet").unlink()
    (run / "measurements.csv").unlink()
    tables = build_tables(open_run(run))
    return tables, build(tables)


INT8 = {"quantization": "int8-dynamic", "produce_variant_j": 2.0, "model_size_mb": 8.0}


def _int8_at_batch_1_only():
    # fp32 at batch 1 (1.0 J/query) and batch 8 (0.142 J/query); int8 at batch 1 only (0.89)
    return [
        train_case("tiny-l", "fp32", "cpu", [100.0] * 4, params=8e6),
        infer_case("tiny-l", "fp32", "cpu", 1, 1.0, params=8e6, rel_noise=0.01),
        infer_case("tiny-l", "fp32", "cpu", 8, 0.142, params=8e6, rel_noise=0.01),
        _with(infer_case("tiny-l", "int8", "cpu", 1, 0.89, params=8e6, rel_noise=0.01), **INT8),
        accuracy_case("tiny-l", "fp32", "cpu", "arith_mc", 0.80, params=8e6),
        _with(accuracy_case("tiny-l", "int8", "cpu", "arith_mc", 0.80, params=8e6), **INT8),
    ]


def test_a_variant_measured_at_batch_1_only_is_compared_at_batch_1(tmp_path):
    # at each one's largest batch, int8 "cost 526% more" per query, break-even "never"
    tables, making = _making(tmp_path, _int8_at_batch_1_only())
    t = making.techniques.set_index("setup").loc["tiny-l/int8/cpu"]
    assert t["energy_per_query_pct"] == pytest.approx(89, rel=0.01)
    assert t["break_even_queries"] == pytest.approx(2.0 / 0.11, rel=0.02)
    assert t["shape"] == "batch 1" and t["saving"] == "saves"
    assert break_even_text(t.to_dict()) != "never"
    assert "both at batch 1, it saves 11% energy per query (95% interval" in making.sentence
    assert "526" not in making.sentence
    shapes = Shapes(tables)
    key, src = ("tiny-l", "int8", "cpu", "measured"), ("tiny-l", "fp32", "cpu", "measured")
    assert shapes.shared([key, src]).label == "batch 1"
    assert shapes.at(src, shapes.shared([key, src]))["energy_per_query_j"] == pytest.approx(1.0)


def test_setups_that_share_no_shape_get_no_figure_and_say_so(tmp_path):
    cases = [c for c in _int8_at_batch_1_only() if "fp32/cpu/infer-b1" not in c.case]
    _, making = _making(tmp_path, cases)
    t = making.techniques.set_index("setup").loc["tiny-l/int8/cpu"]
    for col in ("energy_per_query_pct", "tokens_per_s_pct", "break_even_queries"):
        assert pd.isna(t[col]), col
    assert pd.isna(t["shape"]) and t["saving"] == "no shape both measured"
    assert "tiny-l/int8/cpu at batch 1; tiny-l/fp32/cpu at batch 8" in t["note"]
    assert "no energy per query is compared, no shape both measured" in making.sentence
    assert "kWh" not in making.sentence


def test_magnitude_pruning_is_same_work_never_a_saving_or_the_smaller_setup(tmp_path):
    # zeros kept in dense tensors: 45% of the weights zero, a J/query 3% lower by chance with a
    # tight interval; it printed "params 55%, break-even 114 queries" and was the answer's pick
    pruned = {"prune": 0.45, "prune_method": "magnitude", "params_stored": 8e6}
    cases = [
        train_case("tiny-l", "fp32", "cpu", [100.0] * 4, params=8e6),
        infer_case("tiny-l", "fp32", "cpu", 8, 2.0, params=8e6, rel_noise=0.002),
        _with(
            infer_case("tiny-l", "p45", "cpu", 8, 1.94, params=4.4e6, rel_noise=0.002),
            produce_variant_j=6.8,
            model_size_mb=32.0,
            **pruned,
        ),
        infer_case("tiny-l", "n25", "cpu", 8, 1.5, params=6e6, rel_noise=0.002),
        accuracy_case("tiny-l", "fp32", "cpu", "arith_mc", 0.80, params=8e6, stderr=0.001),
        _with(
            accuracy_case("tiny-l", "p45", "cpu", "arith_mc", 0.80, params=4.4e6, stderr=0.001),
            model_size_mb=32.0,
            **pruned,
        ),
    ]
    cases[3] = _with(cases[3], prune=0.25, prune_method="neurons", produce_variant_j=1.0)
    _, making = _making(tmp_path, cases)
    t = making.techniques.set_index("setup")
    p = t.loc["tiny-l/p45/cpu"]
    assert p["params_pct"] == pytest.approx(100) and p["size_pct"] == pytest.approx(100)
    assert pd.isna(p["break_even_queries"]) and pd.isna(p["energy_per_query_saved_pct"])
    assert bool(p["same_work"]) and p["saving"] == "same work"
    assert "same work per query" in p["note"] and break_even_text(p.to_dict()) == "same work"
    # the measured J/query stays in the table, labelled
    assert p["energy_per_query_pct"] == pytest.approx(97, rel=0.01)
    # removing neurons removes work: its real figures and a break-even
    n = t.loc["tiny-l/n25/cpu"]
    assert not n["same_work"] and n["saving"] == "saves" and n["params_pct"] == 75
    assert n["break_even_queries"] == pytest.approx(1.0 / 0.5, rel=0.02)
    # the same size and the same work is not a smaller setup
    assert "is tiny-l/fp32/cpu (accuracy 0.800), the full-size setup itself" in making.sentence
    assert "p45" not in making.sentence


def test_a_fine_tune_against_its_source_is_same_work(tmp_path):
    ft = train_case("tiny-s-ft", "fp32", "cpu", [5.0, 5.0], params=1e6)
    ft.workload, ft.case = "finetune", ft.case.replace("/train-", "/finetune-")
    ft.spec = {**ft.spec, "type": "finetune"}
    for r in ft.reps:
        r.update(workload="finetune", finetuned_from="tiny-s", task="arith_mc")
    cases = [
        train_case("tiny-s", "fp32", "cpu", [10.0] * 4, params=1e6),
        ft,
        infer_case("tiny-s", "fp32", "cpu", 8, 0.5, params=1e6, rel_noise=0.002),
        infer_case("tiny-s-ft", "fp32", "cpu", 8, 0.48, params=1e6, rel_noise=0.002),
    ]
    _, making = _making(tmp_path, cases)
    t = making.techniques.set_index("setup").loc["tiny-s-ft/fp32/cpu"]
    assert t["technique"] == "finetune" and t["source"] == "tiny-s/fp32/cpu"
    assert pd.isna(t["break_even_queries"]) and bool(t["same_work"])
    assert "same network" in t["note"]


def test_a_difference_inside_its_interval_is_no_saving_not_a_break_even(tmp_path):
    cases = [
        train_case("tiny-l", "fp32", "cpu", [100.0] * 4, params=8e6),
        infer_case("tiny-l", "fp32", "cpu", 8, 2.0, params=8e6, rel_noise=0.1),
        _with(infer_case("tiny-l", "int8", "cpu", 8, 1.95, params=8e6, rel_noise=0.1), **INT8),
    ]
    _, making = _making(tmp_path, cases)
    t = making.techniques.set_index("setup").loc["tiny-l/int8/cpu"]
    assert pd.isna(t["break_even_queries"]) and t["saving"] == "no saving measured"
    assert break_even_text(t.to_dict()) == "no saving measured"
    assert "inside its 95% interval" in t["note"]


@pytest.mark.parametrize("source", ["hf:org/tiny", "path:/models/tiny", "builtin:tiny-s"])
def test_break_even_is_unknown_where_an_input_is_missing_and_never_only_where_it_costs(
    tmp_path, source
):
    # a model not made in the run (downloaded, a folder, an untrained builtin): the measured
    # quantising on load is its making
    hf = {"model_source": source}
    cases = [
        _with(infer_case("m", "fp32", "cpu", 8, 2.0, params=8e6), **hf),
        _with(infer_case("m", "int8", "cpu", 8, 1.2, params=8e6), **hf, **INT8),
        # a quantisation with no recorded making, and one that costs more per query
        _with(
            infer_case("m", "w4", "cpu", 8, 1.0, params=8e6),
            **hf,
            quantization="int4-weight",
            model_size_mb=4.0,
        ),
        _with(infer_case("m", "w8", "cpu", 8, 3.0, params=8e6), **hf, **INT8),
    ]
    cases[3] = _with(cases[3], quantization="int8-weight")
    _, making = _making(tmp_path, cases)
    t = making.techniques.set_index("setup")
    q = t.loc["m/int8/cpu"]
    assert q["technique_j"] == pytest.approx(2.0) and q["produce_j"] == pytest.approx(2.0)
    assert q["break_even_queries"] == pytest.approx(2.0 / 0.8, rel=0.03)
    row = making.produced.reset_index().set_index("variant").loc["int8"]
    assert "int8-dynamic on load" in row["produced_from"]
    w4 = t.loc["m/w4/cpu"]
    assert pd.isna(w4["break_even_queries"]) and break_even_text(w4.to_dict()) == "unknown"
    assert "making energy was not recorded" in w4["note"]
    w8 = t.loc["m/w8/cpu"]
    assert w8["saving"] == "costs more" and math.isinf(w8["break_even_queries"])
    assert break_even_text(w8.to_dict()) == "never"


def test_a_variant_without_an_energy_figure_is_not_never(tmp_path):
    # a variant scored for accuracy only: its break-even was printed "never"
    cases = [
        infer_case("tiny-l", "fp32", "cpu", 8, 2.0, params=8e6),
        accuracy_case("tiny-l", "fp32", "cpu", "arith_mc", 0.80, params=8e6),
        _with(accuracy_case("tiny-l", "int8", "cpu", "arith_mc", 0.79, params=8e6), **INT8),
    ]
    _, making = _making(tmp_path, cases)
    t = making.techniques.set_index("setup").loc["tiny-l/int8/cpu"]
    assert break_even_text(t.to_dict()) == "no shape both measured"
    assert "int8/cpu at no energy per query" in t["note"]


def test_the_answer_says_when_accuracy_intervals_cannot_place_a_setup(tmp_path):
    # 0.78 against 0.80 on 200 questions each: the interval of the difference (about ±0.08)
    # reaches past 0.05 on both sides; judged on the points alone it was simply "within 0.05"
    cases = _int8_at_batch_1_only()
    cases[-1] = _with(accuracy_case("tiny-l", "int8", "cpu", "arith_mc", 0.78, params=8e6), **INT8)
    _, making = _making(tmp_path, cases, accuracy_tolerance=0.05)
    assert "is tiny-l/int8/cpu (accuracy 0.780)" in making.sentence
    assert (
        "Whether tiny-l/int8/cpu is within 0.05 of the best cannot be told apart" in making.sentence
    )
    # on 200,000 questions each the intervals are narrow: no doubt is raised
    cases = _int8_at_batch_1_only()
    many = {"samples": 200_000}
    cases[-2] = _with(accuracy_case("tiny-l", "fp32", "cpu", "arith_mc", 0.80, params=8e6), **many)
    cases[-1] = _with(
        accuracy_case("tiny-l", "int8", "cpu", "arith_mc", 0.78, params=8e6), **INT8, **many
    )
    _, making = _making(tmp_path / "narrow", cases, accuracy_tolerance=0.05)
    assert "is tiny-l/int8/cpu" in making.sentence and "cannot be told" not in making.sentence


def test_served_setups_are_compared_at_the_same_concurrency(tmp_path):
    from sitekit import add_serving

    q4 = {"quantization": "gguf-q4_0", "model_size_mb": 2.0}
    cases = [
        accuracy_case("m", "f16", "cpu", "arith_mc", 0.80, params=8e6),
        _with(accuracy_case("m", "q4", "cpu", "arith_mc", 0.79, params=8e6), **q4),
        infer_case("m", "f16", "cpu", 1, 2.0, params=8e6),
        infer_case("n", "fp32", "cpu", 1, 2.0, params=8e6),
    ]
    run = write_run(tmp_path, cases)
    # f16 served at 1 and 16 requests in flight, q4 at 1 and 4: compared at concurrency 1
    add_serving(run, "m", "f16", {1: [3.0, 3.1, 2.9], 16: [0.5, 0.51, 0.49]})
    add_serving(run, "m", "q4", {1: [1.5, 1.55, 1.45], 4: [0.8, 0.81, 0.79]})
    tables = build_tables(open_run(run))
    shapes = Shapes(tables)
    f16, q = ("m", "f16", "cpu", "measured"), ("m", "q4", "cpu", "measured")
    shape = shapes.shared([f16, q])
    assert shape.workload == "serve" and shape.label == "concurrency 1"
    assert shapes.at(q, shape)["energy_per_query_j"] == pytest.approx(1.5)
    t = build(tables).techniques.set_index("setup").loc["m/q4/cpu"]
    assert t["shape"] == "concurrency 1"
    assert t["energy_per_query_pct"] == pytest.approx(50)
    # a served setup and one measured in-process only share no shape
    assert shapes.shared([q, ("n", "fp32", "cpu", "measured")]) is None
    assert shapes.measured(f16) == "batch 1; concurrency 1, 16"


# --- a workload added later ---------------------------------------------------------------------
from harness.workloads.infer import InferWorkload  # noqa: E402


class ExportedInfer(InferWorkload):
    """A workload a newcomer adds: in-process queries from an exported model. It says what it
    is by inheriting infer's traits (unit ``query``, shape ``batch_size``), no report edit."""

    type = "exported-infer"


def _relabelled(case, workload):
    case.workload = workload
    case.spec = {**case.spec, "type": workload}
    for r in case.reps:
        r["workload"] = workload
    return case


def test_a_workload_registered_later_is_found_by_what_it_is_not_its_name(tmp_path, monkeypatch):
    from harness.workloads import REGISTRY

    cases = [
        infer_case("tiny-s", "fp32", "cpu", 8, 0.2),
        _relabelled(infer_case("tiny-s", "onnx", "cpu", 8, 0.1), "exported-infer"),
    ]
    setup = ("tiny-s", "onnx", "cpu", "measured")

    def shapes_and_summary(root):
        run = write_run(root, cases)
        tables = build_tables(open_run(run))
        return Shapes.of(tables), tables.setups

    # not registered: the report cannot know its rows are queries, so it prices none of them
    shapes, setups = shapes_and_summary(tmp_path / "before")
    assert shapes.shared([setup]) is None
    assert setup not in setups.index or pd.isna(setups.loc[setup].get("energy_per_query_j"))

    monkeypatch.setitem(REGISTRY, "exported-infer", f"{__name__}:ExportedInfer")
    shapes, setups = shapes_and_summary(tmp_path / "after")
    both = [("tiny-s", "fp32", "cpu", "measured"), setup]
    assert shapes.shared(both).label == "batch 8"
    assert shapes.at(setup, shapes.shared(both))["energy_per_query_j"] == pytest.approx(0.1)
    assert setups.loc[setup, "energy_per_query_j"] == pytest.approx(0.1)
