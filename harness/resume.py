"""Resuming a run: the suite with its real settings back, though the manifest holds them masked.

The manifest's copy of the suite has every secret masked (``***``). A resume must run programs
with the real values, never with the mask, and must find the same case ids (computed from the
suite as written). So each masked value is restored from the suite file when the file still says
the same once masked, else from the environment variable of the same name (a suite ``env:``
entry), and a value that can be restored from neither stops the resume with one line naming it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from harness import store
from harness.errors import HarnessError


def _restore(
    recorded: Any, original: Any, masked: Any, path: str, key: str | None, missing: list[str]
) -> Any:
    """``recorded`` with each masked part replaced by its real value (see the module docstring).

    ``original`` is the suite file's value at the same place and ``masked`` that value as the
    sanitiser writes it (sanitised as a whole, so ``--token X`` and ``env:`` keys mask alike).
    """
    if isinstance(recorded, dict):
        orig = original if isinstance(original, dict) else {}
        mask = masked if isinstance(masked, dict) else {}
        return {
            k: _restore(
                v, orig.get(k), mask.get(k), f"{path}.{k}" if path else str(k), str(k), missing
            )
            for k, v in recorded.items()
        }
    if isinstance(recorded, list):
        same = (
            isinstance(original, list)
            and isinstance(masked, list)
            and len(original) == len(recorded)
        )
        return [
            _restore(
                v,
                original[i] if same else None,
                masked[i] if same else None,
                f"{path}.{i}",
                None,
                missing,
            )
            for i, v in enumerate(recorded)
        ]
    if not (isinstance(recorded, str) and store.MASK in recorded):
        return recorded
    if isinstance(original, str) and masked == recorded:
        return original  # the suite file's value, which masks to what was recorded
    if key is not None and store.is_secret_name(key) and recorded == store.MASK:
        value = os.environ.get(key)
        if value:
            return value
    missing.append(path)
    return recorded


def _aligned(recorded: dict, original: dict) -> dict:
    """The original suite's dump with its command workloads in the recorded order (by name)."""
    rec_w = recorded.get("workloads") or []
    orig_w = original.get("workloads") or []
    by_name = {w.get("name"): w for w in orig_w if isinstance(w, dict) and w.get("name")}
    aligned = []
    for i, w in enumerate(rec_w):
        name = w.get("name") if isinstance(w, dict) else None
        aligned.append(by_name.get(name) if name else (orig_w[i] if i < len(orig_w) else None))
    return {**original, "workloads": aligned}


def resumed_suite(run_dir: Path, manifest: dict):
    """The ``Suite`` of a run folder with its real settings (see the module docstring)."""
    from harness.suite import load_suite, validate_data

    recorded = manifest.get("suite")
    source = f"{run_dir}/manifest.json suite"
    if not isinstance(recorded, dict):
        raise HarnessError(f"{source}: missing or not a mapping")
    original = None
    path = manifest.get("suite_file")
    if path and Path(path).is_file():
        try:
            loaded = load_suite(path)
        except HarnessError:
            loaded = None
        if loaded is not None:
            dumped = loaded.model_dump(mode="json")
            if store.sanitise(dumped) == recorded:
                return loaded  # the file is unchanged: its values are the real ones
            original = _aligned(recorded, dumped)
    missing: list[str] = []
    masked = store.sanitise(original) if original is not None else None
    restored = _restore(recorded, original, masked, "", None, missing)
    # a mask outside what programs get (a description) changes nothing that runs
    needed = [m for m in missing if m.startswith("workloads")]
    if needed:
        where = f"the suite file {path}" if path else "the suite file"
        raise HarnessError(
            f"{run_dir}: cannot resume: {needed[0]} was masked in the manifest and its real value "
            f"is neither in {where} nor in the environment"
            + (f" (and {len(needed) - 1} more)" if len(needed) > 1 else "")
        )
    return validate_data(restored, source=source)
