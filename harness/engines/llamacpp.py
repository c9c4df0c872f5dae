"""llama.cpp's own OpenAI-compatible server, ``llama-server``, with ``--parallel N`` slots.

The binaries are built from the llama-cpp-python source package by scripts/install-llamacpp.sh
into ``.llamacpp/`` of the project (or ``$HARNESS_LLAMACPP_DIR``); a missing build is one line
naming that script. The server inside the llama-cpp-python package itself answers one request at
a time, so it could not show what continuous batching saves; this one can.

``load`` exports the model to GGUF and quantises it (``harness.models.gguf``, cached in the run's
artifacts, its energy measured through ``measure`` when the workload gives one); ``start`` runs
the server on 127.0.0.1 in its own process group (``harness.engines.server``). Prompts are token
ids (the builtin tokenizer lowercases, which a GGUF vocabulary cannot say), so the server never
tokenises text the harness sent.

Every request carries ``cache_prompt: false``, the server's default is the same
(``--no-cache-prompt``) and it keeps no prompt cache in host memory (``--cache-ram 0``), where the
build has those options, so each measured request is prefilled in full, unless
the workload asks ``prefix_cache: true``; its ``llamacpp:prompt_tokens_total`` counter (``/metrics``)
says how many prompt tokens it evaluated, which the serve workload checks against those it sent.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from harness.engines import ordinary_token_ids
from harness.engines.served import ServedEngine
from harness.engines.server import HOST, port_to_use
from harness.errors import HarnessError

INSTALL_HINT = "run scripts/install-llamacpp.sh (and pip install -e '.[serve]')"
#: seconds the server may take to load a model and answer /health
HEALTH_TIMEOUT_S = 120.0


def install_dir() -> Path:
    """Where scripts/install-llamacpp.sh builds (``$HARNESS_LLAMACPP_DIR`` or ``.llamacpp``)."""
    env = os.environ.get("HARNESS_LLAMACPP_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / ".llamacpp"


def binary(name: str) -> Path | None:
    """A built llama.cpp program, or one on PATH; None when neither exists."""
    built = install_dir() / "bin" / name
    if built.is_file() and os.access(built, os.X_OK):
        return built
    found = shutil.which(name)
    return Path(found) if found else None


def check_installed() -> tuple[Path, Path]:
    """(llama-server, llama-quantize), or one line saying how to install them."""
    server, quantize = binary("llama-server"), binary("llama-quantize")
    if server is None or quantize is None:
        missing = "llama-server" if server is None else "llama-quantize"
        raise HarnessError(
            f"engine llamacpp is not installed ({missing} not found): {INSTALL_HINT}"
        )
    try:
        import aiohttp  # noqa: F401
        import gguf  # noqa: F401
    except ImportError as e:
        raise HarnessError(
            f"engine llamacpp needs the serve extra ({e.name} missing): {INSTALL_HINT}"
        ) from None
    return server, quantize


#: GGUF types a llamacpp variant may ask for (harness.models.gguf.GGUF_TYPES, prefixed)
GGUF_QUANTIZATIONS = ("gguf-f16", "gguf-q8_0", "gguf-q5_0", "gguf-q4_0", "gguf-q4_k_m")


@functools.lru_cache(maxsize=4)
def server_help(server: Path) -> str:
    """``llama-server --help``: which options this build has."""
    try:
        proc = subprocess.run(
            [str(server), "--help"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout + proc.stderr


class LlamaCppEngine(ServedEngine):
    name = "llamacpp"
    devices = ("cpu",)
    devices_text = "is built for the cpu"
    quantizations = GGUF_QUANTIZATIONS
    model_sources = ("builtin:", "path:")

    @classmethod
    def quantization_problem(cls, quantization: str) -> str | None:
        if quantization in cls.quantizations:
            return None
        return (
            f"quantization: engine llamacpp runs GGUF types ({', '.join(GGUF_QUANTIZATIONS)}), "
            f"not {quantization}"
        )

    @classmethod
    def fit_problem(cls, device: str, model: Any, variant: Any) -> str | None:
        problem = super().fit_problem(device, model, variant)
        kind = (variant.quantization or "").removeprefix("gguf-")
        if problem is None and model.source.startswith("builtin:") and kind:
            try:  # a builtin model's widths must fit the GGUF type's blocks
                from harness.models import builtin, gguf
            except ImportError:
                return None
            arch = builtin.BUILTIN.get(model.source.removeprefix("builtin:"))
            if arch is not None and kind in gguf.GGUF_TYPES:
                gguf.check_shape(kind, arch["hidden_size"], arch["intermediate_size"], model.name)
        return problem

    def __init__(self) -> None:
        #: ``measure(name)``: a context manager (a meter window) around export work, or None
        self.measure = None
        self.gguf_path: Path | None = None
        self.columns: dict = {}
        self.threads: int | None = None
        self._vocab: list[int] = []
        self._context = None

    # ------------------------------------------------------------------ model
    def load(
        self, model: dict, variant: dict | None, hardware: dict, artifacts_dir: Path | None
    ) -> dict:
        from harness.models import gguf

        server_bin, quantize_bin = check_installed()
        self.server_bin = server_bin
        if hardware.get("device", "cpu") != "cpu":
            raise HarnessError(
                f"engine llamacpp is built for the cpu here, not {hardware.get('device')}"
            )
        kind = gguf.gguf_type((variant or {}).get("quantization")) or "f16"
        if artifacts_dir is None:
            raise HarnessError(
                "engine llamacpp needs the run's artifacts folder for its GGUF files"
            )
        converter = install_dir() / "convert" / "convert_hf_to_gguf.py"
        self.gguf_path, self.columns = gguf.export(
            model, kind, hardware, Path(artifacts_dir), quantize_bin, converter, self.measure
        )
        self.threads = hardware.get("threads")
        self.loaded = self.gguf_path
        self.device = "cpu"
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(gguf.saved_tokenizer(self.gguf_path)))
        self._vocab = ordinary_token_ids(self.tokenizer)
        self._context = int(getattr(self.tokenizer, "model_max_length", 0) or 0) or None
        return dict(self.columns)

    def context_length(self) -> int | None:
        return self._context

    # ----------------------------------------------------------------- server
    def start(
        self,
        parallel: int,
        ctx_per_slot: int,
        log_path: Path,
        port: int | None = None,
        health_timeout_s: float = HEALTH_TIMEOUT_S,
    ) -> float:
        """Start ``llama-server`` with ``parallel`` slots; seconds until it was healthy."""
        if self.gguf_path is None:
            raise HarnessError("engine llamacpp: load before start")
        self.stop()
        port = port_to_use(port)
        cmd = [
            str(self.server_bin),
            "--model", str(self.gguf_path),
            "--host", HOST,
            "--port", str(port),
            "--parallel", str(parallel),
            "--ctx-size", str(parallel * ctx_per_slot),
            "--cont-batching",
            "--metrics",
            "--no-webui",
            # the CPU's repacked q8_0/q4_0 layouts crash this llama.cpp on rows as short as the
            # builtin family's (96 wide: a segfault at start); the plain layout serves them
            "--no-repack",
            "--alias", self.columns.get("model") or "model",
        ]  # fmt: skip
        if self.threads:
            cmd += ["--threads", str(self.threads), "--threads-batch", str(self.threads)]
        if not self.prefix_cache:
            options = server_help(self.server_bin)
            if "--no-cache-prompt" in options:  # the default of requests that do not say
                cmd += ["--no-cache-prompt"]
            if "--cache-ram" in options:
                # newer servers also keep finished prompts in host memory, restored into a
                # slot by prefix: none of it while measuring full prefill
                cmd += ["--cache-ram", "0"]
        self.base_url = f"http://{HOST}:{port}"
        health = f"{self.base_url}/health"
        return self.launch(cmd, health, log_path, health_timeout_s, name="llama-server")

    # ------------------------------------------------------------- accuracy
    def lm_eval_model(self, batch_size: int) -> Any:
        """lm-eval's completions model pointed at this server (started here if it is not)."""
        from harness.engines.lmeval import ServerCompletionsLM
        from harness.models import gguf

        if self.server is None:
            raise HarnessError("engine llamacpp: start the server before scoring through it")
        return ServerCompletionsLM(
            base_url=self.completions_url,
            model=self.columns.get("model") or "model",
            tokenizer=str(gguf.saved_tokenizer(self.gguf_path)),
            vocab_size=len(self.tokenizer),
        )
