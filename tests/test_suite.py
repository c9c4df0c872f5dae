"""Suite schema, error lines, matrix expansion, case ids and names."""

from __future__ import annotations

import copy
import os

import pytest
import yaml
from runhelpers import ROOT

from harness.cli import main
from harness.errors import HarnessError
from harness.suite import (
    SuiteError,
    case_id,
    expand,
    load_suite,
    resolve_suite_path,
    select,
    validate_data,
)

BASE = {
    "name": "s",
    "carbon": {"country": "FRA", "pue": 1.0},
    "measurement": {"sensors": "auto", "min_repeats": 3, "max_repeats": 10},
    "hardware": [
        {"name": "cpu", "device": "cpu"},
        {"name": "edge-1t", "device": "cpu", "threads": 1},
    ],
    "models": [
        {"name": "tiny-s", "source": "builtin:tiny-s"},
        {"name": "smol", "source": "hf:HuggingFaceTB/SmolLM2-135M"},
    ],
    "variants": [
        {"name": "fp32", "dtype": "float32"},
        {"name": "int8", "dtype": "float32", "quantization": "int8-dynamic"},
    ],
    "workloads": [
        {"type": "train", "steps": 10, "batch_size": 4, "seq_len": 32},
        {"type": "infer", "batch_sizes": [1, 8], "prompt_tokens": 16, "new_tokens": 16},
        {"type": "accuracy", "tasks": ["arith_mc", "facts_mc"], "limit": 50},
        {"type": "command", "name": "my-script", "run": ["python", "bench.py"]},
    ],
}


def changed(path: str, value) -> dict:
    """BASE with the value at a dotted path replaced (``None`` as value deletes the key)."""
    data = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = data
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if isinstance(node, list):
        node[int(last)] = value
    elif value is None:
        del node[last]
    else:
        node[last] = value
    return data


def test_expansion_counts_names_and_order():
    suite = validate_data(BASE)
    cases = expand(suite)
    # per hardware: 2 models × (train on fp32 only + 2 variants × (2 infer + 2 accuracy)) + 1 command
    assert len(cases) == 2 * (2 * (1 + 2 * 4) + 1)
    names = [c["case"] for c in cases]
    assert "tiny-s/fp32/cpu/train" in names
    assert "tiny-s/int8/cpu/train" not in names  # no training of a quantized variant
    assert "tiny-s/fp32/cpu/infer-b8" in names
    assert "tiny-s/int8/edge-1t/accuracy-arith_mc" in names
    assert "cpu/my-script" in names and "edge-1t/my-script" in names
    # a model's train case comes before its infer and accuracy cases on the same hardware
    for hw in ("cpu", "edge-1t"):
        mine = [n for n in names if n.startswith("tiny-s/") and f"/{hw}/" in n]
        assert mine[0].endswith("/train")
    # all of cpu's cases come before edge-1t's
    hw_seq = [c["hardware"]["name"] for c in cases]
    assert hw_seq == sorted(hw_seq, key=["cpu", "edge-1t"].index)
    infer = next(c for c in cases if c["case"] == "tiny-s/fp32/cpu/infer-b8")
    assert infer["workload"] == {
        "type": "infer",
        "batch_size": 8,
        "prompt_tokens": 16,
        "new_tokens": 16,
    }
    acc = next(c for c in cases if c["case"] == "smol/fp32/cpu/accuracy-facts_mc")
    assert acc["workload"] == {
        "type": "accuracy",
        "task": "facts_mc",
        "limit": 50,
        "num_fewshot": 0,
    }
    cmd = next(c for c in cases if c["case"] == "cpu/my-script")
    assert cmd["model"] is None and cmd["variant"] is None
    assert cmd["measurement"]["min_repeats"] == 3 and cmd["carbon"]["country"] == "FRA"


def test_case_ids_stable_unique_and_independent_of_suite_name():
    a = expand(validate_data(BASE))
    other = changed("name", "renamed")
    other["description"] = "something else"
    b = expand(validate_data(other))
    assert [c["case_id"] for c in a] == [c["case_id"] for c in b]
    ids = [c["case_id"] for c in a]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 12 and int(i, 16) >= 0 for i in ids)
    # a change of a setting changes the id
    c = expand(validate_data(changed("workloads.1.prompt_tokens", 17)))
    infer_a = {x["case"]: x["case_id"] for x in a if "infer" in x["case"]}
    infer_c = {x["case"]: x["case_id"] for x in c if "infer" in x["case"]}
    assert infer_a.keys() == infer_c.keys()
    assert all(infer_a[k] != infer_c[k] for k in infer_a)
    assert case_id(a[0]) == a[0]["case_id"]


