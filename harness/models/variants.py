"""Variants made from a loaded model: pruning, and torchao's weight-only quantisation.

Pruning acts on the linear layers of the decoder blocks (the embeddings, and an output layer tied
to them, are left whole):

- ``magnitude``: in each layer the ``fraction`` of weights smallest in absolute value are set to
  zero. The matrices keep their shapes (dense kernels do the same work), so energy per query does
  not fall by itself; ``params`` then counts the nonzero parameters, ``params_stored`` all.
- ``neurons``: in each MLP the ``fraction`` of intermediate neurons with the smallest weight norms
  are removed: gate, up and down projections shrink, and so do the work and the size.

``int8-weight`` and ``int4-weight`` quantise the weights of the same linear layers with torchao
(activations stay in the model's dtype). On a CPU, torchao's packed int4 kernels need libraries
built for CUDA, so int4 uses ``IntxWeightOnlyConfig``: int4 values (groups of 32 with a scale
each, or one scale per output row where 32 does not divide the row) held one per byte, so their
memory is that of int8 plus scales; ``model_size_mb`` reports what is held.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.errors import HarnessError

if TYPE_CHECKING:
    import torch

#: int4 weights share a scale per group of this many inputs (where the row length allows)
INT4_GROUP_SIZE = 32


def _tied_output(net) -> object | None:
    tied = bool(getattr(getattr(net, "config", None), "tie_word_embeddings", False))
    if not tied or not hasattr(net, "get_output_embeddings"):
        return None
    return net.get_output_embeddings()


def prunable_linears(net) -> list[tuple[str, torch.nn.Linear]]:
    """The linear layers inside the decoder blocks (not embeddings or the output layer)."""
    import torch

    output = net.get_output_embeddings() if hasattr(net, "get_output_embeddings") else None
    return [
        (name, m)
        for name, m in net.named_modules()
        if isinstance(m, torch.nn.Linear) and m is not output
    ]


def nonzero_params(net) -> int:
    """Parameters that are not exactly zero (tied weights counted once)."""
    return int(sum(int((p != 0).sum()) for p in net.parameters()))


def prune(net, fraction: float, method: str = "magnitude"):
    """``net`` with ``fraction`` of its decoder weights pruned (in place; returned for chaining)."""
    if method == "magnitude":
        return prune_magnitude(net, fraction)
    if method == "neurons":
        return prune_neurons(net, fraction)
    raise HarnessError(f"unknown prune_method {method!r} (known: magnitude, neurons)")


def prune_magnitude(net, fraction: float):
    import torch

    layers = prunable_linears(net)
    if not layers:
        raise HarnessError("prune: the model has no linear layers to prune")
    with torch.no_grad():
        for _, layer in layers:
            w = layer.weight
            k = int(round(fraction * w.numel()))
            if k < 1:
                continue
            smallest = w.abs().flatten().argsort()[:k]  # ties broken by position: exactly k zeros
            w.view(-1)[smallest] = 0
    return net


def _llama_mlps(net) -> list:
    blocks = getattr(getattr(net, "model", None), "layers", None)
    mlps = [getattr(b, "mlp", None) for b in (blocks or [])]
    if not mlps or not all(
        all(hasattr(m, p) for p in ("gate_proj", "up_proj", "down_proj")) for m in mlps
    ):
        raise HarnessError(
            "prune_method neurons: needs gated MLPs (gate_proj, up_proj, down_proj: Llama-style); "
            "use prune_method: magnitude"
        )
    return mlps


def _shrunk(layer, keep, dim: int):
    import torch

    weight = layer.weight.index_select(dim, keep)
    out_f, in_f = weight.shape
    new = torch.nn.Linear(in_f, out_f, bias=layer.bias is not None)
    new = new.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if layer.bias is not None:
            new.bias.copy_(layer.bias if dim == 1 else layer.bias.index_select(0, keep))
    return new


def prune_neurons(net, fraction: float):
    """Remove the MLP neurons whose gate, up and down weights have the smallest norms."""
    import torch

    mlps = _llama_mlps(net)
    kept = None
    with torch.no_grad():
        for mlp in mlps:
            n = mlp.gate_proj.out_features
            keep_n = max(1, n - int(round(fraction * n)))
            score = (
                mlp.gate_proj.weight.norm(dim=1)
                * mlp.up_proj.weight.norm(dim=1)
                * mlp.down_proj.weight.norm(dim=0)
            )
            keep = score.topk(keep_n).indices.sort().values
            mlp.gate_proj = _shrunk(mlp.gate_proj, keep, 0)
            mlp.up_proj = _shrunk(mlp.up_proj, keep, 0)
            mlp.down_proj = _shrunk(mlp.down_proj, keep, 1)
            kept = keep_n
    config = getattr(net, "config", None)
    if config is not None and kept is not None:
        config.intermediate_size = kept  # every block keeps the same count: a valid config
    return net


def torchao_refusal() -> str | None:
    """Why torchao's weight-only quantisation cannot run here, or None."""
    try:
        import torchao.quantization  # noqa: F401
    except Exception as e:  # missing, or built for another torch
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"torchao is not usable here ({first}); pip install 'energy-harness[ml]'"
    return None


def quantize_weight_only(net, quantization: str):
    """int8 or int4 weights (torchao) for the decoder's linear layers, in place."""
    import warnings

    import torch

    why = torchao_refusal()
    if why:
        raise HarnessError(f"{quantization}: {why}")
    from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup

    tied = _tied_output(net)

    def linear(module, fqn="") -> bool:
        return isinstance(module, torch.nn.Linear) and module is not tied

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if quantization == "int8-weight":
            quantize_(net, Int8WeightOnlyConfig(), filter_fn=linear)
        elif quantization == "int4-weight":

            def grouped(m, fqn=""):
                return linear(m) and m.in_features % INT4_GROUP_SIZE == 0

            def per_row(m, fqn=""):
                return linear(m) and m.in_features % INT4_GROUP_SIZE != 0

            int4 = torch.int4
            quantize_(
                net,
                IntxWeightOnlyConfig(weight_dtype=int4, granularity=PerGroup(INT4_GROUP_SIZE)),
                filter_fn=grouped,
            )
            quantize_(
                net,
                IntxWeightOnlyConfig(weight_dtype=int4, granularity=PerAxis(0)),
                filter_fn=per_row,
            )
        else:
            raise HarnessError(f"unknown weight-only quantization {quantization!r}")
    return net
