"""Distillation: the case's model (the student) learns from a teacher of the same run.

The teacher is the suite model named by ``teacher``, loaded from the checkpoint its train case
saved (the case is not run when that case failed). Each step the teacher's forward pass (no
gradients) gives soft targets; the student's loss is

    alpha × T² × KL(softmax(teacher / T) ‖ softmax(student / T)) + (1 − alpha) × cross-entropy

(Hinton et al. 2015; T² keeps the soft-target gradients on the scale of the hard ones). The
teacher's passes run inside the measured windows: they are part of what distillation costs.
Everything else (chunks, forecast, budget, saving the student) is the train workload's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from harness.errors import HarnessError
from harness.schema import ModelWorkloadSettings
from harness.settings import Model
from harness.workloads.train import ML_EXTRA, Trainer, TrainingCase, TrainWorkload


def distillation_loss(student_logits, teacher_logits, labels, temperature: float, alpha: float):
    """The mixed loss of one batch of next-token predictions (logits: batch × seq × vocab)."""
    import torch.nn.functional as F

    s = student_logits[:, :-1].float()
    t = teacher_logits[:, :-1].float()
    vocab = s.shape[-1]
    soft = F.kl_div(
        F.log_softmax(s.reshape(-1, vocab) / temperature, dim=-1),
        F.log_softmax(t.reshape(-1, vocab) / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    ) * (temperature**2)
    hard = F.cross_entropy(s.reshape(-1, vocab), labels[:, 1:].reshape(-1))
    return alpha * soft + (1 - alpha) * hard


class DistillTrainer(Trainer):
    """The train loop with a teacher's soft targets in the loss."""

    def __init__(
        self, model, tokenizer, device, *, teacher, temperature: float, alpha: float, **kw
    ):
        super().__init__(model, tokenizer, device, **kw)
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.temperature, self.alpha = temperature, alpha
        #: teacher forward passes made (the tests check that the teacher is used)
        self.teacher_calls = 0

    def objective(self, x):
        import torch

        with torch.no_grad():
            teacher_logits = self.teacher(input_ids=x).logits
        self.teacher_calls += 1
        student_logits = self.model(input_ids=x).logits
        return distillation_loss(student_logits, teacher_logits, x, self.temperature, self.alpha)


class DistillSettings(ModelWorkloadSettings):
    """The suite's distill block."""

    extra: ClassVar = ML_EXTRA
    source_field: ClassVar = "teacher"

    type: Literal["distill"]
    #: the suite model whose trained checkpoint teaches (a train case of the run makes it)
    teacher: str
    steps: Annotated[int, Field(ge=1)]
    batch_size: Annotated[int, Field(ge=1)]
    seq_len: Annotated[int, Field(ge=1)]
    lr: Annotated[float, Field(gt=0)] | None = None
    text_file: str | None = None
    #: softmax temperature of the soft targets
    temperature: Annotated[float, Field(gt=0)] = 2.0
    #: weight of the soft-target loss; 1 - alpha goes to the ordinary next-token loss
    alpha: Annotated[float, Field(ge=0, le=1)] = 0.5

    def check(self, i: int, models: list[Any]) -> None:
        names = [m.name for m in models]
        if self.teacher not in names:
            raise ValueError(
                f"workloads.{i}.teacher: {self.teacher!r} is not a model of the suite "
                f"(known: {', '.join(names)})"
            )

    def source_model(self) -> str | None:
        return self.teacher

    def with_source(self, spec: dict, by_name: dict[str, Any], model: Any) -> dict:
        return {**spec, "teacher_model": by_name[self.teacher].model_dump()}

    def shapes(self) -> list[tuple[dict, str, str]]:
        spec = {
            "type": self.type,
            "teacher": self.teacher,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
            "text_file": self.text_file,
            "temperature": self.temperature,
            "alpha": self.alpha,
        }
        if self.lr is not None:
            spec["lr"] = self.lr
        short = f"distill-{self.teacher}"
        return [(spec, short, f"{short}-s{self.steps}-b{self.batch_size}-l{self.seq_len}")]


class DistillCase(TrainingCase):
    """One distill case's workload dict (``DistillSettings.shapes``, and the teacher's model
    entry that ``with_source`` adds)."""

    type: Literal["distill"]
    teacher: str
    #: the teacher's entry of the suite's models
    teacher_model: Annotated[Model, Field(strict=False)]
    text_file: str | None = None
    temperature: Annotated[float, Field(gt=0)]
    alpha: Annotated[float, Field(ge=0, le=1)]


class DistillWorkload(TrainWorkload):
    type = "distill"
    settings = DistillSettings
    case = DistillCase
    shape: DistillCase
    derives = "distilled"
    source_word = "teacher"

    @classmethod
    def loads_checkpoint_of(cls, case: dict) -> str | None:
        return (case.get("workload") or {}).get("teacher")

    def training_text(self) -> dict:
        text_file = self.shape.text_file
        return {"text_file": Path(text_file) if text_file else None}

    def load(self, variant: dict, hw: dict) -> dict:
        from harness.models import load_model

        name = self.shape.teacher
        self.teacher = load_model(
            self.shape.teacher_model.model_dump(),
            {"dtype": "float32"},
            hw,
            artifacts_dir=self.ctx.artifacts_dir,
        )
        if self.teacher.trained is False:
            raise HarnessError(
                f"distill workload: teacher {name} has no trained checkpoint in this run "
                "(give the suite a train workload for it)"
            )
        static = super().load(variant, hw)
        student_vocab = self.engine.loaded.model.get_input_embeddings().num_embeddings
        teacher_vocab = self.teacher.model.get_input_embeddings().num_embeddings
        if student_vocab != teacher_vocab:
            raise HarnessError(
                f"distill workload: teacher {name} has a vocabulary of {teacher_vocab} tokens, "
                f"the student {student_vocab}; soft targets need the same vocabulary"
            )
        static.update(teacher=name, teacher_params=self.teacher.params)
        return static

    def make_trainer(self, net, tokenizer, **kwargs) -> Trainer:
        return DistillTrainer(
            net,
            tokenizer,
            self.engine.device,
            teacher=self.teacher.model,
            temperature=self.shape.temperature,
            alpha=self.shape.alpha,
            **kwargs,
        )

    def summary(self) -> dict:
        out = super().summary()
        out.update(teacher=self.shape.teacher, teacher_calls=self.trainer.teacher_calls)
        return out

    def teardown(self) -> None:
        self.teacher = None
        super().teardown()
