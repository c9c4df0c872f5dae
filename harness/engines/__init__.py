"""How a model is run: one Engine interface, one module per kind, found by name.

An engine loads a model variant on a device and runs it for the workloads: ``infer`` asks it to
generate exactly ``new_tokens`` for a batch of prompts, ``accuracy`` for an lm-eval model to
score with, ``train`` for the module to train. ``transformers`` (in-process PyTorch) is the one
engine today and the default; a server engine (llama.cpp, vLLM, any OpenAI-compatible server)
is one new module here and one entry in ``REGISTRY``, named by a variant's ``engine``.

Each engine class says what it can do (``serves``, ``devices``, ``quantizations``,
``model_sources``, the variant ``keys`` only it takes, and its own checks); the suite validates a
variant by asking its engine (``variant_problem``, ``fit_problem``), never by its name.

Engines know nothing of meters, cases or launchers: the workload opens the windows around
what the engine does, so an engine's setup never lands in a measurement.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

#: engine name -> "module:class" (an engine module imports no heavy library at its top)
REGISTRY = {
    "transformers": "harness.engines.transformers:TransformersEngine",
    "llamacpp": "harness.engines.llamacpp:LlamaCppEngine",
    "openai": "harness.engines.openai:OpenAIEngine",
    "vllm": "harness.engines.vllm:VLLMEngine",
    "sglang": "harness.engines.sglang:SGLangEngine",
}
#: the in-process quantisations (transformers, torchao); an engine lists those it takes
IN_PROCESS_QUANTIZATIONS = ("int8-dynamic", "int8-weight", "int4-weight")
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
    #: whether the model runs behind a server (workloads send requests) or in-process
    serves: bool = False
    #: the device kinds it runs on ("cpu", "cuda"), and how a refusal says so
    devices: tuple[str, ...] = ("cpu", "cuda")
    devices_text: str = "runs on cpu or cuda:N"
    #: the variant quantisations it runs
    quantizations: tuple[str, ...] = IN_PROCESS_QUANTIZATIONS
    #: the model source prefixes it loads
    model_sources: tuple[str, ...] = ("builtin:", "path:", "hf:")
    #: variant keys that only this engine takes
    keys: tuple[str, ...] = ()
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

    # ------------------------------------------------------------------ what it can do
    @classmethod
    def quantization_problem(cls, quantization: str) -> str | None:
        """Why this engine cannot run ``quantization`` (one line), or None."""
        if quantization in cls.quantizations:
            return None
        home = next((e for e in engine_classes().values() if quantization in e.quantizations), None)
        if home is not None and home.serves:
            return f"quantization: {quantization} is served by engine {home.name}, not {cls.name}"
        return f"quantization: {quantization} is in-process only, not engine {cls.name}"

    @classmethod
    def check_variant(cls, variant: Any) -> str | None:
        """Why the variant's own settings do not fit this engine (beyond the shared checks)."""
        return None

    @classmethod
    def fit_problem(cls, device: str, model: Any, variant: Any) -> str | None:
        """Why this engine cannot run ``variant`` of ``model`` on ``device``, or None (a check
        that needs more than the suite, e.g. a model's shape, may raise HarnessError itself)."""
        if device.partition(":")[0] not in cls.devices:
            return f"engine {cls.name} {cls.devices_text}, not {device}"
        if not model.source.startswith(cls.model_sources):
            sources = " and ".join(cls.model_sources)
            return f"engine {cls.name} serves {sources} models here, not {model.source}"
        return None


def engine_name(variant: dict | None) -> str:
    return (variant or {}).get("engine") or DEFAULT_ENGINE


def engine_class(name: str = DEFAULT_ENGINE) -> type[Engine]:
    """The class of engine ``name``; an unknown name is one line naming the known ones."""
    try:
        module_name, _, cls_name = REGISTRY[name].partition(":")
    except KeyError:
        raise HarnessError(f"unknown engine {name!r} (known: {', '.join(REGISTRY)})") from None
    return getattr(importlib.import_module(module_name), cls_name)


def engine_classes() -> dict[str, type[Engine]]:
    """Every registered engine's class, in registry order."""
    return {name: engine_class(name) for name in REGISTRY}


def create_engine(name: str = DEFAULT_ENGINE) -> Engine:
    """A new engine of kind ``name``; an unknown name is one line naming the known ones."""
    return engine_class(name)()


def engine_keys() -> tuple[str, ...]:
    """The variant keys that some engine takes for itself, in registry order."""
    return tuple(k for cls in engine_classes().values() for k in cls.keys)


def variant_problem(variant: Any) -> str | None:
    """Why a suite variant does not fit its engine (``field: what``), or None."""
    cls = engine_class(engine_name({"engine": variant.engine}))
    if variant.quantization:
        problem = cls.quantization_problem(variant.quantization)
        if problem:
            return problem
    for other in engine_classes().values():
        for key in other.keys:
            if key not in cls.keys and getattr(variant, key, None) is not None:
                return f"{key}: only engine {other.name} takes it"
    return cls.check_variant(variant)


def serves(variant: Any) -> bool:
    """Whether the variant's engine runs its model behind a server."""
    return engine_class(engine_name({"engine": variant.engine})).serves


__all__ = [
    "DEFAULT_ENGINE",
    "IN_PROCESS_QUANTIZATIONS",
    "REGISTRY",
    "Engine",
    "Prompts",
    "create_engine",
    "engine_class",
    "engine_classes",
    "engine_keys",
    "engine_name",
    "serves",
    "variant_problem",
]
