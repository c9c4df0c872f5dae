"""Each workload types one case's workload dict (its ``case`` model, a CaseShape): every shape a
suite can expand into validates against it, and a bad case dict is one line naming its key."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from runhelpers import ROOT

from harness.errors import HarnessError
from harness.schema import CaseShape
from harness.suite import expand, load_suite, validate_data
from harness.workloads import REGISTRY, Context, create, workload_class

#: keys of a case model that no suite block writes (a hand-made case may set them)
CASE_ONLY = {"accuracy": {"batch_size"}}

HF = "hf:HuggingFaceTB/SmolLM2-135M"

#: a suite that sets every optional key of every workload block at least once
EVERY_KEY = {
    "name": "every-key",
    "carbon": {"intensity_g_per_kwh": 100},
    "hardware": [{"name": "cpu", "device": "cpu", "threads": 1}],
    "models": [
        {"name": "tiny-s", "source": "builtin:tiny-s"},
        {"name": "tiny-task", "source": "builtin:tiny-s"},
        {"name": "tiny-text", "source": "builtin:tiny-xs"},
        {"name": "tiny-kd", "source": "builtin:tiny-xs"},
        {"name": "tiny-ft", "source": "builtin:tiny-s"},
        {"name": "smol-ft", "source": HF},
    ],
    "variants": [
        {"name": "fp32", "dtype": "float32"},
        {"name": "q4", "engine": "llamacpp", "quantization": "gguf-q4_0"},
    ],
    "workloads": [
        {"type": "train", "models": ["tiny-s"], "steps": 10, "batch_size": 4, "seq_len": 16,
         "lr": 1e-3},
        {"type": "train", "models": ["tiny-task"], "steps": 10, "batch_size": 4, "seq_len": 16,
         "task": "arith_mc"},
        {"type": "train", "models": ["tiny-text"], "steps": 10, "batch_size": 4, "seq_len": 16,
         "text_file": "story.txt"},
        {"type": "distill", "models": ["tiny-kd"], "teacher": "tiny-s", "steps": 10,
         "batch_size": 4, "seq_len": 16, "lr": 1e-3, "text_file": "story.txt",
         "temperature": 3, "alpha": 0.25},
        {"type": "finetune", "models": ["tiny-ft"], "from": "tiny-s", "task": "successor_mc",
         "steps": 6, "lr": 1e-4},
        {"type": "finetune", "models": ["smol-ft"], "from": HF, "task": "successor_mc",
         "steps": 6, "batch_size": 2, "seq_len": 8},
        {"type": "infer", "models": ["tiny-s"], "batch_sizes": [1, 4], "prompt_tokens": 8,
         "new_tokens": 4},
        {"type": "accuracy", "models": ["tiny-s"], "tasks": ["arith_mc"], "limit": 20,
         "num_fewshot": 2},
        {"type": "serve", "models": ["tiny-s"], "concurrency": [1, 2], "rate_rps": [2.5],
         "slots": 2, "requests": 12, "prompt_tokens": 8, "new_tokens": 4, "port": 8123,
         "prefix_cache": True, "min_steady_s": 2, "max_failed_share": 0.1,
         "request_timeout_s": 30},
        {"type": "serve", "models": ["tiny-s"], "concurrency": [3], "prompt_tokens": 8,
         "new_tokens": 4},
        {"type": "command", "name": "script", "run": [sys.executable, "-c", "print(1)"],
         "env": {"OMP_NUM_THREADS": 1}, "cwd": "."},
        {"type": "command", "name": "plain", "run": ["true"]},
    ],
}  # fmt: skip


def every_shape() -> list[dict]:
    """The workload dict of every case of every shipped suite and of EVERY_KEY."""
    cases = expand(validate_data(EVERY_KEY))
    for path in sorted((ROOT / "suites").glob("*.yaml")):
        cases += expand(load_suite(path))
    return [c["workload"] for c in cases]


def one_line(kind: str, spec: dict) -> str:
    with pytest.raises(HarnessError) as e:
        workload_class(kind).case.of(spec)
    text = str(e.value)
    assert "\n" not in text and text.startswith(f"{kind} workload: "), text
    return text


def test_every_registered_workload_declares_its_case_model():
    for kind in REGISTRY:
        model = workload_class(kind).case
        assert isinstance(model, type) and issubclass(model, CaseShape), kind
        assert model.kind() == kind  # its ``type`` is the workload's own


def test_every_shape_a_suite_expands_into_validates_against_its_case_model():
    shapes = every_shape()
    seen: dict[str, set[str]] = {}
    for spec in shapes:
        kind = spec["type"]
        shape = workload_class(kind).case.of(spec)
        # typed, as written: nothing is dropped or renamed on the way
        assert shape.model_dump(by_alias=True, exclude_unset=True) == spec
        seen.setdefault(kind, set()).update(spec)
    assert set(seen) == set(REGISTRY)  # every workload was expanded at least once
    for kind, keys in seen.items():
        model = workload_class(kind).case
        declared = {f.alias or name for name, f in model.model_fields.items()}
        # a case model declares no key the suite cannot write (and none it has forgotten)
        assert declared - CASE_ONLY.get(kind, set()) == keys, kind


def test_the_case_models_defaults_are_the_workloads_defaults():
    suite = validate_data(EVERY_KEY)
    serve = [c for c in expand(suite) if c["case"].endswith("serve-c3")]
    assert len(serve) == 1 and "request_timeout_s" not in serve[0]["workload"]
    shape = workload_class("serve").case.of(serve[0]["workload"])
    assert (shape.min_steady_s, shape.max_failed_share, shape.request_timeout_s) == (1, 0, 120)
    assert shape.requests == 12 and shape.rate_rps is None and shape.prefix_cache is False


@pytest.mark.parametrize("kind", list(REGISTRY))
def test_an_unknown_key_is_one_line_naming_the_workload_and_key(kind):
    spec = next(s for s in every_shape() if s["type"] == kind)
    text = one_line(kind, {**spec, "batch_sise": 4})
    assert "unknown key 'batch_sise'" in text


@pytest.mark.parametrize("kind", list(REGISTRY))
def test_a_wrong_type_is_one_line_naming_the_workload_and_key(kind):
    spec = next(s for s in every_shape() if s["type"] == kind)
    key = next(k for k, v in spec.items() if k != "type" and isinstance(v, (int, str)))
    text = one_line(kind, {**spec, key: [1, 2]})
    assert f"{kind} workload: {key} must be " in text and "not [1, 2]" in text


@pytest.mark.parametrize(
    ("kind", "spec", "message"),
    [
        ("infer", {"batch_size": 1, "prompt_tokens": 8, "new_tokens": 4.0},
         "infer workload: new_tokens must be a positive integer, not 4.0"),
        ("infer", {"batch_size": True, "prompt_tokens": 8, "new_tokens": 4},
         "infer workload: batch_size must be a positive integer, not True"),
        ("serve", {"concurrency": 1, "requests": 4, "prompt_tokens": 4, "new_tokens": 1},
         "serve workload: new_tokens must be an integer >= 2, not 1"),
        ("serve", {"concurrency": 1, "requests": 4, "prompt_tokens": 4, "new_tokens": 4,
                   "max_failed_share": 2},
         "serve workload: max_failed_share must be a number >= 0 and <= 1, not 2"),
        ("train", {"steps": 10, "batch_size": 4},
         "train workload: seq_len must be a positive integer; the case gives none"),
        ("command", {"name": "c", "run": []},
         "command workload: run must be a non-empty list, not []"),
        ("command", {"name": "c", "run": ["true"], "env": {"N": 1}},
         "command workload: env.N: must be a string, not 1"),
        ("distill", {"teacher": "t", "teacher_model": {"name": "t", "source": "t"}, "steps": 1,
                     "batch_size": 1, "seq_len": 1, "temperature": 2.0, "alpha": 0.5},
         "distill workload: teacher_model.source: 't' has no known source prefix"),
        ("finetune", {"from_": "a", "from_model": {"name": "a", "source": "builtin:tiny-s"},
                      "task": "arith_mc", "steps": 1, "batch_size": 1, "seq_len": 1},
         "finetune workload: from must be a string; the case gives none (and 1 more)"),
    ],
)  # fmt: skip
def test_bad_values_read_as_what_the_key_takes(kind, spec, message):
    assert one_line(kind, {"type": kind, **spec}).startswith(message)


def test_the_workload_reads_its_typed_shape(tmp_path):
    spec = {"type": "infer", "batch_size": 2, "prompt_tokens": 8, "new_tokens": 4}
    ctx = Context(meter=None, case={"workload": spec}, artifacts_dir=tmp_path, case_dir=tmp_path)
    workload = create(ctx)
    assert workload.shape == workload_class("infer").case.of(spec)
    assert workload.shape.batch_size == 2
    with pytest.raises(HarnessError, match=r"^infer workload: unknown key 'lr'"):
        create(Context(None, {"workload": {**spec, "lr": 1.0}}, tmp_path, tmp_path))


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"workload": {"type": "command", "name": "c", "run": ["true"], "cwd": 3}},
         "command workload: cwd must be a string or null, not 3"),
        ({"hardware": {"name": "cpu", "device": "gpu0"}},
         "hardware.device: 'gpu0' is not a device (cpu or cuda:N)"),
    ],
)  # fmt: skip
def test_the_worker_fails_a_bad_case_in_one_line(tmp_path, change, error):
    from harness.worker import measure_case

    case = {
        "case_id": "c",
        "case": "cpu/c",
        "suite": "s",
        "hardware": {"name": "cpu", "device": "cpu"},
        "model": None,
        "variant": None,
        "workload": {"type": "command", "name": "c", "run": ["true"]},
        "measurement": {"sensors": ["estimate"], "sample_hz": None, "idle_s": 0},
        "carbon": {"intensity_g_per_kwh": 100},
        **change,
    }
    case_dir = Path(tmp_path) / "case"
    case_dir.mkdir()
    result = measure_case(case_dir, tmp_path, "run", None, case)
    assert result["status"] == "failed" and result["error"] == error
