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

__all__ = ["Context", "REGISTRY", "Repetition", "Workload", "create"]


def create(ctx: Context) -> Workload:
    kind = ctx.case["workload"]["type"]
    try:
        module_name, _, cls_name = REGISTRY[kind].partition(":")
    except KeyError:
        raise HarnessError(
            f"unknown workload type {kind!r} (known: {', '.join(REGISTRY)})"
        ) from None
    return getattr(importlib.import_module(module_name), cls_name)(ctx)
