"""Workloads by type name: train, distill, finetune, infer, accuracy, serve, command."""

from __future__ import annotations

import importlib

from harness.errors import HarnessError
from harness.workloads.base import Context, Repetition, Workload

REGISTRY = {
    "train": "harness.workloads.train:TrainWorkload",
    "distill": "harness.workloads.distill:DistillWorkload",
    "finetune": "harness.workloads.finetune:FinetuneWorkload",
    "infer": "harness.workloads.infer:InferWorkload",
    "accuracy": "harness.workloads.accuracy:AccuracyWorkload",
    "serve": "harness.workloads.serve:ServeWorkload",
    "command": "harness.workloads.command:CommandWorkload",
}

__all__ = [
    "Context",
    "REGISTRY",
    "Repetition",
    "Workload",
    "create",
    "in_process",
    "kinds",
    "loads_checkpoint_of",
    "own_program",
    "trait",
    "makes_model",
    "model_makers",
    "workload_class",
]


def workload_class(kind: str) -> type[Workload]:
    """The class of workload ``kind``; an unknown kind is one line naming the known ones."""
    try:
        module_name, _, cls_name = REGISTRY[kind].partition(":")
    except (KeyError, TypeError):
        raise HarnessError(
            f"unknown workload type {kind!r} (known: {', '.join(REGISTRY)})"
        ) from None
    return getattr(importlib.import_module(module_name), cls_name)


def create(ctx: Context) -> Workload:
    return workload_class(ctx.case["workload"]["type"])(ctx)


def model_makers() -> tuple[str, ...]:
    """The workloads that make a model's checkpoint, in registry order (the one declaration:
    each workload class's ``makes_model``)."""
    return tuple(kind for kind in REGISTRY if workload_class(kind).makes_model)


def makes_model(kind: str | None) -> bool:
    """Whether a case of workload ``kind`` makes a model (False for a kind not registered)."""
    return kind in REGISTRY and workload_class(kind).makes_model


def own_program(kind: str | None) -> bool:
    """Whether workload ``kind`` runs a program of its own (no model stack in its worker)."""
    return kind in REGISTRY and workload_class(kind).own_program


def loads_checkpoint_of(case: dict) -> str | None:
    """The suite model whose checkpoint of this run a case loads, or None (its workload says)."""
    kind = (case.get("workload") or {}).get("type")
    if kind in REGISTRY:
        return workload_class(kind).loads_checkpoint_of(case)
    return Workload.loads_checkpoint_of(case)


def in_process(kind: str | None) -> bool:
    """Whether workload ``kind`` may run a model in this process (and so imports the model
    stack): it uses a model and not only through a server."""
    if kind not in REGISTRY:
        return False
    cls = workload_class(kind)
    return cls.uses_model and cls.engines != "served"


def kinds(**traits) -> tuple[str, ...]:
    """The registered workloads whose classes have every trait given, in registry order:
    ``kinds(unit="query")``, ``kinds(makes_model=True)``. Code above the workloads (the report,
    compare, the carbon files) selects rows by what a workload says it is, so a workload added
    later is found without naming it there."""
    out = []
    for kind in REGISTRY:
        cls = workload_class(kind)
        if all(getattr(cls, name) == value for name, value in traits.items()):
            out.append(kind)
    return tuple(out)


def trait(kind: str | None, name: str, default=None):
    """What workload ``kind`` says of itself (a class attribute of :class:`Workload`), or
    ``default`` for a kind not registered here (a plugin's, or a row without one)."""
    if not isinstance(kind, str) or kind not in REGISTRY:
        return default
    return getattr(workload_class(kind), name)
