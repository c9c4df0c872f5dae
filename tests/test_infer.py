"""The infer workload on real tiny models on the CPU, metered by this machine's sensors.

Checked: exact token counts whatever the model predicts, records whose derived figures multiply
back to the measured energy, calls that fill their window, prefill and decode that add up to
generation when measured separately, and bad input as one line.
"""

from __future__ import annotations

import copy
import math
import time

import pytest

torch = pytest.importorskip("torch")

from workloadkit import make_case, make_context, torch_threads_kept  # noqa: E402

from harness.errors import HarnessError  # noqa: E402
from harness.meter import Meter  # noqa: E402
from harness.records import J_PER_WH, derive, measurement_columns  # noqa: E402
from harness.workloads import create  # noqa: E402
from harness.workloads.infer import MIN_WINDOW_S  # noqa: E402


@pytest.fixture(autouse=True)
def _keep_threads():
    with torch_threads_kept():
        yield


@pytest.fixture
def meter():
    with Meter(sensors="auto", sample_hz=None) as m:
        yield m


def infer(meter, tmp_path, batch_size, prompt_tokens, new_tokens, source="builtin:tiny-s"):
    spec = {"type": "infer", "batch_size": batch_size, "prompt_tokens": prompt_tokens}
    spec["new_tokens"] = new_tokens
    workload = create(make_context(make_case(spec, source), meter, tmp_path))
    static = workload.setup()
    return workload, static


def record(workload, static: dict, repetition: int) -> dict:
    """A repetition's flat record, built as the worker builds it."""
    rep = workload.run(repetition)
    return derive({**static, **measurement_columns(rep.measurement), **rep.columns})


