"""Models: the generated corpus and tasks, the tokenizer, the builtin family, sources, variants."""

from __future__ import annotations

import json
import re

import pytest
import torch

from harness import hardware
from harness.errors import HarnessError
from harness.models import builtin, corpus, load_model, parse_source
from harness.models.tokenizer import TOKENIZER_FILE, load_tokenizer, train_tokenizer_json

CPU = {"name": "cpu", "device": "cpu", "threads": None, "memory_limit_mb": None}


# ---------------------------------------------------------------------------- corpus and tasks
def test_train_text_is_deterministic_per_seed():
    assert corpus.train_text(200, seed=3) == corpus.train_text(200, seed=3)
    assert corpus.train_text(200, seed=3) != corpus.train_text(200, seed=4)
    docs = corpus.train_text(n_chars=5000)
    assert sum(len(d) + 1 for d in docs) >= 5000 > sum(len(d) + 1 for d in docs[:-1])


@pytest.fixture(scope="module")
def big_text() -> str:
    # several seeds, so that "never appears" is tested beyond the first documents
    docs = [d for seed in range(3) for d in corpus.train_text(6000, seed=seed)]
    return "\n".join(" " + d + " " for d in docs)


@pytest.mark.parametrize("task", sorted(corpus.TASKS))
def test_held_out_questions_never_appear_in_the_training_text(task, big_text):
    test = corpus.task_examples(task, "test")
    train = corpus.task_examples(task, "train")
    assert len(test) >= 40
    for ex in test:
        assert len(ex["choices"]) == 4 and len(set(ex["choices"])) == 4
        assert 0 <= ex["answer"] < 4
        assert f" {ex['question']} " not in big_text, ex["question"]
    # the same form of question about training facts is in the text, with its answer
    seen = sum(f" {ex['question']} {ex['choices'][ex['answer']]} " in big_text for ex in train[:50])
    assert seen >= 45


def test_held_out_facts_are_stated_in_other_words(big_text):
    w = corpus.world()
    for country in w.capital_test:
        assert f" flew to {w.capital_of[country]} in {country} " in big_text
    for obj in sorted(w.colour_test)[:20]:
        size, thing = obj.split()
        assert re.search(rf" has a {size} {w.colour_of[obj]} {thing} ", big_text), obj


def test_answers_are_spread_over_positions():
    answers = [ex["answer"] for ex in corpus.task_examples("arith_mc")]
    counts = [answers.count(i) for i in range(4)]
    assert min(counts) > len(answers) / 8


def test_shipped_task_files_match_the_generator(tmp_path):
    written = {p.name: p.read_text() for p in corpus.write_tasks(tmp_path)}
    assert written == corpus.task_files()
    assert {"arith_mc.yaml", "arith_mc.jsonl", "successor_mc.yaml", "facts_mc.yaml"} <= set(written)
    shipped_dirs = [corpus.tasks_dir(), builtin_data_tasks()]
    for folder in shipped_dirs:
        for name, text in written.items():
            assert (folder / name).read_text() == text, f"{folder / name} is stale: regenerate"
    rows = [json.loads(line) for line in written["arith_mc.jsonl"].splitlines()]
    assert rows == corpus.task_examples("arith_mc")


def builtin_data_tasks():
    from pathlib import Path

    return Path(corpus.__file__).resolve().parent.parent / "data" / "tasks"


def test_task_examples_bad_names():
    with pytest.raises(HarnessError, match="unknown task 'nope'"):
        corpus.task_examples("nope")
    with pytest.raises(HarnessError, match="unknown split"):
        corpus.task_examples("arith_mc", "dev")


# ---------------------------------------------------------------------------- tokenizer
def test_shipped_tokenizer_is_the_trained_one():
    assert TOKENIZER_FILE.read_text() == train_tokenizer_json() + "\n"


