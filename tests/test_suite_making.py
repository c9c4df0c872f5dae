"""Suites that make models: distill and finetune workloads, selections, order, dependencies."""

from __future__ import annotations

import pytest

from harness.launchers import dependencies
from harness.launchers.cluster import model_artifacts
from harness.suite import SuiteError, expand, validate_data


def _suite(workloads, models=None, variants=None):
    return {
        "name": "m",
        "carbon": {"intensity_g_per_kwh": 50},
        "hardware": [{"name": "cpu", "device": "cpu"}],
        "models": models
        or [
            {"name": "kid-kd", "source": "builtin:tiny-xs"},  # listed first: order is by making
            {"name": "kid", "source": "builtin:tiny-xs"},
            {"name": "teach", "source": "builtin:tiny-s"},
        ],
        "variants": variants or [{"name": "fp32"}, {"name": "w8", "quantization": "int8-weight"}],
        "workloads": workloads,
    }


TRAIN = {"type": "train", "steps": 4, "batch_size": 2, "seq_len": 8, "models": ["teach", "kid"]}
DISTILL = {
    "type": "distill",
    "teacher": "teach",
    "steps": 4,
    "batch_size": 2,
    "seq_len": 8,
    "models": ["kid-kd"],
}
ACC = {"type": "accuracy", "tasks": ["arith_mc"], "limit": 5}


def test_distill_cases_come_after_the_teachers_training_and_before_their_own_use():
    cases = expand(validate_data(_suite([TRAIN, DISTILL, ACC])))
    names = [c["case"] for c in cases]
    assert names.index("teach/fp32/cpu/train") < names.index("kid-kd/fp32/cpu/distill-teach")
    assert names.index("kid-kd/fp32/cpu/distill-teach") < names.index(
        "kid-kd/w8/cpu/accuracy-arith_mc"
    )
    # selections: teach and kid train, only kid-kd distils, nothing trains a quantised variant
    makers = [n for n in names if n.endswith(("/train", "/distill-teach"))]
    # the suite's order, but the student after its teacher
    assert makers == ["kid/fp32/cpu/train", "teach/fp32/cpu/train", "kid-kd/fp32/cpu/distill-teach"]
    kd = next(c for c in cases if c["workload"]["type"] == "distill")
    assert kd["workload"]["teacher_model"]["source"] == "builtin:tiny-s"
    assert kd["workload"]["temperature"] == 2.0 and kd["workload"]["alpha"] == 0.5
    by_name = {c["case"]: c["case_id"] for c in cases}
    deps = dependencies(cases)
    # the distill case loads the teacher's checkpoint; the student's cases load the distilled one
    assert deps[by_name["kid-kd/fp32/cpu/distill-teach"]] == by_name["teach/fp32/cpu/train"]
    assert (
        deps[by_name["kid-kd/w8/cpu/accuracy-arith_mc"]] == by_name["kid-kd/fp32/cpu/distill-teach"]
    )
    assert deps[by_name["kid/fp32/cpu/accuracy-arith_mc"]] == by_name["kid/fp32/cpu/train"]
    assert by_name["teach/fp32/cpu/train"] not in deps


def test_a_distill_case_on_a_cluster_is_sent_its_teachers_checkpoint(tmp_path):
    cases = expand(validate_data(_suite([TRAIN, DISTILL, ACC])))
    folder = tmp_path / "models" / "teach"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    kd = next(c for c in cases if c["workload"]["type"] == "distill")
    assert list(model_artifacts(tmp_path, kd)) == ["models/teach/config.json"]
    train = next(c for c in cases if c["workload"]["type"] == "train")
    assert model_artifacts(tmp_path, train) == {}


def test_finetune_from_a_model_of_the_run():
    ft = {
        "type": "finetune",
        "from": "kid",
        "task": "successor_mc",
        "steps": 3,
        "models": ["kid-ft"],
    }
    task_train = {**TRAIN, "task": "successor_mc", "models": ["kid-task"]}
    models = [
        {"name": "kid", "source": "builtin:tiny-xs"},
        {"name": "kid-ft", "source": "builtin:tiny-xs"},
        {"name": "kid-task", "source": "builtin:tiny-xs"},
    ]
    cases = expand(
        validate_data(_suite([{**TRAIN, "models": ["kid"]}, ft, task_train, ACC], models))
    )
    names = [c["case"] for c in cases]
    assert "kid-ft/fp32/cpu/finetune-successor_mc" in names
    assert "kid-task/fp32/cpu/train-successor_mc" in names
    c = next(c for c in cases if c["workload"]["type"] == "finetune")
    assert c["workload"]["from"] == "kid" and c["workload"]["from_model"]["name"] == "kid"
    assert c["workload"]["batch_size"] == 16
    by_name = {c["case"]: c["case_id"] for c in cases}
    assert dependencies(cases)[c["case_id"]] == by_name["kid/fp32/cpu/train"]


@pytest.mark.parametrize(
    "workloads, message",
    [
        (
            [{**DISTILL, "teacher": "nobody"}],
            "workloads.0.teacher: 'nobody' is not a model of the suite",
        ),
        ([{**TRAIN, "models": ["kid", "ghost"]}], "workloads.0.models: unknown name 'ghost'"),
        ([{**TRAIN, "variants": ["fp16"]}], "workloads.0.variants: unknown name 'fp16'"),
        (
            [
                {
                    "type": "finetune",
                    "from": "teach",
                    "task": "arith_mc",
                    "steps": 2,
                    "models": ["kid"],
                }
            ],
            "kid (builtin:tiny-xs) cannot be fine-tuned from teach (builtin:tiny-s)",
        ),
        (
            [{"type": "finetune", "from": "kid", "task": "nope", "steps": 2}],
            "workloads.0.task: unknown task 'nope'",
        ),
        (
            [{**TRAIN, "models": None}, {**DISTILL, "models": ["kid"]}],
            "models.kid: made by distill and train workloads",
        ),
        ([{**DISTILL, "alpha": 1.5}], "workloads.0.alpha: must be <= 1"),
        (
            [{**TRAIN, "models": ["kid"]}, DISTILL],
            "kid-kd/fp32/cpu/distill-teach starts from teach, which no train, distill or finetune",
        ),
    ],
)
def test_making_workloads_that_cannot_work_are_refused(workloads, message):
    with pytest.raises(SuiteError) as e:
        validate_data(_suite(workloads))
    assert message in str(e.value)


def test_forecast_and_budget_settings():
    data = _suite([TRAIN])
    data["measurement"] = {"forecast_fraction": 0.2, "energy_budget_j": 5000}
    case = expand(validate_data(data))[0]
    assert case["measurement"]["forecast_fraction"] == 0.2
    assert case["measurement"]["energy_budget_j"] == 5000
    data["measurement"] = {"forecast_fraction": 1.0}
    with pytest.raises(SuiteError, match="measurement.forecast_fraction: must be < 1"):
        validate_data(data)
