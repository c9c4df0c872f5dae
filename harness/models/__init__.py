"""Model sources and variants: one way to load a model for every workload.

Sources: ``builtin:<name>`` (the family in ``builtin.py``, trained by the ``train`` workload),
``path:/dir`` (a ``save_pretrained`` folder) and ``hf:org/name`` (the Hugging Face cache; the
harness never needs the network when HF_HUB_OFFLINE=1). Variants: dtype float32 / bfloat16 /
float16, ``quantization: int8-dynamic`` (torch dynamic quantisation of nn.Linear, CPU only),
``int8-weight`` / ``int4-weight`` (torchao weight-only quantisation; see ``variants.py``) and
``prune`` (magnitude or whole-neuron pruning). A variant is made from the loaded model on load;
the caller may give a ``making_window`` in which that happens, so that its energy is measured.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

SOURCES = ("builtin", "path", "hf")
DTYPES = ("float32", "bfloat16", "float16")
QUANTIZATIONS = ("int8-dynamic", "int8-weight", "int4-weight")
_BYTES_PER_PARAM = {"float32": 4, "bfloat16": 2, "float16": 2}
MB = 2**20  # model_size_mb and memory figures are in MiB


@dataclass
class LoadedModel:
    """A model ready to run, with the facts every record about it carries."""

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    name: str
    source: str
    dtype: str
    quantization: str | None
    #: parameter count before quantisation (tied weights counted once)
    params: int
    #: bytes of parameters and buffers as held in memory (after quantisation), in MiB
    model_size_mb: float
    #: builtin: whether a trained checkpoint was loaded; None for path/hf (pretrained elsewhere)
    trained: bool | None
    #: the folder the weights came from (None for a freshly initialised builtin)
    path: Path | None
    #: share of weights pruned, and how (magnitude: zeroed; neurons: removed)
    prune: float | None = None
    prune_method: str | None = None
    #: parameters as stored (a magnitude-pruned model keeps its zeros; ``params`` counts nonzero)
    params_stored: int | None = None
    #: the energy and time of making the variant on load (quantising, pruning), when measured
    making: dict | None = None

    def columns(self) -> dict[str, Any]:
        out = {
            "model": self.name,
            "model_source": self.source,
            "params": self.params,
            "model_size_mb": self.model_size_mb,
            "dtype": self.dtype,
            "quantization": self.quantization,
            "trained": self.trained,
        }
        if self.prune is not None:
            out.update(prune=self.prune, prune_method=self.prune_method)
            out["params_stored"] = self.params_stored
        if self.making:
            out.update(self.making)
        return out


def parse_source(source: str) -> tuple[str, str]:
    """``"builtin:tiny-s"`` -> ("builtin", "tiny-s"); also ``path:/dir`` and ``hf:org/name``."""
    kind, sep, ref = str(source).partition(":")
    if not sep or kind not in SOURCES:
        raise HarnessError(
            f"unknown model source {source!r} (use builtin:<name>, path:<dir> or hf:<org/name>)"
        )
    if not ref.strip():
        raise HarnessError(f"model source {source!r} names nothing after {kind}:")
    return kind, ref.strip()


def _variant(variant: dict | None) -> tuple[str, str | None]:
    variant = variant or {}
    dtype = variant.get("dtype") or "float32"
    quant = variant.get("quantization") or None
    if dtype not in DTYPES:
        raise HarnessError(f"unknown dtype {dtype!r} (known: {', '.join(DTYPES)})")
    if quant is not None and quant not in QUANTIZATIONS:
        raise HarnessError(f"unknown quantization {quant!r} (known: {', '.join(QUANTIZATIONS)})")
    if quant == "int8-dynamic" and dtype != "float32":
        raise HarnessError(
            f"int8-dynamic quantises a float32 model; set dtype: float32, not {dtype}"
        )
    return dtype, quant


def _prune_of(variant: dict | None) -> tuple[float | None, str]:
    variant = variant or {}
    fraction = variant.get("prune")
    method = variant.get("prune_method") or "magnitude"
    if fraction is None:
        return None, method
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise HarnessError(f"prune must be a share between 0 and 1, not {fraction!r}")
    if method not in ("magnitude", "neurons"):
        raise HarnessError(f"unknown prune_method {method!r} (known: magnitude, neurons)")
    return float(fraction), method


def _check_device(dtype: str, quant: str | None, device: torch.device) -> None:
    if quant == "int8-dynamic" and device.type != "cpu":
        raise HarnessError(f"int8-dynamic quantization runs on the cpu only, not on {device}")
    if quant in ("int8-weight", "int4-weight"):
        from harness.models.variants import torchao_refusal

        why = torchao_refusal()
        if why:
            raise HarnessError(f"{quant}: {why}")
    # float16 on the CPU works in torch >= 2.1 (slowly); older builds lack the kernels
    if dtype == "float16" and device.type == "cpu":
        import torch

        try:
            a = torch.ones(2, 2, dtype=torch.float16)
            (a @ a).sum().item()
        except RuntimeError:
            raise HarnessError("float16 is not supported on cpu; use bfloat16 or float32") from None


def _hub_error(what: str, err: Exception) -> HarnessError:
    offline = os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True", "YES", "yes")
    offline |= os.environ.get("TRANSFORMERS_OFFLINE") in ("1", "true", "True", "YES", "yes")
    if offline:
        return HarnessError(
            f"{what} is not in the local Hugging Face cache and downloads are off "
            "(HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE); download it on a connected machine first"
        )
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return HarnessError(f"could not load {what}: {first}")


def _count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields tied weights once


def _tensor_bytes(value: Any, seen: set[int]) -> int:
    """Bytes of a state_dict value: tensors (quantised ones too) and the tuples of packed params."""
    import torch

    if isinstance(value, (tuple, list)):
        return sum(_tensor_bytes(v, seen) for v in value)
    if not isinstance(value, torch.Tensor):
        return 0
    flatten = getattr(type(value), "__tensor_flatten__", None)
    if flatten is not None:  # a tensor subclass (torchao's quantised weights): its inner tensors
        names, _ = value.__tensor_flatten__()
        return sum(_tensor_bytes(getattr(value, n), seen) for n in names)
    try:
        key = value.data_ptr()
    except RuntimeError:
        key = id(value)
    if key in seen and key != 0:  # tied weights share memory: count them once
        return 0
    seen.add(key)
    return value.numel() * value.element_size()


def model_size_mb(model: torch.nn.Module) -> float:
    """MiB of the state_dict as held in memory: int8 packed weights count one byte each."""
    seen: set[int] = set()
    return sum(_tensor_bytes(v, seen) for v in model.state_dict().values()) / MB


def made_checkpoint(artifacts_dir: Path | None, name: str) -> Path | None:
    """The checkpoint a case of this run saved for a path:/hf: model (a fine-tune), if any."""
    if artifacts_dir is None:
        return None
    folder = Path(artifacts_dir) / "models" / name
    return folder if (folder / "config.json").is_file() else None


def _estimate_params(kind: str, ref: str, trust_remote_code: bool) -> int | None:
    """Parameters of the model to load, from its config alone (weights on the meta device)."""
    import torch

    try:
        if kind == "builtin":
            from transformers import LlamaForCausalLM

            from harness.models import builtin

            cfg = builtin.config(ref)
            with torch.device("meta"):
                return _count_params(LlamaForCausalLM(cfg))
        from transformers import AutoConfig, AutoModelForCausalLM

        cfg = AutoConfig.from_pretrained(ref, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            meta = AutoModelForCausalLM.from_config(cfg, trust_remote_code=trust_remote_code)
        return _count_params(meta)
    except HarnessError:
        raise
    except Exception:  # an exotic config: skip the estimate, the load itself will tell
        return None


def _load_pretrained(where: str, what: str, dtype: Any, trust_remote_code: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            where, dtype=dtype, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as e:
        raise _hub_error(what, e) from None
    return model, tokenizer


def load_model(
    model: dict,
    variant: dict | None,
    hardware: dict,
    artifacts_dir: Path | None = None,
    making_window: Callable[[str], Any] | None = None,
) -> LoadedModel:
    """Load ``model`` (a suite's model entry) as ``variant`` on ``hardware``'s device.

    A builtin model is loaded from ``artifacts_dir/models/<name>`` when the train workload saved
    it there (``trained=True``), else freshly initialised with a fixed seed (``trained=False``).
    ``making_window(name)``: a context manager (a meter window) around pruning and quantising,
    whose ``measurement`` becomes the ``produce_variant_j`` / ``produce_variant_s`` columns.
    """
    import torch

    from harness import hardware as hw_mod

    source = model.get("source") or ""
    kind, ref = parse_source(source)
    name = model.get("name") or ref
    trust = bool(model.get("trust_remote_code", False))
    dtype, quant = _variant(variant)
    prune, prune_method = _prune_of(variant)
    device = hw_mod.torch_device(hardware)
    _check_device(dtype, quant, device)

    where: Path | str | None = None
    if kind == "builtin":
        from harness.models import builtin

        builtin.check_name(ref)
        where = builtin.trained_checkpoint(artifacts_dir, name, ref)
    elif made_here := made_checkpoint(artifacts_dir, name):
        where = made_here  # a train, distill or finetune case of this run made it from the source
    elif kind == "path":
        where = Path(ref).expanduser()
        if not where.exists():
            raise HarnessError(f"model path {ref} does not exist")
        if not (where / "config.json").is_file():
            raise HarnessError(
                f"model path {ref} has no config.json (not a save_pretrained folder)"
            )
    else:
        where = ref

    made = kind != "builtin" and where is not None and where == made_checkpoint(artifacts_dir, name)
    estimate = _estimate_params(kind, str(where) if kind != "builtin" else ref, trust)
    if estimate is not None:
        # a quantised model is first loaded in float32
        hw_mod.check_memory(estimate * _BYTES_PER_PARAM[dtype] / MB, hardware)

    torch_dtype = getattr(torch, dtype)
    trained: bool | None = None
    if kind == "builtin" and where is None:
        from harness.models import builtin
        from harness.models.tokenizer import load_tokenizer

        net = builtin.build(ref).to(torch_dtype)
        tokenizer = load_tokenizer()
        trained = False
    else:
        net, tokenizer = _load_pretrained(str(where), source, torch_dtype, trust)
        trained = True if kind == "builtin" or made else None

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # generation appends on the right
    gen = getattr(net, "generation_config", None)
    if gen is not None and gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id

    params = _count_params(net)
    net = net.to(device).eval()
    params_stored = None
    making = None
    if quant or prune is not None:
        from harness.models import variants

        window = making_window("make-variant") if making_window else contextlib.nullcontext()
        with window as w:
            if prune is not None:
                net = variants.prune(net, prune, prune_method)
                params_stored = _count_params(net)
                params = variants.nonzero_params(net)
            if quant == "int8-dynamic":
                net = quantize_int8_dynamic(net)
            elif quant in ("int8-weight", "int4-weight"):
                net = variants.quantize_weight_only(net, quant)
        m = getattr(w, "measurement", None)
        if m is not None:
            making = {
                "produce_variant_j": m.total_j,
                "produce_variant_s": m.duration_s,
                "produce_variant_method": m.method,
            }
    return LoadedModel(
        model=net,
        tokenizer=tokenizer,
        device=device,
        name=name,
        source=source,
        dtype=dtype,
        quantization=quant,
        params=params,
        model_size_mb=model_size_mb(net),
        trained=trained,
        path=Path(where) if kind != "hf" and where is not None else None,
        prune=prune,
        prune_method=prune_method if prune is not None else None,
        params_stored=params_stored,
        making=making,
    )


def quantize_int8_dynamic(net: torch.nn.Module) -> torch.nn.Module:
    """int8 weights, activations quantised on the fly, for nn.Linear layers (CPU kernels only).

    An output layer tied to the input embeddings stays as it is: quantising it would untie it
    (two copies of the largest matrix) and break ``tie_weights()``, which lm-eval calls.
    """
    import warnings

    import torch
    from torch.ao.quantization import default_dynamic_qconfig

    tied = bool(getattr(getattr(net, "config", None), "tie_word_embeddings", False))
    output = net.get_output_embeddings() if hasattr(net, "get_output_embeddings") else None
    spec = {
        name: default_dynamic_qconfig
        for name, module in net.named_modules()
        if isinstance(module, torch.nn.Linear) and not (tied and module is output)
    }
    with warnings.catch_warnings():
        # torch >= 2.10 points users at torchao; the eager API still works and needs no new package
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return torch.ao.quantization.quantize_dynamic(net, spec, dtype=torch.qint8)


__all__ = ["LoadedModel", "load_model", "model_size_mb", "parse_source"]
