"""Pruned and weight-only quantised variants: what they change is what the columns say."""

from __future__ import annotations

import pytest
import torch

from harness.errors import HarnessError
from harness.meter import Meter
from harness.models import load_model, model_size_mb
from harness.models.variants import nonzero_params, prunable_linears
from harness.suite import SuiteError, validate_data

CPU = {"name": "cpu-1t", "device": "cpu", "threads": 1, "memory_limit_mb": None}
MODEL = {"name": "tiny-s", "source": "builtin:tiny-s"}
X = torch.randint(5, 600, (2, 12))


def _load(**variant):
    return load_model(MODEL, {"dtype": "float32", **variant}, CPU)


@pytest.fixture(scope="module")
def base():
    return _load()


def _logits(lm):
    with torch.no_grad():
        return lm.model(input_ids=X).logits


def test_magnitude_pruning_zeroes_that_share_of_each_layer(base):
    pruned = _load(prune=0.5)
    for name, layer in prunable_linears(pruned.model):
        zeros = int((layer.weight == 0).sum())
        assert zeros == round(0.5 * layer.weight.numel()), name
    # the smallest weights went: every kept weight is at least as large as every zeroed one
    w0 = dict(prunable_linears(base.model))["model.layers.0.mlp.up_proj"].weight.abs().flatten()
    w1 = dict(prunable_linears(pruned.model))["model.layers.0.mlp.up_proj"].weight.flatten()
    assert w0[w1 == 0].max() <= w0[w1 != 0].min()
    assert pruned.params == nonzero_params(pruned.model) < base.params
    assert pruned.params_stored == base.params  # the shapes are kept, zeros and all
    assert pruned.model_size_mb == pytest.approx(base.model_size_mb)
    cols = pruned.columns()
    assert cols["prune"] == 0.5 and cols["prune_method"] == "magnitude"
    assert cols["params"] == pruned.params
    assert not torch.allclose(_logits(pruned), _logits(base))


def test_neuron_pruning_shrinks_the_matrices_and_the_model(base):
    pruned = _load(prune=0.25, prune_method="neurons")
    inner = base.model.config.intermediate_size
    keep = inner - round(0.25 * inner)
    for block in pruned.model.model.layers:
        assert block.mlp.gate_proj.weight.shape == (keep, 96)
        assert block.mlp.up_proj.weight.shape == (keep, 96)
        assert block.mlp.down_proj.weight.shape == (96, keep)
    assert pruned.model.config.intermediate_size == keep
    removed = 3 * 3 * 96 * (inner - keep)  # 3 blocks × 3 matrices × hidden × neurons removed
    assert pruned.params_stored == base.params - removed
    assert pruned.model_size_mb == pytest.approx(model_size_mb(pruned.model))
    assert pruned.model_size_mb < base.model_size_mb
    out = pruned.model.generate(X, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape == (2, 15)


@pytest.mark.parametrize("quant, ratio", [("int8-weight", 0.45), ("int4-weight", 0.45)])
def test_weight_only_quantisation_shrinks_weights_and_keeps_outputs_close(base, quant, ratio):
    pytest.importorskip("torchao")
    q = _load(quantization=quant)
    assert q.quantization == quant and q.params == base.params
    # linear weights held as int8 bytes (int4 values one per byte) plus scales; embeddings stay
    assert q.model_size_mb < ratio * base.model_size_mb
    gap = (_logits(q) - _logits(base)).abs().max().item()
    scale = _logits(base).abs().max().item()
    assert gap < (0.02 if quant == "int8-weight" else 0.25) * scale


def test_making_a_variant_is_measured_in_its_own_window():
    with Meter(sensors=["estimate"], sample_hz=None) as meter:
        q = load_model(MODEL, {"dtype": "float32", "prune": 0.3}, CPU, making_window=meter.window)
    cols = q.columns()
    assert cols["produce_variant_j"] > 0 and cols["produce_variant_s"] > 0
    assert cols["produce_variant_method"] == "estimated"
    plain = load_model(MODEL, {"dtype": "float32"}, CPU, making_window=lambda name: 1 / 0)
    assert "produce_variant_j" not in plain.columns()  # nothing made, nothing measured


def test_bad_prune_is_refused():
    with pytest.raises(HarnessError, match="prune must be a share"):
        _load(prune=1.5)
    with pytest.raises(HarnessError, match="unknown prune_method"):
        _load(prune=0.5, prune_method="rows")


def _suite(variants, device="cpu"):
    return {
        "name": "v",
        "carbon": {"intensity_g_per_kwh": 50},
        "hardware": [{"name": "hw", "device": device}],
        "models": [{"name": "tiny-s", "source": "builtin:tiny-s"}],
        "variants": variants,
        "workloads": [{"type": "infer", "batch_sizes": [1], "prompt_tokens": 4, "new_tokens": 4}],
    }


def test_validate_refuses_a_variant_the_device_cannot_run(monkeypatch):
    with pytest.raises(
        SuiteError, match="variants.q: cannot run on hw: int8-dynamic runs on the cpu"
    ):
        validate_data(_suite([{"name": "q", "quantization": "int8-dynamic"}], device="cuda:0"))
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torchao" else real(name, *a)
    )
    with pytest.raises(SuiteError, match="int4-weight needs torchao, which is not installed"):
        validate_data(_suite([{"name": "w4", "quantization": "int4-weight"}]))
    with pytest.raises(SuiteError, match="prune_method: needs prune"):
        validate_data(_suite([{"name": "p", "prune_method": "neurons"}]))
    with pytest.raises(SuiteError, match="must be < 1"):
        validate_data(_suite([{"name": "p", "prune": 1}]))


def test_pruned_and_quantised_variants_are_never_trained_and_plain_ids_are_kept():
    from harness.suite import expand

    data = _suite(
        [
            {"name": "fp32"},
            {"name": "p50", "prune": 0.5},
            {"name": "w8", "quantization": "int8-weight"},
        ]
    )
    data["workloads"].insert(0, {"type": "train", "steps": 2, "batch_size": 1, "seq_len": 4})
    cases = expand(validate_data(data))
    trained = [c["variant"]["name"] for c in cases if c["workload"]["type"] == "train"]
    assert trained == ["fp32"]
    fp32 = next(c for c in cases if c["variant"]["name"] == "fp32")
    assert "prune" not in fp32["variant"]  # a plain variant's case (and id) is as before
    p50 = next(c for c in cases if c["variant"]["name"] == "p50")
    assert p50["variant"]["prune"] == 0.5 and p50["variant"]["prune_method"] == "magnitude"
