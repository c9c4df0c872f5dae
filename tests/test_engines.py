"""Engines: found by name, and what the workloads drive; a new engine is a module and an entry."""

from __future__ import annotations

import sys
import types

import pytest
from workloadkit import make_case, make_context

from harness import engines
from harness.engines import Engine, Prompts, create_engine
from harness.errors import HarnessError
from harness.meter import Meter
from harness.workloads import create


class CountingEngine(Engine):
    """A model-less engine: it counts the tokens it is asked for."""

    name = "counting"

    def __init__(self):
        self.calls: list[int] = []
        self.closed = False

    def load(self, model, variant, hardware, artifacts_dir):
        self.loaded = {"model": model["name"]}
        return {"model": model["name"], "model_source": model["source"], "params": 7}

    def context_length(self):
        return 64

    def prompts(self, batch_size, prompt_tokens, seed):
        ids = types.SimpleNamespace(shape=(batch_size, prompt_tokens))
        return Prompts(input_ids=ids, attention_mask=ids)

    def generate(self, prompts, new_tokens):
        self.calls.append(new_tokens)

    def close(self):
        self.closed = True


@pytest.fixture
def counting(monkeypatch):
    module = types.ModuleType("counting_engine")
    module.CountingEngine = CountingEngine
    monkeypatch.setitem(sys.modules, "counting_engine", module)
    monkeypatch.setitem(engines.REGISTRY, "counting", "counting_engine:CountingEngine")


def test_unknown_engine_is_one_line_naming_the_known_ones():
    with pytest.raises(HarnessError, match=r"unknown engine 'tgi' \(known: transformers, llamacpp"):
        create_engine("tgi")
    assert create_engine().name == "transformers"


def test_the_infer_workload_drives_the_variants_engine(counting, tmp_path):
    case = make_case({"type": "infer", "batch_size": 2, "prompt_tokens": 4, "new_tokens": 3})
    case["variant"]["engine"] = "counting"
    with Meter(sensors=["estimate"], sample_hz=None) as meter:
        workload = create(make_context(case, meter, tmp_path))
        static = workload.setup()
        assert isinstance(workload.engine, CountingEngine)
        assert static["params"] == 7 and static["batch_size"] == 2
        workload.warmup(1)
        rep = workload.run(0)
        workload.teardown()
    engine = workload.engine
    # warmup: one full and one one-token call, then calls that fill the windows
    assert engine.calls[:2] == [3, 1] and set(engine.calls) == {1, 3}
    assert rep.columns["queries"] == rep.columns["calls"] * 2
    assert engine.closed


def test_context_length_of_the_engine_is_checked(counting, tmp_path):
    case = make_case({"type": "infer", "batch_size": 1, "prompt_tokens": 60, "new_tokens": 8})
    case["variant"]["engine"] = "counting"
    with Meter(sensors=["estimate"], sample_hz=None) as meter:
        workload = create(make_context(case, meter, tmp_path))
        with pytest.raises(
            HarnessError, match="exceeds the context length of model 'tiny-s' \\(64\\)"
        ):
            workload.setup()


def test_an_engine_that_cannot_train_or_score_says_so():
    engine = CountingEngine()
    with pytest.raises(HarnessError, match="engine counting cannot train"):
        engine.trainable()
    with pytest.raises(HarnessError, match="engine counting cannot be scored by lm-eval"):
        engine.lm_eval_model(1)