def test_tokenizer_keeps_corpus_words_whole_and_round_trips():
    tok = load_tokenizer()
    assert 256 <= len(tok) <= 1024
    split = [w for w in corpus.vocabulary() if len(tok(w, add_special_tokens=False).input_ids) != 1]
    assert split == []
    text = corpus.train_text(3)[0]
    ids = tok(text, add_special_tokens=False).input_ids
    assert len(ids) == len(text.split())
    assert tok.decode(ids) == text
    # other text still encodes without unknowns
    assert tok.unk_token_id not in tok("a quick fox, 42!", add_special_tokens=False).input_ids
    assert tok.padding_side == "left" and tok.pad_token and tok.eos_token and tok.bos_token


# ---------------------------------------------------------------------------- builtin family
def _params_on_meta(name: str) -> int:
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        return sum(p.numel() for p in LlamaForCausalLM(builtin.config(name)).parameters())


def test_builtin_family_spans_thirty_times_in_size():
    assert len(builtin.BUILTIN) >= 4
    sizes = [_params_on_meta(name) for name in builtin.BUILTIN]
    assert sizes == sorted(sizes), "BUILTIN is listed from small to large"
    assert sizes[-1] / sizes[0] >= 30


def test_builtin_init_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = builtin.build("tiny-xs")
    after = torch.rand(1)
    b = builtin.build("tiny-xs")
    assert torch.equal(before, after)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_fresh_builtin_is_marked_untrained(tmp_path):
    lm = load_model({"name": "tiny-xs", "source": "builtin:tiny-xs"}, None, CPU, tmp_path)
    assert lm.trained is False and lm.path is None
    cols = lm.columns()
    assert cols["model"] == "tiny-xs" and cols["model_source"] == "builtin:tiny-xs"
    assert cols["dtype"] == "float32" and cols["quantization"] is None
    assert cols["params"] == _params_on_meta("tiny-xs")


# ---------------------------------------------------------------------------- path: and variants
@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved") / "tiny-s"
    builtin.build("tiny-s").save_pretrained(folder)
    load_tokenizer().save_pretrained(folder)
    return folder


