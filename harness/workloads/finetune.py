"""Fine-tuning: a trained model of the run (or a path:/hf: model) learns a task for some steps.

The case's model starts from the checkpoint of the ``from`` model (a suite model that a case of
this run trained; the case is not run when that case failed) or from a ``path:``/``hf:`` source,
and trains on the training questions of a generated task (``task``, see
``harness.models.corpus``): the task's test split stays held out for the accuracy workload. It is
saved under the case's model name, so its infer and accuracy cases measure the fine-tuned weights.
A train workload with the same ``task`` trains the same size from scratch, for the comparison.
"""

from __future__ import annotations

from harness.errors import HarnessError
from harness.workloads.train import FINETUNE_LR, Trainer, TrainWorkload


class FinetuneWorkload(TrainWorkload):
    type = "finetune"

    def lr_default(self, kind: str) -> float:
        # a trained builtin tiny model moves little at the pretrained rate: a tenth of training's
        return 3e-4 if kind == "builtin" else FINETUNE_LR

    def load(self, variant: dict, hw: dict) -> dict:
        spec = self.spec
        source = spec.get("from_model") or {}
        if not source:
            raise HarnessError("finetune workload: the case names no model to start from")
        static = self.engine.load(
            source, {**variant, "dtype": "float32"}, hw, artifacts_dir=self.ctx.artifacts_dir
        )
        if static.get("trained") is False:
            raise HarnessError(
                f"finetune workload: {spec.get('from')} has no trained checkpoint in this run "
                "(give the suite a train workload for it)"
            )
        # the saved checkpoint is this case's model, made from the source
        static.update(model=self.ctx.case["model"]["name"], finetuned_from=spec.get("from"))
        static["model_source"] = self.ctx.case["model"].get("source")
        return static

    def make_trainer(self, net, tokenizer, **kwargs) -> Trainer:
        return Trainer(net, tokenizer, self.engine.device, task=self.spec["task"], **kwargs)

    def setup(self) -> dict:
        columns = super().setup()
        columns["task"] = self.spec["task"]
        return columns
