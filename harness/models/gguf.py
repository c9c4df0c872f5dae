"""GGUF export for llama.cpp: a Llama model written as GGUF (f16), then quantised by llama-quantize.

The builtin family (LlamaForCausalLM with the harness's tokenizer) is written here with the
``gguf`` package. llama.cpp's own converter (``convert_hf_to_gguf.py``) cannot take the builtin
tokenizer: it is a Metaspace BPE with a lowercasing normaliser, and the converter only knows
SentencePiece files and byte-level BPEs whose pre-tokenizer hash it recognises. So the vocabulary is
written as llama.cpp's SentencePiece kind (``tokenizer.ggml.model = llama``: ``▁`` for spaces, a
space prefix, merges by score) with each merged token scored by its BPE merge rank, which makes
llama.cpp's merging pick the same pairs in the same order. The lowercasing it cannot express is
why the harness sends token ids, tokenised on the client by the tokenizer itself, never text.
A ``path:`` model without the builtin marker goes through llama.cpp's converter (installed beside
the binaries by scripts/install-llamacpp.sh).

Exports are cached in the run's artifacts (``artifacts/gguf/<model>-<key>/``), with a JSON beside
each file holding the energy measured while making it (``produce_j``): a later case that finds the
file reports what it cost when it was made.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.redact import last_line

#: the GGUF types a variant may ask for (``quantization: gguf-<type>``), as llama-quantize names
#: them; the block each needs the rows to be a multiple of
GGUF_TYPES: dict[str, int] = {"f16": 1, "q8_0": 32, "q5_0": 32, "q4_0": 32, "q4_k_m": 256}
PREFIX = "gguf-"
MB = 2**20


def gguf_type(quantization: str | None) -> str | None:
    """``"gguf-q4_0"`` -> ``"q4_0"``; None for a quantization that is not a GGUF type."""
    if quantization and quantization.startswith(PREFIX):
        kind = quantization[len(PREFIX) :]
        if kind in GGUF_TYPES:
            return kind
    return None


def check_shape(kind: str, hidden_size: int, intermediate_size: int, what: str) -> None:
    """Refuse a type whose blocks do not divide the model's rows (llama-quantize would silently
    fall back to another type for those tensors, so the file would not be what it says)."""
    block = GGUF_TYPES[kind]
    for name, size in (("hidden_size", hidden_size), ("intermediate_size", intermediate_size)):
        if size % block:
            raise HarnessError(
                f"gguf-{kind} needs rows that are a multiple of {block}; {what} has "
                f"{name} {size} (use gguf-f16, gguf-q8_0 or gguf-q4_0)"
            )


def _permute(weights, n_head: int):
    """HF's rotary layout (halves) to GGUF's (interleaved pairs), as convert_hf_to_gguf does."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _vocab(tokenizer) -> tuple[list[bytes], list[float], list[int]]:
    """tokens, scores and token types of a Metaspace BPE, in SentencePiece form."""
    import gguf

    data = json.loads(tokenizer.backend_tokenizer.to_str())
    model = data["model"]
    if model.get("type") != "BPE":
        raise HarnessError(f"GGUF export: a {model.get('type')} tokenizer is not supported")
    vocab: dict[str, int] = model["vocab"]
    merges = model.get("merges") or []
    rank: dict[str, int] = {}
    for i, merge in enumerate(merges):
        a, b = merge if isinstance(merge, list) else merge.split(" ", 1)
        rank.setdefault(a + b, i)
    special = {t["content"] for t in data.get("added_tokens", []) if t.get("special")}
    unk = model.get("unk_token")
    size = max(len(tokenizer), max(vocab.values()) + 1)
    by_id = {i: t for t, i in vocab.items()}
    for t in data.get("added_tokens", []):
        by_id[t["id"]] = t["content"]
    tokens, scores, types = [], [], []
    for i in range(size):
        text = by_id.get(i, f"[PAD{i}]")
        tokens.append(text.encode("utf-8"))
        # a merged token scores by its rank: the earliest merge scores highest
        scores.append(-float(rank[text] + 1) if text in rank else 0.0)
        if text == unk:
            types.append(gguf.TokenType.UNKNOWN)
        elif text in special:
            types.append(gguf.TokenType.CONTROL)
        elif i not in by_id:
            types.append(gguf.TokenType.UNUSED)
        else:
            types.append(gguf.TokenType.NORMAL)
    return tokens, scores, types