def _generate(lm, n_new: int = 4) -> torch.Tensor:
    enc = lm.tokenizer(["1 plus 2 is", "after 7"], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = lm.model.generate(
            **enc.to(lm.device), max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False
        )
    return out


def test_path_source_with_variants(saved_dir):
    source = {"name": "mine", "source": f"path:{saved_dir}"}
    fp32 = load_model(source, {"dtype": "float32"}, CPU)
    bf16 = load_model(source, {"name": "bf16", "dtype": "bfloat16"}, CPU)
    int8 = load_model(source, {"dtype": "float32", "quantization": "int8-dynamic"}, CPU)
    assert fp32.path == saved_dir and fp32.trained is None
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    assert fp32.params == bf16.params == int8.params == _params_on_meta("tiny-s")
    assert bf16.model_size_mb == pytest.approx(fp32.model_size_mb / 2, rel=0.02)
    assert int8.model_size_mb < 0.6 * fp32.model_size_mb
    # fp32 weights: 4 bytes per parameter, tied embeddings counted once
    assert fp32.model_size_mb == pytest.approx(fp32.params * 4 / 2**20, rel=0.01)
    assert int8.columns()["quantization"] == "int8-dynamic"
    # the tied output layer stays tied (lm-eval calls tie_weights on the model it is given)
    int8.model.tie_weights()
    assert int8.model.get_output_embeddings().weight is int8.model.get_input_embeddings().weight
    assert "QuantizedLinear" in type(int8.model.model.layers[0].mlp.up_proj).__name__ or (
        "quantized" in type(int8.model.model.layers[0].mlp.up_proj).__module__
    )
    for lm in (fp32, bf16, int8):
        out = _generate(lm)
        assert out.shape[1] == 4 + lm.tokenizer(["1 plus 2 is"]).input_ids[0].__len__()
        logits = lm.model(**lm.tokenizer(["2 plus 2 is"], return_tensors="pt")).logits
        assert torch.isfinite(logits.float()).all()


def test_float16_runs_on_this_cpu(saved_dir):
    # torch >= 2.1 has CPU float16 kernels, so the harness allows it (it is slow, not wrong)
    lm = load_model({"source": f"path:{saved_dir}"}, {"dtype": "float16"}, CPU)
    assert next(lm.model.parameters()).dtype == torch.float16
    assert _generate(lm).shape[0] == 2


def _one_line_error(fn, match: str) -> str:
    with pytest.raises(HarnessError, match=match) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message and message
    return message


def test_bad_model_input_gets_one_line(tmp_path):
    msg = _one_line_error(
        lambda: load_model({"source": "builtin:tiny-huge"}, None, CPU), "unknown builtin model"
    )
    assert all(name in msg for name in builtin.BUILTIN)
    _one_line_error(
        lambda: load_model({"source": f"path:{tmp_path}/nope"}, None, CPU),
        f"model path {tmp_path}/nope does not exist",
    )
    _one_line_error(lambda: load_model({"source": f"path:{tmp_path}"}, None, CPU), "config.json")
    _one_line_error(lambda: parse_source("s3:bucket/model"), "unknown model source 's3:")
    _one_line_error(lambda: parse_source("tiny-s"), "unknown model source")
    _one_line_error(lambda: parse_source("builtin:"), "names nothing")
    _one_line_error(
        lambda: load_model({"source": "builtin:tiny-xs"}, {"dtype": "float8"}, CPU),
        "unknown dtype 'float8'",
    )
    _one_line_error(
        lambda: load_model(
            {"source": "builtin:tiny-xs"},
            {"dtype": "bfloat16", "quantization": "int8-dynamic"},
            CPU,
        ),
        "set dtype: float32",
    )
    _one_line_error(
        lambda: load_model({"source": "builtin:tiny-xs"}, {"quantization": "int4"}, CPU),
        "unknown quantization",
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_a_gpu_is_one_line():
    gpu = {"name": "gpu", "device": "cuda:0"}
    _one_line_error(
        lambda: load_model({"source": "builtin:tiny-xs"}, None, gpu),
        "cuda:0 requested but torch sees no CUDA device",
    )
    _one_line_error(lambda: hardware.describe(gpu), "torch sees no CUDA device")


def test_int8_dynamic_is_refused_on_cuda():
    from harness.models import _check_device

    _one_line_error(
        lambda: _check_device("float32", "int8-dynamic", torch.device("cuda", 0)),
        "int8-dynamic quantization runs on the cpu only",
    )


def test_hf_model_missing_from_the_offline_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    _one_line_error(
        lambda: load_model({"source": "hf:nobody/no-such-model"}, None, CPU),
        "hf:nobody/no-such-model is not in the local Hugging Face cache",
    )


def test_memory_cap_is_checked_before_loading():
    capped = {**CPU, "name": "edge", "memory_limit_mb": 1}
    _one_line_error(
        lambda: load_model({"source": "builtin:tiny-m"}, None, capped), "memory_limit_mb: 1"
    )
    hardware.check_memory(0.5, capped)  # fits: no error


# ---------------------------------------------------------------------------- hardware
def test_hardware_profiles():
    assert hardware.parse_device("cpu") == ("cpu", None)
    assert hardware.parse_device("cuda:2") == ("cuda", 2)
    assert hardware.parse_device("cuda") == ("cuda", 0)
    _one_line_error(lambda: hardware.parse_device("tpu:0"), "unknown device 'tpu:0'")
    facts = hardware.host_facts()
    assert facts["logical_cores"] >= 1 and facts["python"] and facts["cpu"]
    desc = hardware.describe({"device": "cpu", "threads": 1})
    assert desc["cores"] == 1 and desc["device_name"] and desc["memory_mb"] > 0
    before = torch.get_num_threads()
    try:
        hardware.apply_profile({"name": "one", "device": "cpu", "threads": 1})
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    _one_line_error(
        lambda: hardware.apply_profile({"name": "x", "device": "cpu", "threads": 0}), "threads"
    )


def test_the_task_files_have_one_copy():
    """harness/data/tasks is the copy; suites/tasks is a link to it, never a second copy."""
    from pathlib import Path

    root = Path(corpus.__file__).resolve().parents[2]
    assert corpus.tasks_dir() == builtin_data_tasks()
    link = root / "suites" / "tasks"
    assert link.is_symlink() and link.resolve() == builtin_data_tasks()
