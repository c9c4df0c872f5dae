"""The in-process engine: a Hugging Face transformers model in this worker, on its torch device.

Loading is ``harness.models.load_model`` (builtin, path: or hf: sources; dtype and quantisation
variants). Generation is greedy, exactly ``new_tokens`` per prompt (end-of-sequence suppressed,
no padding), so the work of every call is the same. lm-eval scores the same loaded model through
its ``HFLM`` wrapper, so accuracy belongs to exactly the variant the energy figures describe.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from harness.engines import Engine, Prompts, ordinary_token_ids
from harness.errors import HarnessError


def fixed_prompts(model, tokenizer, batch_size: int, prompt_tokens: int, seed: int):
    """``batch_size`` prompts of exactly ``prompt_tokens`` ids: seeded, no special tokens.

    Random ids rather than text: a tokenizer turns text into a varying number of tokens, and the
    cost of a forward pass does not depend on which ids it is given.
    """
    import torch

    vocab = model.get_input_embeddings().num_embeddings
    if tokenizer is not None:
        vocab = min(vocab, len(tokenizer))
    allowed = torch.tensor(ordinary_token_ids(tokenizer, vocab), dtype=torch.long)
    if allowed.numel() == 0:
        raise HarnessError("the model's vocabulary has no ordinary tokens to build prompts from")
    gen = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, allowed.numel(), (batch_size, prompt_tokens), generator=gen)
    input_ids = allowed[picks]
    return input_ids, torch.ones_like(input_ids)


class TransformersEngine(Engine):
    name = "transformers"

    def __init__(self) -> None:
        #: a context-manager factory (a meter's ``window``) around making a variant on load
        #: (pruning, quantising), so that the workload can publish what making it cost
        self.making_window = None
        self._sync = None
        self._prompts: Prompts | None = None
        self._generate_kwargs: dict = {}

    def load(
        self, model: dict, variant: dict | None, hardware: dict, artifacts_dir: Path | None
    ) -> dict:
        from harness.models import load_model

        self.loaded = load_model(model, variant, hardware, artifacts_dir, self.making_window)
        self.device = self.loaded.device
        if self.device.type == "cuda":
            import torch

            self._sync = functools.partial(torch.cuda.synchronize, self.device)
        return self.loaded.columns()

    def context_length(self) -> int | None:
        config = getattr(self.loaded.model, "config", None)
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "n_ctx"):
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def prompts(self, batch_size: int, prompt_tokens: int, seed: int) -> Prompts:
        ids, mask = fixed_prompts(
            self.loaded.model, self.loaded.tokenizer, batch_size, prompt_tokens, seed
        )
        tokenizer = self.loaded.tokenizer
        pad = getattr(tokenizer, "pad_token_id", None)
        if pad is None:
            pad = getattr(tokenizer, "eos_token_id", None)
        prompts = Prompts(input_ids=ids.to(self.device), attention_mask=mask.to(self.device))
        # the same arguments for every call, built once: nothing but the call inside a window
        self._generate_kwargs = {
            "input_ids": prompts.input_ids,
            "attention_mask": prompts.attention_mask,
            "do_sample": False,
            "num_beams": 1,
            "use_cache": True,
            "pad_token_id": pad if pad is not None else 0,
        }
        self._prompts = prompts
        return prompts

    def generate(self, prompts: Prompts, new_tokens: int) -> Any:
        import torch

        if prompts is not self._prompts:
            raise HarnessError("generate: these prompts were not built by this engine's prompts()")
        with torch.inference_mode():
            out = self.loaded.model.generate(
                **self._generate_kwargs, max_new_tokens=new_tokens, min_new_tokens=new_tokens
            )
        # min_new_tokens keeps every row from ending early; the shape is a cheap guard on that
        batch_size, prompt_tokens = prompts.shape
        expected = (batch_size, prompt_tokens + new_tokens)
        if tuple(out.shape) != expected:
            raise HarnessError(
                f"generate returned shape {tuple(out.shape)}, expected {expected}: "
                "the model stopped before new_tokens"
            )
        return out

    def synchronize(self) -> None:
        if self._sync is not None:
            self._sync()

    def lm_eval_model(self, batch_size: int) -> Any:
        from lm_eval.models.huggingface import HFLM

        return HFLM(
            pretrained=self.loaded.model, tokenizer=self.loaded.tokenizer, batch_size=batch_size
        )

    def trainable(self) -> tuple[Any, Any]:
        return self.loaded.model, self.loaded.tokenizer

    def close(self) -> None:
        import gc

        device = self.device
        self.loaded = None
        self._generate_kwargs = {}
        self._prompts = None
        gc.collect()
        if device is not None and device.type == "cuda":
            import torch

            torch.cuda.empty_cache()