def test_names_disambiguated_when_two_shapes_collide():
    data = copy.deepcopy(BASE)
    data["workloads"].append(
        {"type": "infer", "batch_sizes": [8], "prompt_tokens": 64, "new_tokens": 16}
    )
    names = [c["case"] for c in expand(validate_data(data))]
    assert "tiny-s/fp32/cpu/infer-b8-p16-n16" in names
    assert "tiny-s/fp32/cpu/infer-b8-p64-n16" in names
    assert "tiny-s/fp32/cpu/infer-b1" in names  # unique ones keep the short name
    assert len(set(names)) == len(names)


def test_select_glob():
    cases = expand(validate_data(BASE))
    picked = select(cases, "tiny-s/*/cpu/infer-*")
    assert {c["case"] for c in picked} == {
        "tiny-s/fp32/cpu/infer-b1",
        "tiny-s/fp32/cpu/infer-b8",
        "tiny-s/int8/cpu/infer-b1",
        "tiny-s/int8/cpu/infer-b8",
    }
    assert select(cases, None) == cases


def test_command_only_suite_needs_no_models():
    data = {k: v for k, v in BASE.items() if k not in ("models", "variants")}
    data["workloads"] = [BASE["workloads"][3]]
    assert [c["case"] for c in expand(validate_data(data))] == [
        "cpu/my-script",
        "edge-1t/my-script",
    ]


# --------------------------------------------------------------------- malformed suites
MALFORMED = [
    ("wrong type", changed("measurement.min_repeats", "three"), "measurement.min_repeats"),
    (
        "negative count",
        changed("measurement.min_repeats", -1),
        "measurement.min_repeats: must be >= 1",
    ),
    ("negative steps", changed("workloads.0.steps", 0), "workloads.0.steps"),
    ("bad batch size", changed("workloads.1.batch_sizes", [1, -8]), "workloads.1.batch_sizes.1"),
    ("empty batch sizes", changed("workloads.1.batch_sizes", []), "workloads.1.batch_sizes"),
    ("unknown top key", {**BASE, "modles": []}, "modles: unknown key"),
    (
        "unknown nested key",
        changed("measurement.min_repeat", 2),
        "measurement.min_repeat: unknown key",
    ),
    ("unknown workload key", changed("workloads.1.batch", 2), "workloads.1.batch: unknown key"),
    ("unknown workload type", changed("workloads.2.type", "evaluate"), "workloads.2"),
    (
        "min > max repeats",
        changed("measurement.max_repeats", 2),
        "measurement.min_repeats: must be <= max_repeats",
    ),
    ("duplicate model", changed("models.1.name", "tiny-s"), "models.1.name"),
    ("duplicate hardware", changed("hardware.1.name", "cpu"), "hardware.1.name"),
    ("bad dtype", changed("variants.0.dtype", "float8"), "variants.0.dtype"),
    ("bad quantization", changed("variants.1.quantization", "int4"), "variants.1.quantization"),
    ("bad device", changed("hardware.0.device", "gpu0"), "hardware.0.device"),
    ("unknown source prefix", changed("models.0.source", "s3:bucket/model"), "models.0.source"),
    ("bad hf id", changed("models.1.source", "hf:not a/valid id"), "models.1.source"),
    ("unknown builtin", changed("models.0.source", "builtin:tiny-xxl"), "models.0.source"),
    ("no workloads", changed("workloads", []), "workloads"),
    ("model workloads without models", changed("models", []), "models"),
    ("no variants", changed("variants", []), "variants"),
    ("no hardware", changed("hardware", []), "hardware"),
    ("missing name", changed("name", None), "name: required"),
    ("missing carbon", changed("carbon", None), "carbon: required"),
    ("unknown country", changed("carbon", {"country": "XXX"}), "carbon.country: unknown country"),
    ("negative pue", changed("carbon", {"intensity_g_per_kwh": 50, "pue": -1}), "carbon.pue"),
    (
        "unknown sensor",
        changed("measurement.sensors", ["rapl", "joulemeter"]),
        "measurement.sensors",
    ),
    ("empty command", changed("workloads.3.run", []), "workloads.3.run"),
    ("negative timeout", changed("measurement.case_timeout_s", -5), "measurement.case_timeout_s"),
    ("zero threads", changed("hardware.1.threads", 0), "hardware.1.threads"),
]


