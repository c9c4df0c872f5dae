"""The sglang engine: one file and one registry line, validated and refused as vLLM is."""

from __future__ import annotations

import pytest

from harness.errors import HarnessError
from harness.suite import SuiteError, expand, validate_data

SERVE = {"type": "serve", "concurrency": [1, 4], "requests": 8, "prompt_tokens": 8,
         "new_tokens": 8}  # fmt: skip


def suite(variant: dict, device: str = "cuda:0", source: str = "builtin:tiny-s") -> dict:
    return {
        "name": "s",
        "carbon": {"intensity_g_per_kwh": 100},
        "hardware": [{"name": "h", "device": device}],
        "models": [{"name": "tiny-s", "source": source}],
        "variants": [variant],
        "workloads": [SERVE, {"type": "infer", "batch_sizes": [1], "prompt_tokens": 8,
                              "new_tokens": 8}],
    }  # fmt: skip


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_a_gpu_server_engine_validates_on_cuda_and_serves_only(engine):
    cases = expand(validate_data(suite({"name": "v", "engine": engine, "dtype": "float16"})))
    # a server engine gets the serve cases, never the in-process infer one
    assert [c["case"] for c in cases] == ["tiny-s/v/h/serve-c1", "tiny-s/v/h/serve-c4"]
    assert all(c["variant"]["engine"] == engine for c in cases)


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
@pytest.mark.parametrize(
    ("variant", "kw", "message"),
    [
        ({}, {"device": "cpu"}, "variants.v: engine {e} runs on NVIDIA GPUs (cuda:N), not cpu"),
        (
            {},
            {"source": "hf:org/model"},
            "variants.v: engine {e} serves builtin: and path: models here, not hf:org/model",
        ),
        (
            {"quantization": "int8-dynamic"},
            {},
            "variants.0.quantization: int8-dynamic is in-process only, not engine {e}",
        ),
        (
            {"quantization": "gguf-q4_0"},
            {},
            "variants.0.quantization: gguf-q4_0 is served by engine llamacpp, not {e}",
        ),
        ({"url": "http://x"}, {}, "variants.0.url: only engine openai takes it"),
    ],
)
def test_a_gpu_server_engine_is_refused_in_one_line(engine, variant, kw, message):
    with pytest.raises(SuiteError) as e:
        validate_data(suite({"name": "v", "engine": engine, **variant}, **kw))
    assert e.value.problems == [message.format(e=engine)]


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_loading_is_refused_in_one_line_without_cuda(engine, tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from harness.engines import create_engine

    with pytest.raises(HarnessError) as e:
        create_engine(engine).load(
            {"name": "tiny-s", "source": "builtin:tiny-s"}, None, {"device": "cuda:0"}, tmp_path
        )
    assert str(e.value) == f"engine {engine} needs an NVIDIA GPU with CUDA; none is usable here"


def test_sglang_starts_its_own_server_on_loopback(tmp_path):
    from harness.engines import create_engine

    engine = create_engine("sglang")
    assert engine.serves and engine.name == "sglang"
    seen = {}

    def launch(cmd, health, log_path, timeout_s, name, env):
        seen.update(cmd=cmd, health=health, name=name, env=env)
        return 0.0

    engine.launch = launch
    engine.model_dir, engine.dtype, engine.gpu = tmp_path, "float16", "1"
    engine.columns = {"model": "tiny-s"}
    engine.start(parallel=4, ctx_per_slot=64, log_path=tmp_path / "log", port=8123)
    cmd = seen["cmd"]
    assert cmd[1:3] == ["-m", "sglang.launch_server"]
    assert cmd[cmd.index("--model-path") + 1] == str(tmp_path)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--max-running-requests") + 1] == "4"
    assert seen["health"] == "http://127.0.0.1:8123/health"
    assert seen["env"] == {"CUDA_VISIBLE_DEVICES": "1"} and seen["name"] == "sglang"