def write_llama_gguf(net, tokenizer, path: Path, name: str) -> Path:
    """Write a LlamaForCausalLM and its tokenizer as an f16 GGUF file at ``path`` (atomically)."""
    import gguf
    import numpy as np

    cfg = net.config
    n_head = cfg.num_attention_heads
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_head
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(getattr(cfg, "rope_theta", None) or 10000.0))
    writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    writer.add_vocab_size(max(len(tokenizer), cfg.vocab_size))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)

    tokens, scores, types = _vocab(tokenizer)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    for key, value in (
        ("bos", tokenizer.bos_token_id),
        ("eos", tokenizer.eos_token_id),
        ("unk", tokenizer.unk_token_id),
        ("pad", tokenizer.pad_token_id),
    ):
        if value is not None:
            getattr(writer, f"add_{key}_token_id")(int(value))
    # the builtin tokenizer adds no BOS (no post-processor): the GGUF says the same
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(True)

    state = {k: v.detach().float().cpu().numpy() for k, v in net.state_dict().items()}

    def put(gguf_name: str, hf_name: str, transform=None) -> None:
        value = state[hf_name]
        if transform is not None:
            value = transform(value)
        # norms stay float32 (as llama.cpp's converter keeps 1-D tensors); matrices float16
        value = value.astype(np.float32 if value.ndim == 1 else np.float16)
        writer.add_tensor(gguf_name, value)

    put("token_embd.weight", "model.embed_tokens.weight")
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        put(f"blk.{i}.attn_norm.weight", p + "input_layernorm.weight")
        put(f"blk.{i}.attn_q.weight", p + "self_attn.q_proj.weight", lambda w: _permute(w, n_head))
        put(f"blk.{i}.attn_k.weight", p + "self_attn.k_proj.weight", lambda w: _permute(w, n_kv))
        put(f"blk.{i}.attn_v.weight", p + "self_attn.v_proj.weight")
        put(f"blk.{i}.attn_output.weight", p + "self_attn.o_proj.weight")
        put(f"blk.{i}.ffn_norm.weight", p + "post_attention_layernorm.weight")
        put(f"blk.{i}.ffn_gate.weight", p + "mlp.gate_proj.weight")
        put(f"blk.{i}.ffn_up.weight", p + "mlp.up_proj.weight")
        put(f"blk.{i}.ffn_down.weight", p + "mlp.down_proj.weight")
    put("output_norm.weight", "model.norm.weight")
    if not getattr(cfg, "tie_word_embeddings", False) and "lm_head.weight" in state:
        put("output.weight", "lm_head.weight")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _weights_key(folder: Path | None, source: str) -> str:
    """A short key of what the export is made from: the source and its weight files' sizes and
    times (a retrained checkpoint gets a new export, not the stale one)."""
    h = hashlib.sha256(source.encode())
    if folder is not None and folder.is_dir():
        for f in sorted(folder.iterdir()):
            if f.suffix in (".safetensors", ".bin", ".json"):
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:10]


Measure = Callable[[str], AbstractContextManager]


