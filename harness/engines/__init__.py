"""How a model is run: one Engine interface, one module per kind, found by name.

An engine loads a model variant on a device and runs it for the workloads: ``infer`` asks it to
generate exactly ``new_tokens`` for a batch of prompts, ``accuracy`` for an lm-eval model to
score with, ``train`` for the module to train. ``transformers`` (in-process PyTorch) is the one
engine today and the default; a server engine (llama.cpp, vLLM, any OpenAI-compatible server)
is one new module here and one entry in ``REGISTRY``, named by a variant's ``engine``.

Engines know nothing of meters, cases or launchers: the workload opens the windows around
what the engine does, so an engine's setup never lands in a measurement.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

#: engine name -> "module:class"
REGISTRY = {
    "transformers": "harness.engines.transformers:TransformersEngine",
    "llamacpp": "harness.engines.llamacpp:LlamaCppEngine",
    "openai": "harness.engines.openai:OpenAIEngine",
    "vllm": "harness.engines.vllm:VLLMEngine",
}
DEFAULT_ENGINE = "transformers"


def ordinary_token_ids(tokenizer: Any, vocab: int | None = None) -> list[int]:
    """The ids below ``vocab`` (default: the tokenizer's size) that are not special tokens: what
    every engine draws its seeded prompts from."""
    special = set(getattr(tokenizer, "all_special_ids", None) or [])
    size = len(tokenizer) if vocab is None else vocab
    return [i for i in range(size) if i not in special]


@dataclass
class Prompts:
    """A batch of prompts as token ids: ``batch_size`` rows of exactly ``prompt_tokens`` ids."""

    input_ids: Any
    attention_mask: Any

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.input_ids.shape)


class Engine:
    """The interface. ``load`` first; then any of the rest; ``close`` frees what load took."""

    name = "?"
    #: what ``load`` loaded (engine-specific), None before
    loaded: Any = None
    #: the device the model runs on (a torch.device for in-process engines), None before load
    device: Any = None

    def load(
        self, model: dict, variant: dict | None, hardware: dict, artifacts_dir: Path | None
    ) -> dict:
        """Load ``model`` as ``variant`` on ``hardware``'s device; return its static columns
        (model, model_source, params, model_size_mb, dtype, quantization, trained)."""
        raise NotImplementedError

    def context_length(self) -> int | None:
        """The most tokens (prompt and generated) the model attends to, if it says."""
        return None

    def prompts(self, batch_size: int, prompt_tokens: int, seed: int) -> Prompts:
        """``batch_size`` seeded prompts of exactly ``prompt_tokens`` ordinary token ids."""
        raise NotImplementedError

    def generate(self, prompts: Prompts, new_tokens: int) -> Any:
        """Greedy generation of exactly ``new_tokens`` tokens per prompt (never fewer)."""
        raise NotImplementedError

    def synchronize(self) -> None:
        """Wait until the device has done the work handed to it (a window edge needs this)."""

    def lm_eval_model(self, batch_size: int) -> Any:
        """An lm-eval ``LM`` that scores with this very model (variant, device)."""
        raise HarnessError(f"engine {self.name} cannot be scored by lm-eval")

    def trainable(self) -> tuple[Any, Any]:
        """The module to train in-process and its tokenizer, for engines that can."""
        raise HarnessError(f"engine {self.name} cannot train a model")

    def close(self) -> None:
        """Free the model (and the device memory it held)."""


def engine_name(variant: dict | None) -> str:
    return (variant or {}).get("engine") or DEFAULT_ENGINE


def create_engine(name: str = DEFAULT_ENGINE) -> Engine:
    """A new engine of kind ``name``; an unknown name is one line naming the known ones."""
    try:
        module_name, _, cls_name = REGISTRY[name].partition(":")
    except KeyError:
        raise HarnessError(f"unknown engine {name!r} (known: {', '.join(REGISTRY)})") from None
    return getattr(importlib.import_module(module_name), cls_name)()


__all__ = ["DEFAULT_ENGINE", "REGISTRY", "Engine", "Prompts", "create_engine", "engine_name"]
