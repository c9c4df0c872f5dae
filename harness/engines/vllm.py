"""vLLM's OpenAI-compatible server (``vllm serve``) on an NVIDIA GPU: the llamacpp lifecycle.

An optional extra (``pip install -e '.[vllm]'``, on a CUDA machine); refused in one line on a
machine without CUDA or without vLLM. The model is the checkpoint folder the harness loads
(a trained builtin model from the run's artifacts, or a ``path:`` folder): vLLM reads it as a
Hugging Face folder. ``--max-num-seqs`` is the concurrency, so the server batches what the
clients keep in flight; requests are token ids, as for llama.cpp. Prefix caching, on by default in
vLLM, is switched off (``--no-enable-prefix-caching``) unless the workload asks ``prefix_cache``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from harness.engines import ordinary_token_ids
from harness.engines.served import ServedEngine
from harness.engines.server import HOST, port_to_use
from harness.errors import HarnessError

INSTALL_HINT = "pip install -e '.[vllm]' on a machine with an NVIDIA GPU"


def check_cuda(engine: str = "vllm", module: str = "vllm", hint: str = INSTALL_HINT) -> None:
    """One line unless CUDA is usable and ``module`` (the engine's server) is installed."""
    try:
        import torch
    except ImportError:
        raise HarnessError(f"engine {engine} needs torch with CUDA: {hint}") from None
    if not torch.cuda.is_available():
        raise HarnessError(f"engine {engine} needs an NVIDIA GPU with CUDA; none is usable here")
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise HarnessError(f"engine {engine} is not installed: {hint}")


class VLLMEngine(ServedEngine):
    name = "vllm"
    devices = ("cuda",)
    devices_text = "runs on NVIDIA GPUs (cuda:N)"
    quantizations = ()
    model_sources = ("builtin:", "path:")

    def __init__(self) -> None:
        self.measure = None
        self.columns: dict = {}
        self.model_dir: Path | None = None
        self.gpu: str = "0"
        self._vocab: list[int] = []

    def load(
        self, model: dict, variant: dict | None, hardware: dict, artifacts_dir: Path | None
    ) -> dict:
        from harness.models import load_model

        self.check_installed()
        device = hardware.get("device", "cpu")
        if not str(device).startswith("cuda:"):
            raise HarnessError(f"engine {self.name} runs on cuda:N, not {device}")
        self.gpu = str(device).split(":", 1)[1]
        dtype = (variant or {}).get("dtype") or "float16"
        loaded = load_model(
            model, {"dtype": "float32"}, {**hardware, "device": "cpu"}, artifacts_dir
        )
        if loaded.path is None:
            raise HarnessError(
                f"engine {self.name} serves a saved checkpoint; {model.get('name')} has none yet "
                "(train it first in this run, or name a path: model)"
            )
        self.model_dir = loaded.path
        self._vocab = ordinary_token_ids(loaded.tokenizer)
        self.dtype = dtype
        self.columns = {**loaded.columns(), "dtype": dtype, "quantization": None}
        self.loaded = self.model_dir
        self.device = device
        return dict(self.columns)

    @classmethod
    def check_installed(cls) -> None:
        check_cuda()

    def start(
        self,
        parallel: int,
        ctx_per_slot: int,
        log_path: Path,
        port: int | None = None,
        health_timeout_s: float = 600.0,
    ) -> float:
        port = port_to_use(port)
        exe = shutil.which("vllm")
        cmd = [exe] if exe else [sys.executable, "-m", "vllm.entrypoints.cli.main"]
        cmd += [
            "serve", str(self.model_dir),
            "--host", HOST,
            "--port", str(port),
            "--served-model-name", self.columns.get("model") or "model",
            "--dtype", self.dtype,
            "--max-num-seqs", str(parallel),
            "--max-model-len", str(ctx_per_slot),
            "--disable-log-requests",
            # prefix caching is on by default in vLLM: a measured request would reuse what an
            # earlier one with the same prefix left in the KV cache
            "--enable-prefix-caching" if self.prefix_cache else "--no-enable-prefix-caching",
        ]  # fmt: skip
        self.base_url = f"http://{HOST}:{port}"
        env = {"CUDA_VISIBLE_DEVICES": self.gpu}
        health = f"{self.base_url}/health"
        return self.launch(cmd, health, log_path, health_timeout_s, name="vllm", env=env)

    def request_extra(self, prefix_cache: bool) -> dict:
        return {}  # its prefix cache is a server flag (start)

    def lm_eval_model(self, batch_size: int):
        """lm-eval's local-completions model pointed at this server (vLLM answers echo)."""
        from lm_eval.models.openai_completions import LocalCompletionsAPI

        if self.server is None:
            raise HarnessError(f"engine {self.name}: start the server before scoring through it")
        return LocalCompletionsAPI(
            base_url=self.completions_url,
            model=self.columns.get("model") or "model",
            tokenizer=str(self.model_dir),
            tokenizer_backend="huggingface",
            batch_size=batch_size,
        )
