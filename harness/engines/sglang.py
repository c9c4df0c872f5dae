"""SGLang's OpenAI-compatible server (``python -m sglang.launch_server``) on an NVIDIA GPU.

Started as vLLM's is (``vllm.py``): the checkpoint folder the harness loads, on ``cuda:N``, token
ids as prompts, ``--max-running-requests`` as the concurrency so the server batches what the
clients keep in flight. Refused in one line off CUDA or without SGLang installed
(``pip install 'sglang[all]'`` on a CUDA machine).
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness.engines.server import HOST, port_to_use
from harness.engines.vllm import VLLMEngine, check_cuda

INSTALL_HINT = "pip install 'sglang[all]' on a machine with an NVIDIA GPU"


class SGLangEngine(VLLMEngine):
    name = "sglang"

    @classmethod
    def check_installed(cls) -> None:
        check_cuda("sglang", "sglang", INSTALL_HINT)

    def start(
        self,
        parallel: int,
        ctx_per_slot: int,
        log_path: Path,
        port: int | None = None,
        health_timeout_s: float = 600.0,
    ) -> float:
        port = port_to_use(port)
        cmd = [
            sys.executable, "-m", "sglang.launch_server",
            "--model-path", str(self.model_dir),
            "--host", HOST,
            "--port", str(port),
            "--served-model-name", self.columns.get("model") or "model",
            "--dtype", self.dtype,
            "--max-running-requests", str(parallel),
            "--context-length", str(ctx_per_slot),
        ]  # fmt: skip
        self.base_url = f"http://{HOST}:{port}"
        env = {"CUDA_VISIBLE_DEVICES": self.gpu}
        health = f"{self.base_url}/health"
        return self.launch(cmd, health, log_path, health_timeout_s, name="sglang", env=env)
