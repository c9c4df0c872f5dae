"""Which GPUs CUDA shows this process: ``CUDA_VISIBLE_DEVICES`` read as CUDA reads it.

The GPU sources number their ``gpu:N`` domains the way CUDA (or HIP, which reads
``HIP_VISIBLE_DEVICES`` the same way) numbers devices for this process, so that ``gpu:0`` is the
device a workload's ``cuda:0`` runs on. The rules live here, apart from the vendor libraries: indices, ``GPU-<uuid>`` (a unique prefix is enough), MIG ids (``MIG-<uuid>``, legacy
``MIG-GPU-<uuid>/<gi>/<ci>``); the first entry that names no GPU (or one already named) hides
itself and every entry after it.
"""

from __future__ import annotations

import os
from typing import Any, Protocol


class Physical(Protocol):
    """A GPU as its vendor library numbers it: what matching needs of it."""

    index: int
    uuid: str
    name: str


def visible(
    env: str | None, physical: list[Physical], gpus: Any, env_name: str = "CUDA_VISIBLE_DEVICES"
) -> tuple[list[tuple[str, Physical]], str]:
    """The GPUs CUDA shows this process, in CUDA's order, and a note on any entry it ignored.

    Follows CUDA's rules for ``CUDA_VISIBLE_DEVICES``: a comma-separated list of indices,
    ``GPU-<uuid>`` (a unique prefix is enough) or MIG ids (``MIG-<uuid>``, legacy
    ``MIG-GPU-<uuid>/<gi>/<ci>``); the first entry that names no GPU (or one already named) hides
    itself and every entry after it. Indices are taken as NVML (PCI bus) order, which is CUDA's
    order with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``; CUDA's default (fastest first) can differ on a
    machine with mixed GPU models, which the note then says.
    """
    if env is None:
        visible = [(str(p.index), p) for p in physical]
        return visible, _order_note(physical, visible)
    entries = [e.strip() for e in env.split(",")]
    if entries == [""]:
        return [], f"{env_name} is empty: it hides every GPU"
    visible: list[tuple[str, Physical]] = []
    seen: set[int] = set()
    for entry in entries:
        phys = _match(entry, physical, gpus)
        if phys is None or phys.index in seen:
            why = "names a GPU twice" if phys is not None else "names no GPU"
            known = ", ".join(f"{p.index} ({p.uuid or '?'})" for p in physical)
            problem = (
                f"{env_name}={env!r}: entry {entry!r} {why} "
                f"({getattr(gpus, 'library', 'NVML')} sees {known}); "
                "CUDA ignores it and every entry after it"
            )
            return visible, problem
        seen.add(phys.index)
        visible.append((entry, phys))
    return visible, _order_note(physical, visible)


def _match(entry: str, physical: list[Physical], gpus: Any) -> Physical | None:
    if entry.isdigit():
        i = int(entry)
        return physical[i] if i < len(physical) else None
    key = entry
    if key.startswith("MIG-GPU-"):  # legacy MIG-GPU-<uuid>/<gi>/<ci>: the parent is in the id
        key = key[len("MIG-") :].split("/")[0]
    elif key.startswith("MIG-"):  # MIG-<uuid>: ask NVML for the parent GPU
        return _mig_parent(entry, physical, gpus)
    if not key.startswith("GPU-"):
        return None
    found = [p for p in physical if p.uuid and p.uuid.startswith(key)]
    return found[0] if len(found) == 1 else None


def _mig_parent(entry: str, physical: list[Physical], gpus: Any) -> Physical | None:
    parent_uuid = gpus.mig_parent_uuid(entry)
    if parent_uuid is None:
        return None
    found = [p for p in physical if p.uuid == parent_uuid]
    return found[0] if found else None


def _order_note(physical: list[Physical], visible: list[tuple[str, Physical]]) -> str:
    names = {p.name for p in physical if p.name}
    if len(visible) > 1 and len(names) > 1 and os.environ.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
        return (
            "gpu:N assumes CUDA_DEVICE_ORDER=PCI_BUS_ID (mixed GPU models: CUDA's default order, "
            "fastest first, may differ)"
        )
    return ""