class Export:
    """One model's GGUF files in the run's artifacts, made on first use and then reused.

    Each type is a folder ``<kind>/`` holding ``model.gguf`` and ``produced.json`` (what making
    it cost), built in a staging folder and swapped in whole (``atomic.replace_folder``), so a run
    killed half-way never leaves a partial file that a later case would serve.
    """

    def __init__(self, folder: Path, model_name: str):
        self.folder = folder
        self.model_name = model_name

    def path(self, kind: str) -> Path:
        return self.folder / kind / "model.gguf"

    def produced(self, kind: str) -> dict:
        """What making ``kind`` cost (produce_j, produce_s, method), read from its folder."""
        try:
            return json.loads((self.folder / kind / "produced.json").read_text())
        except (OSError, ValueError):
            return {}

    def make(self, kind: str, measure: Measure | None, work: Callable[[Path], Any]) -> None:
        """``work(staging/model.gguf)`` inside a meter window, then the folder swapped in."""
        from harness import atomic

        target = self.folder / kind
        staging = atomic.staging_folder(target)
        try:
            facts = _measured(measure, f"export-gguf-{kind}", lambda: work(staging / "model.gguf"))
            atomic.write_json(staging / "produced.json", facts)
            atomic.replace_folder(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def _measured(measure: Measure | None, name: str, work: Callable[[], Any]) -> dict:
    """Run ``work`` inside ``measure(name)`` (a meter window) and return its cost."""
    t0 = time.perf_counter()
    ctx = measure(name) if measure is not None else nullcontext()
    with ctx as window:
        work()
    m = getattr(window, "measurement", None)
    facts: dict[str, Any] = {"produce_s": time.perf_counter() - t0}
    if m is not None:
        facts.update(
            produce_j=m.total_j,
            produce_method=m.method,
            produce_warnings=list(m.warnings or []),
        )
    return facts


def quantize(quantize_bin: Path, src: Path, dst: Path, kind: str, threads: int | None) -> None:
    """``llama-quantize SRC DST TYPE``; a failure is one line with its last output line."""
    cmd = [str(quantize_bin), str(src), str(dst), kind.upper()]
    if threads:
        cmd.append(str(threads))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not dst.is_file():
        raise HarnessError(
            f"llama-quantize to {kind} failed (exit {proc.returncode}): "
            f"{last_line(proc.stderr or proc.stdout or '') or 'no output'}"
        )


def convert_with_llamacpp(converter: Path, folder: Path, dst: Path) -> None:
    """llama.cpp's own converter, for a ``path:`` model, to f16."""
    if not converter.is_file():
        raise HarnessError(
            f"llama.cpp's converter is not installed ({converter}); run scripts/install-llamacpp.sh"
        )
    env = dict(os.environ)
    gguf_py = converter.parent / "gguf-py"
    if gguf_py.is_dir():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(gguf_py), env.get("PYTHONPATH")]))
    cmd = [sys.executable, str(converter), str(folder), "--outfile", str(dst), "--outtype", "f16"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0 or not dst.is_file():
        raise HarnessError(
            f"convert_hf_to_gguf.py could not convert {folder}: "
            f"{last_line(proc.stderr or proc.stdout or '') or 'no output'}"
        )


def export(
    model: dict,
    kind: str,
    hardware: dict,
    artifacts_dir: Path,
    quantize_bin: Path,
    converter: Path,
    measure: Measure | None = None,
) -> tuple[Path, dict]:
    """The GGUF file of ``model`` as ``kind`` (made if missing) and the static columns.

    Columns: model, model_source, params, model_size_mb (the file's size), dtype, quantization,
    trained, produce_j / produce_s (f16 export plus quantisation, as measured when made).
    """
    from harness.models import builtin, load_model, parse_source

    source = model.get("source") or ""
    src_kind, ref = parse_source(source)
    name = model.get("name") or ref
    if src_kind == "hf":
        raise HarnessError(
            "llamacpp: hf: models are not exported here; save one with save_pretrained and "
            "name it as path:<dir>"
        )
    loaded = load_model(model, {"dtype": "float32"}, {**hardware, "device": "cpu"}, artifacts_dir)
    cfg = loaded.model.config
    check_shape(kind, cfg.hidden_size, cfg.intermediate_size, name)
    key = _weights_key(loaded.path, source)
    ex = Export(Path(artifacts_dir) / "gguf" / f"{name}-{key}", name)
    ex.folder.mkdir(parents=True, exist_ok=True)
    f16 = ex.path("f16")
    own_writer = src_kind == "builtin" or getattr(cfg, builtin.CONFIG_KEY, None)
    if not f16.is_file():
        if own_writer:
            ex.make(
                "f16", measure, lambda p: write_llama_gguf(loaded.model, loaded.tokenizer, p, name)
            )
        else:
            ex.make(
                "f16",
                measure,
                lambda p: convert_with_llamacpp(converter, Path(ref).expanduser(), p),
            )
    target = ex.path(kind)
    if kind != "f16" and not target.is_file():
        if not quantize_bin.is_file():
            raise HarnessError(
                f"llama-quantize is not installed ({quantize_bin}); run scripts/install-llamacpp.sh"
            )
        threads = hardware.get("threads")
        ex.make(kind, measure, lambda p: quantize(quantize_bin, f16, p, kind, threads))
    tokenizer_dir = ex.folder / "tokenizer"
    if not (tokenizer_dir / "tokenizer.json").is_file():
        from harness import atomic

        staging = atomic.staging_folder(tokenizer_dir)
        loaded.tokenizer.save_pretrained(str(staging))
        atomic.replace_folder(staging, tokenizer_dir)
    # the energy to make this file: the f16 export, plus the quantisation when it is not f16
    made = [ex.produced("f16")] + ([ex.produced(kind)] if kind != "f16" else [])
    produce_j = None
    if all(m.get("produce_j") is not None for m in made):
        produce_j = sum(m["produce_j"] for m in made)
    columns = {
        "model": name,
        "model_source": source,
        "params": loaded.params,
        "model_size_mb": target.stat().st_size / MB,
        "dtype": "float16" if kind == "f16" else None,
        "quantization": f"{PREFIX}{kind}",
        "trained": loaded.trained,
        "produce_j": produce_j,
        "produce_s": sum(m.get("produce_s", 0.0) for m in made),
        "produced_from": f"{name} ({source})",
    }
    return target, columns


def saved_tokenizer(gguf_path: Path) -> Path:
    """The tokenizer folder saved beside an export (lm-eval tokenises with it on the client)."""
    return gguf_path.parent.parent / "tokenizer"