def test_records_are_consistent(meter, tmp_path):
    b, p, n = 2, 8, 5
    workload, static = infer(meter, tmp_path, b, p, n)
    assert static["params"] > 0 and static["device_name"]
    assert (static["batch_size"], static["prompt_tokens"], static["new_tokens"]) == (b, p, n)
    workload.warmup(1)
    target_s = max(meter.min_window_s, MIN_WINDOW_S)
    for i in range(2):
        r = record(workload, static, i)
        assert r["queries"] == r["calls"] * b
        assert r["tokens_out"] == b * n * (r["queries"] // b) == r["queries"] * n
        assert r["tokens_in"] == r["queries"] * p
        assert r["energy_j"] > 0 and r["energy_method"] in ("measured", "estimated")
        # derived figures multiply back to the window's energy and time
        assert r["energy_per_token_j"] * r["tokens_out"] == pytest.approx(r["energy_j"], rel=1e-12)
        assert r["energy_per_query_j"] * r["queries"] == pytest.approx(r["energy_j"], rel=1e-12)
        assert r["wh_per_1000_queries"] == pytest.approx(
            r["energy_j"] / r["queries"] * 1000 / J_PER_WH, rel=1e-12
        )
        assert r["tokens_per_s"] * r["duration_s"] == pytest.approx(r["tokens_out"], rel=1e-12)
        assert r["tokens_per_j"] * r["energy_j"] == pytest.approx(r["tokens_out"], rel=1e-12)
        # ttft + (n-1) tpot is the mean call: the calls' own clocks must fill the window, so the
        # harness does nothing measurable inside it besides the calls
        calls_s = r["calls"] * (r["ttft_s"] + (n - 1) * r["tpot_s"])
        assert 0.95 * r["duration_s"] <= calls_s <= r["duration_s"]
        assert r["duration_s"] >= 0.5 * target_s  # the call count was sized for the window
        assert 0 < r["latency_p50_s"] <= r["latency_p90_s"] <= r["latency_p99_s"]
        assert r["latency_p99_s"] <= r["duration_s"]
        assert 0 < r["ttft_s"] < r["latency_p99_s"]
        assert r["prefill_s"] > 0 and r["decode_s"] > 0 and r["prefill_j"] > 0
        assert r["peak_rss_mb"] > 10 and r["peak_vram_mb"] is None
    assert workload.summary()["calls_per_repetition"] == r["calls"]
    workload.teardown()


def test_exactly_new_tokens_even_when_the_model_predicts_its_end(meter, tmp_path):
    workload, _ = infer(meter, tmp_path, batch_size=1, prompt_tokens=8, new_tokens=6)
    model, ids = workload.loaded.model, workload.input_ids
    args = {"input_ids": ids, "attention_mask": workload.attention_mask, "do_sample": False}
    args["pad_token_id"] = workload.loaded.tokenizer.pad_token_id
    with torch.inference_mode():
        first = model.generate(**args, max_new_tokens=1)[0, -1].item()
        model.generation_config.eos_token_id = first  # the model's next token now ends the text
        plain = model.generate(**args, max_new_tokens=6)
    assert plain.shape[1] < 8 + 6  # without the harness's settings generation stops early
    out = workload.generate(6)
    assert out.shape == (1, 8 + 6)
    assert torch.equal(out[:, :8], ids)
    workload.teardown()


def test_prefill_and_decode_add_up_to_generation(meter, tmp_path):
    """decode_s is generate − prefill by construction, so prefill_s + decode_s = duration_s would
    say nothing. Here decode is measured on its own: generation continued from the KV cache that a
    prefill call left, which must produce the very same tokens as a full call. The workload's own
    prefill call plus this independent decode must take the time of its full call, within 5%.
    That fails if the prefill-only call does other work than the prefill inside a full call, or
    the full call more than prefill then decode. Each kind is timed call by call, interleaved, by
    the CPU time of this thread (torch runs on it alone: one thread), and its fastest call kept:
    wall time on a loaded shared machine penalises long calls more than short ones, CPU time much
    less. Known bias: the continuation pays generate's fixed per-call cost a second time (~1%).

    Then the record: its prefill window, scaled to the main window's calls, must agree with the
    prefill calls' own clocks (ttft_s), and decode_s with (new_tokens - 1) × tpot_s, which fails
    on a wrong scaling or work inside a window that is not the calls.
    """
    n = 16
    workload, static = infer(meter, tmp_path, 4, 32, n, source="builtin:tiny-l")
    workload.warmup(1)
    model = workload.loaded.model
    args = {"do_sample": False, "pad_token_id": workload.loaded.tokenizer.pad_token_id}
    with torch.inference_mode():
        full = workload.generate(n)
        prefilled = model.generate(
            input_ids=workload.input_ids, attention_mask=workload.attention_mask, **args,
            max_new_tokens=1, min_new_tokens=1, return_dict_in_generate=True,
        )  # fmt: skip
    seq = prefilled.sequences
    seq_mask = torch.ones_like(seq)

    def decode(cache):
        with torch.inference_mode():
            return model.generate(
                input_ids=seq, attention_mask=seq_mask, past_key_values=cache, **args,
                max_new_tokens=n - 1, min_new_tokens=n - 1,
            )  # fmt: skip

    assert torch.equal(decode(copy.deepcopy(prefilled.past_key_values)), full)
    fastest = {"prefill": math.inf, "decode": math.inf, "generate": math.inf}
    ratio = math.inf
    for _ in range(6):  # up to 6 × 5 rounds; the fastest calls only get closer to the truth
        for _ in range(5):
            for kind in fastest:
                cache = copy.deepcopy(prefilled.past_key_values) if kind == "decode" else None
                t0 = time.thread_time()
                if kind == "decode":
                    decode(cache)
                else:
                    workload.generate(1 if kind == "prefill" else n)
                fastest[kind] = min(fastest[kind], time.thread_time() - t0)
        ratio = (fastest["prefill"] + fastest["decode"]) / fastest["generate"]
        if abs(ratio - 1) <= 0.05:
            break
    assert ratio == pytest.approx(1.0, abs=0.05), fastest

    for i in range(2):
        r = record(workload, static, i)
        assert r["prefill_s"] / r["calls"] == pytest.approx(r["ttft_s"], rel=0.05)
        assert r["decode_s"] / r["calls"] == pytest.approx((n - 1) * r["tpot_s"], rel=0.05)
        assert r["prefill_j"] / r["energy_j"] == pytest.approx(
            r["prefill_s"] / r["duration_s"], rel=0.5
        )
    workload.teardown()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"batch_size": 0, "prompt_tokens": 8, "new_tokens": 4}, "batch_size must be a positive"),
        ({"batch_size": 1, "prompt_tokens": "8", "new_tokens": 4}, "prompt_tokens must be"),
        ({"batch_size": 1, "prompt_tokens": 8}, "new_tokens must be a positive integer"),
    ],
)
def test_bad_shape_is_one_line(meter, tmp_path, spec, message):
    with pytest.raises(HarnessError, match=message) as err:
        create(make_context(make_case({"type": "infer", **spec}), meter, tmp_path))
    assert "\n" not in str(err.value)


def test_too_long_for_the_model_is_one_line(meter, tmp_path):
    with pytest.raises(HarnessError, match=r"exceeds the context length .* \(1024\)") as err:
        infer(meter, tmp_path, batch_size=1, prompt_tokens=1000, new_tokens=100)
    assert "\n" not in str(err.value)
