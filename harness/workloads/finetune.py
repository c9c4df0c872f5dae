"""Fine-tuning: a trained model of the run (or a path:/hf: model) learns a task for some steps.

The case's model starts from the checkpoint of the ``from`` model (a suite model that a case of
this run trained; the case is not run when that case failed) or from a ``path:``/``hf:`` source,
and trains on the training questions of a generated task (``task``, see
``harness.models.corpus``): the task's test split stays held out for the accuracy workload. It is
saved under the case's model name, so its infer and accuracy cases measure the fine-tuned weights.
A train workload with the same ``task`` trains the same size from scratch, for the comparison.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, field_validator

from harness.errors import HarnessError
from harness.schema import ModelWorkloadSettings, check_task
from harness.settings import Model
from harness.workloads.train import FINETUNE_LR, ML_EXTRA, TrainingCase, TrainWorkload

EXTERNAL = ("path:", "hf:")


class FinetuneSettings(ModelWorkloadSettings):
    """The suite's finetune block."""

    # "from" is a Python keyword: the field is from_, read and written as "from"
    model_config = ConfigDict(extra="forbid", serialize_by_alias=True)
    extra: ClassVar = ML_EXTRA
    source_field: ClassVar = "from"

    type: Literal["finetune"]
    #: a suite model made by a case of this run, or a path:/hf: source
    from_: str = Field(alias="from")
    task: str
    steps: Annotated[int, Field(ge=1)]
    batch_size: Annotated[int, Field(ge=1)] = 16
    seq_len: Annotated[int, Field(ge=1)] = 32
    lr: Annotated[float, Field(gt=0)] | None = None

    _task = field_validator("task")(check_task)

    def check(self, i: int, models: list[Any]) -> None:
        by_name = {m.name: m for m in models}
        external = self.from_.startswith(EXTERNAL)
        if not external and self.from_ not in by_name:
            raise ValueError(
                f"workloads.{i}.from: {self.from_!r} is neither a model of the suite nor a "
                f"path:/hf: source (models: {', '.join(by_name)})"
            )
        source = self.from_ if external else by_name[self.from_].source
        for m in models:
            chosen = self.models is None or m.name in self.models
            if chosen and m.name != self.from_ and m.source != source:
                raise ValueError(
                    f"workloads.{i}.models: {m.name} ({m.source}) cannot be fine-tuned from "
                    f"{self.from_} ({source}): the fine-tuned model keeps its source's "
                    f"architecture; give it source {source!r} or pick models with models:"
                )

    def source_model(self) -> str | None:
        return None if self.from_.startswith(EXTERNAL) else self.from_

    def with_source(self, spec: dict, by_name: dict[str, Any], model: Any) -> dict:
        if self.from_ in by_name:
            return {**spec, "from_model": by_name[self.from_].model_dump()}
        return {**spec, "from_model": {**model.model_dump(), "source": self.from_}}

    def shapes(self) -> list[tuple[dict, str, str]]:
        spec = {
            "type": self.type,
            "from": self.from_,
            "task": self.task,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
        }
        if self.lr is not None:
            spec["lr"] = self.lr
        short = f"finetune-{self.task}"
        return [(spec, short, f"{short}-s{self.steps}-b{self.batch_size}-l{self.seq_len}")]


class FinetuneCase(TrainingCase):
    """One finetune case's workload dict (``FinetuneSettings.shapes``, and the model entry it
    starts from that ``with_source`` adds)."""

    model_config = ConfigDict(extra="forbid", strict=True, serialize_by_alias=True)

    type: Literal["finetune"]
    from_: str = Field(alias="from")
    #: the suite model it starts from (an external source: the case's model with that source)
    from_model: Annotated[Model, Field(strict=False)]
    task: str


class FinetuneWorkload(TrainWorkload):
    type = "finetune"
    settings = FinetuneSettings
    case = FinetuneCase
    shape: FinetuneCase
    derives = "fine-tuned"
    source_word = "from"
    same_network = True

    @classmethod
    def loads_checkpoint_of(cls, case: dict) -> str | None:
        source = str((case.get("workload") or {}).get("from") or "")
        return None if source.startswith(EXTERNAL) else source

    def lr_default(self, kind: str) -> float:
        # a trained builtin tiny model moves little at the pretrained rate: a tenth of training's
        return 3e-4 if kind == "builtin" else FINETUNE_LR

    def training_text(self) -> dict:
        return {"task": self.shape.task}

    def load(self, variant: dict, hw: dict) -> dict:
        source = self.shape.from_
        static = self.engine.load(
            self.shape.from_model.model_dump(),
            {**variant, "dtype": "float32"},
            hw,
            artifacts_dir=self.ctx.artifacts_dir,
        )
        if static.get("trained") is False:
            raise HarnessError(
                f"finetune workload: {source} has no trained checkpoint in this run "
                "(give the suite a train workload for it)"
            )
        # the saved checkpoint is this case's model, made from the source
        static.update(model=self.ctx.case["model"]["name"], finetuned_from=source)
        static["model_source"] = self.ctx.case["model"].get("source")
        return static
