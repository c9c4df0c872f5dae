"""The builtin family: small decoder-only Llama models that the harness trains itself.

They span ~100x in parameters (49k to 4.9M) so that a size-versus-energy-versus-accuracy curve can
be measured on a laptop CPU in minutes, with no download. A model is built with a fixed seed; once the ``train``
workload has saved it under ``<artifacts>/models/<name>``, later cases load that checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import HarnessError

if TYPE_CHECKING:
    from transformers import LlamaConfig, LlamaForCausalLM

#: architecture of each builtin size (the rest of the LlamaConfig is shared, see ``config``).
#: Params with the 709-token vocabulary (tied embeddings): 49k, 401k, 1.35M, 4.93M. After 400
#: steps of 16x64 tokens, tiny-xs < tiny-s < tiny-m on arith_mc; tiny-l needs more steps.
BUILTIN: dict[str, dict] = {
    "tiny-xs": {"hidden_size": 32, "intermediate_size": 96, "num_hidden_layers": 2,
                "num_attention_heads": 2},
    "tiny-s": {"hidden_size": 96, "intermediate_size": 256, "num_hidden_layers": 3,
               "num_attention_heads": 4},
    "tiny-m": {"hidden_size": 160, "intermediate_size": 432, "num_hidden_layers": 4,
               "num_attention_heads": 4},
    "tiny-l": {"hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 6,
               "num_attention_heads": 8},
}  # fmt: skip
MAX_POSITIONS = 1024
INIT_SEED = 0
#: config.json key that records which builtin a saved checkpoint was built from
CONFIG_KEY = "harness_builtin"


def check_name(name: str) -> None:
    if name not in BUILTIN:
        raise HarnessError(f"unknown builtin model {name!r} (known: {', '.join(BUILTIN)})")


def config(name: str) -> LlamaConfig:
    """The LlamaConfig of a builtin size, with the builtin tokenizer's vocabulary and ids."""
    from transformers import LlamaConfig

    from harness.models.tokenizer import load_tokenizer

    check_name(name)
    tok = load_tokenizer()
    arch = BUILTIN[name]
    return LlamaConfig(
        vocab_size=len(tok),
        max_position_embeddings=MAX_POSITIONS,
        num_key_value_heads=arch["num_attention_heads"],
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        **arch,
        **{CONFIG_KEY: name},
    )


def build(name: str, seed: int = INIT_SEED) -> LlamaForCausalLM:
    """A freshly initialised builtin model; the same seed gives the same weights."""
    import torch
    from transformers import LlamaForCausalLM

    cfg = config(name)
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG state alone
        torch.manual_seed(seed)
        return LlamaForCausalLM(cfg)


def checkpoint_dir(artifacts_dir: Path | None, model_name: str) -> Path | None:
    """Where the train workload saves (and loaders look for) a trained builtin model."""
    if artifacts_dir is None:
        return None
    return Path(artifacts_dir) / "models" / model_name


def trained_checkpoint(artifacts_dir: Path | None, model_name: str, builtin: str) -> Path | None:
    """The saved checkpoint of ``model_name`` if there is one, after checking it is ``builtin``."""
    import json

    folder = checkpoint_dir(artifacts_dir, model_name)
    if folder is None or not (folder / "config.json").is_file():
        return None
    saved = json.loads((folder / "config.json").read_text()).get(CONFIG_KEY)
    if saved != builtin:
        raise HarnessError(
            f"{folder} holds a model trained from builtin:{saved}, not builtin:{builtin}; "
            "give the model another name or remove that folder"
        )
    return folder