@pytest.mark.parametrize("label,data,field", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_suite_exit_2_one_line_per_problem(label, data, field, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert field in err, err
    assert all(line.startswith("harness: ") for line in err.strip().splitlines())
    # harness run refuses the same suite the same way, before it creates anything
    assert main(["run", str(path), "--out", str(tmp_path / "res")]) == 2
    err = capsys.readouterr().err
    assert field in err and "Traceback" not in err
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize(
    "text,expected",
    [
        ("name: [unclosed\n", "not valid YAML at line"),
        ("- just\n- a list\n", "must be a mapping"),
        ("", "an empty file"),
        ("name: x\n\tcarbon: 1\n", "not valid YAML"),
    ],
)
def test_unparsable_suite_files(text, expected, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_missing_suite_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err
    assert "nope.yaml: no such suite file" in err and "Traceback" not in err
    assert main(["run", "no-such-suite-name"]) == 2
    assert "no-such-suite-name" in capsys.readouterr().err


def test_several_problems_each_on_its_line(tmp_path, capsys):
    data = changed("measurement.min_repeats", 0)
    data["workloads"][1]["prompt_tokens"] = "many"
    data["hardware"][0]["colour"] = "red"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["validate", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert any("measurement.min_repeats: must be >= 1" in line for line in lines)
    assert any("workloads.1.prompt_tokens: must be a whole number" in line for line in lines)
    assert any("hardware.0.colour: unknown key" in line for line in lines)


def test_validate_valid_suite_prints_count(tmp_path, capsys):
    path = tmp_path / "good.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"s: {len(expand(validate_data(BASE)))} cases (valid)"


def test_carbon_intensity_from_codecarbon_data():
    from harness.carbon import intensity

    g, pue = intensity({"country": "FRA", "pue": 1.1})
    assert 10 < g < 200 and pue == 1.1  # France's grid is low-carbon
    assert intensity({"country": "POL"})[0] > g  # coal-heavy
    assert intensity({"intensity_g_per_kwh": 42.0})[0] == 42.0
    assert 0 < intensity({"country": "USA", "region": "california"})[0] < 500
    with pytest.raises(HarnessError, match="unknown country"):
        intensity({"country": "XXX"})
    with pytest.raises(HarnessError, match="unknown region"):
        intensity({"country": "USA", "region": "atlantis"})


@pytest.mark.parametrize("name", ["quickstart", "small-lms"])
def test_shipped_suites_validate(name, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert resolve_suite_path(name).resolve() == ROOT / "suites" / f"{name}.yaml"
    suite = load_suite(name)
    cases = expand(suite)
    assert cases
    assert main(["validate", name]) == 0
    assert f"{suite.name}: {len(cases)} cases (valid)" in capsys.readouterr().out


def test_bare_name_resolves_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./suites here: the checkout's suites/ is used
    assert resolve_suite_path("quickstart").resolve() == (ROOT / "suites" / "quickstart.yaml")


# --------------------------------------------------------------------- short messages, extras
ALIAS_BOMB = """name: bomb
carbon: {intensity_g_per_kwh: 100}
hardware: [{name: cpu}]
a: &a ["xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
workloads: [{type: infer, batch_sizes: *d, prompt_tokens: *d, new_tokens: 1}]
"""


def test_yaml_aliases_never_blow_up_a_message(tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    assert len(ALIAS_BOMB) < 600
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err) < 8000, len(err)  # the landed code printed hundreds of kilobytes
    assert all(len(line) < 400 for line in err.splitlines())


def test_a_name_must_not_end_in_a_newline(tmp_path, capsys):
    data = changed("hardware.0.name", "cpu\n")
    with pytest.raises(SuiteError, match="hardware.0.name"):
        validate_data(data)
    data = changed("name", "quick\n")
    with pytest.raises(SuiteError, match="name"):
        validate_data(data)
    data = changed("workloads.2.tasks", ["arith_mc\n"])
    with pytest.raises(SuiteError, match="workloads.2.tasks: 'arith_mc\\\\n' is not a task name"):
        validate_data(data)


def test_a_long_bad_value_is_shown_as_an_excerpt():
    data = changed("measurement.min_repeats", "z" * 5000)
    with pytest.raises(SuiteError) as e:
        validate_data(data)
    (line,) = e.value.problems
    assert "zzzz" in line and len(line) < 200


def test_a_suite_needing_a_missing_extra_is_refused_before_any_case(tmp_path):
    from runhelpers import ROOT, TESTS, harness

    path = tmp_path / "q.yaml"
    data = copy.deepcopy(BASE)
    data["workloads"] = data["workloads"][:2]
    data["models"] = data["models"][:1]
    path.write_text(yaml.safe_dump(data))
    hide = os.pathsep.join([str(ROOT), str(TESTS / "nomodules")])
    proc = harness(
        ["run", str(path), "--out", "res", "--no-report"],
        tmp_path,
        PYTHONPATH=hide,
        HIDE_MODULES="torch",
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "'ml' extra" in line and "no module torch" in line and "energy-harness[ml]" in line
    assert not (tmp_path / "res").exists()  # refused before anything was made
