"""Training: AdamW on the builtin corpus (or a text file), measured chunk by chunk.

The ``steps`` are split into a fixed number of chunks (10, fewer when a chunk would be too short
a window for the sensors: see ``TrainWorkload.warmup``); each repetition trains one chunk inside one
meter window, so the energy of the whole run is the sum of the repetitions and the loss curve
lines up with the energy curve. Data, initialisation and batch order are seeded, so two runs of
the same case do the same work. After the last chunk the model and tokenizer are saved (atomically)
to ``<artifacts>/models/<model name>/``, where later infer and accuracy cases of the same builtin
model find it.

A ``bfloat16`` variant trains with bf16 autocast over float32 master weights (pure bf16 weights
lose AdamW's small updates); float16 and quantised variants are refused.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from harness.errors import HarnessError
from harness.schema import CaseShape, ModelWorkloadSettings, check_task
from harness.workloads.base import Repetition, Workload
from harness.workloads.memory import PeakMemory

MAX_CHUNKS = 10
#: a chunk's window should last at least this long (and 10 sensor update periods), see warmup
MIN_WINDOW_S = 0.2
DATA_SEED = 0
#: the learning rate of a builtin model trained from its seeded initialisation (a case's ``lr``
#: unset)
TRAIN_LR = 3e-3
#: a pretrained model (path:, hf:) is fine-tuned, not trained from scratch: a far smaller step
FINETUNE_LR = 5e-5
#: points kept in the summary's loss curve (the per-step losses are averaged into buckets)
CURVE_POINTS = 200


def chunk_sizes(steps: int, chunks: int) -> list[int]:
    """``steps`` split into ``chunks`` near-equal parts, larger parts first."""
    base, extra = divmod(steps, chunks)
    return [base + (1 if i < extra else 0) for i in range(chunks)]


def lr_at(step: int, steps: int, lr: float) -> float:
    """Linear warmup over the first 10% of steps (at most 100), then cosine down to lr/10."""
    warmup = max(1, min(100, steps // 10))
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def corpus_token_ids(tokenizer, n_tokens: int, seed: int = DATA_SEED) -> list[int]:
    """At least ``n_tokens`` ids of the builtin corpus, documents separated by end-of-sequence."""
    from harness.models.corpus import train_text

    ids: list[int] = []
    eos = tokenizer.eos_token_id
    doc_seed = seed
    while len(ids) < n_tokens:
        # ~25 tokens a document; generate in slices so a short run tokenises little
        docs = train_text(max(64, (n_tokens - len(ids)) // 20), seed=doc_seed)
        for row in tokenizer(docs, add_special_tokens=False)["input_ids"]:
            ids += row
            ids.append(eos)
        doc_seed += 1_000_003
    return ids


def task_token_ids(tokenizer, task: str) -> list[int]:
    """The training questions of a generated task with their answers, one document each.

    ``"after 12 comes 13"``: the task's *train* split (facts the corpus states), so the test
    split that the accuracy workload asks stays held out.
    """
    from harness.models.corpus import task_examples

    docs = [f"{e['question']} {e['choices'][e['answer']]}" for e in task_examples(task, "train")]
    ids: list[int] = []
    for row in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        ids += row
        if tokenizer.eos_token_id is not None:
            ids.append(tokenizer.eos_token_id)
    return ids


def text_file_token_ids(tokenizer, path: Path) -> list[int]:
    """A text file's ids, one document per blank-line-separated paragraph."""
    if not path.is_file():
        raise HarnessError(f"train workload: text_file {path} does not exist")
    text = path.read_text(encoding="utf-8", errors="replace")
    paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
    if not paragraphs:
        raise HarnessError(f"train workload: text_file {path} is empty")
    ids: list[int] = []
    for row in tokenizer(paragraphs, add_special_tokens=False)["input_ids"]:
        ids += row
        if tokenizer.eos_token_id is not None:
            ids.append(tokenizer.eos_token_id)
    return ids


def batches(ids: list[int], steps: int, batch_size: int, seq_len: int, seed: int = DATA_SEED):
    """A (steps, batch_size, seq_len) LongTensor: the stream cut into blocks, in seeded order.

    The stream is repeated when it is shorter than the run needs (epochs), each pass shuffled.
    """
    import torch

    n_blocks = len(ids) // seq_len
    if n_blocks < 1:
        raise HarnessError(f"train workload: the text has {len(ids)} tokens, fewer than seq_len")
    blocks = torch.tensor(ids[: n_blocks * seq_len], dtype=torch.long).view(n_blocks, seq_len)
    need = steps * batch_size
    gen = torch.Generator().manual_seed(seed)
    order = torch.cat(
        [torch.randperm(n_blocks, generator=gen) for _ in range(-(-need // n_blocks))]
    )
    return blocks[order[:need]].view(steps, batch_size, seq_len)


def save_atomically(model, tokenizer, folder: Path) -> Path:
    """save_pretrained into a staging folder beside ``folder``, then swap it into place whole."""
    from harness import atomic

    staging = atomic.staging_folder(folder)
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return atomic.replace_folder(staging, folder)


class Trainer:
    """The training loop itself, without meter or case: the workload and the tests share it."""

    def __init__(
        self,
        model,
        tokenizer,
        device,
        *,
        steps: int,
        batch_size: int,
        seq_len: int,
        lr: float = TRAIN_LR,
        weight_decay: float = 0.01,
        autocast_dtype=None,
        text_file: Path | None = None,
        task: str | None = None,
        seed: int = DATA_SEED,
    ):
        import torch

        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.steps, self.batch_size, self.seq_len, self.lr = steps, batch_size, seq_len, lr
        self.autocast_dtype = autocast_dtype
        if task is not None:
            ids = task_token_ids(tokenizer, task)
        elif text_file is not None:
            ids = text_file_token_ids(tokenizer, Path(text_file))
        else:
            ids = corpus_token_ids(tokenizer, steps * batch_size * seq_len, seed=seed)
        self.data = batches(ids, steps, batch_size, seq_len, seed=seed)
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95)
        )
        self.step = 0
        self.losses: list[float] = []
        self.train_s = 0.0

    def _loss(self, x):
        import torch

        if self.autocast_dtype is None:
            return self.objective(x)
        with torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype):
            return self.objective(x)

    def objective(self, x):
        """The loss of one batch: next-token cross-entropy (distillation adds the teacher's)."""
        return self.model(input_ids=x, labels=x).loss

    def run_steps(self, n: int) -> list[float]:
        """Train ``n`` more steps; returns their losses."""
        self.model.train()
        t0 = time.perf_counter()
        losses = []
        # .item() once per step would synchronise a GPU each step: collect, then read at the end
        pending = []
        for _ in range(n):
            if self.step >= self.steps:
                raise HarnessError("train workload: asked for more steps than planned")
            for group in self.optimizer.param_groups:
                group["lr"] = lr_at(self.step, self.steps, self.lr)
            x = self.data[self.step].to(self.device, non_blocking=True)
            loss = self._loss(x)
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            pending.append(loss.detach())
            self.step += 1
        losses = [float(v) for v in pending]
        self.train_s += time.perf_counter() - t0
        self.losses += losses
        return losses

    def warm(self, iterations: int) -> float | None:
        """Forward and backward passes that leave the weights and optimizer untouched.

        Returns the fastest pass's seconds (None without passes), a lower bound of a step's time.
        """
        self.model.train()
        fastest = None
        for i in range(iterations):
            x = self.data[i % self.steps].to(self.device)
            t0 = time.perf_counter()
            self._loss(x).backward()
            if self.device.type == "cuda":
                import torch

                torch.cuda.synchronize(self.device)
            elapsed = time.perf_counter() - t0
            fastest = elapsed if fastest is None else min(fastest, elapsed)
        self.optimizer.zero_grad(set_to_none=True)
        return fastest

    def loss_curve(self, points: int = CURVE_POINTS) -> list[tuple[int, float]]:
        """(step, mean loss of the steps up to it) at most ``points`` times, 1-based steps."""
        n = len(self.losses)
        if n == 0:
            return []
        width = max(1, math.ceil(n / points))
        curve = []
        for start in range(0, n, width):
            bucket = self.losses[start : start + width]
            curve.append((start + len(bucket), sum(bucket) / len(bucket)))
        return curve


#: the extra a model workload run in-process needs, and the modules it brings
ML_EXTRA = ("ml", ("torch", "transformers", "tokenizers"))


class TrainSettings(ModelWorkloadSettings):
    """The suite's train block: a shape per workload."""

    extra: ClassVar = ML_EXTRA

    type: Literal["train"]
    steps: Annotated[int, Field(ge=1)]
    batch_size: Annotated[int, Field(ge=1)]
    seq_len: Annotated[int, Field(ge=1)]
    lr: Annotated[float, Field(gt=0)] | None = None
    text_file: str | None = None
    #: train on this generated task's training questions instead of the corpus
    task: str | None = None

    _task = field_validator("task")(check_task)

    @model_validator(mode="after")
    def _one_text(self) -> TrainSettings:
        if self.task and self.text_file:
            raise ValueError("give task or text_file, not both")
        return self

    def shapes(self) -> list[tuple[dict, str, str]]:
        spec = {
            "type": self.type,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
            "text_file": self.text_file,
        }
        if self.lr is not None:  # absent: the train workload's default
            spec["lr"] = self.lr
        size = f"s{self.steps}-b{self.batch_size}-l{self.seq_len}"
        if self.task:  # absent when not given, so that existing train cases keep their ids
            spec["task"] = self.task
            short = f"train-{self.task}"
            return [(spec, short, f"{short}-{size}")]
        return [(spec, "train", f"train-{size}")]


class TrainingCase(CaseShape):
    """What every training case (train, distill, finetune) has in its workload dict."""

    steps: Annotated[int, Field(gt=0)]
    batch_size: Annotated[int, Field(gt=0)]
    seq_len: Annotated[int, Field(gt=0)]
    #: None: the workload's rate for the model's source (``lr_default``)
    lr: Annotated[float, Field(gt=0)] | None = None


class TrainCase(TrainingCase):
    """One train case's workload dict (``TrainSettings.shapes``)."""

    type: Literal["train"]
    #: train on this file's paragraphs instead of the builtin corpus
    text_file: str | None = None
    #: train on this generated task's training questions (left out of the case when unset)
    task: str | None = None


class TrainWorkload(Workload):
    """Train a model from its seeded initialisation; distill and finetune change what it starts
    from and what it learns (``load``, ``training_text``, ``make_trainer``), never how it is
    measured."""

    type = "train"
    settings = TrainSettings
    case = TrainCase
    shape: TrainCase
    makes_model = True
    uses_model = True
    engines = "in-process"
    unit = "step"
    compare_metrics = (
        "energy_per_step_j",
        "duration_per_step_s",
        "energy_case_j",
        "duration_case_s",
    )
    stage = "training"

    @classmethod
    def loads_checkpoint_of(cls, case: dict) -> str | None:
        return None  # it starts from the seeded initialisation

    def lr_default(self, kind: str) -> float:
        return TRAIN_LR if kind == "builtin" else FINETUNE_LR

    def training_text(self) -> dict:
        """What it trains on, as the trainer's ``task`` and ``text_file`` (neither: the corpus)."""
        text_file = self.shape.text_file
        return {"task": self.shape.task, "text_file": Path(text_file) if text_file else None}

    def load(self, variant: dict, hw: dict) -> dict:
        """Load the model to train into ``self.engine``; its static columns."""
        # always start from the seeded initialisation (artifacts_dir=None), never from an
        # earlier run's checkpoint, so that every train case does the same work
        return self.engine.load(
            self.ctx.case["model"], {**variant, "dtype": "float32"}, hw, artifacts_dir=None
        )

    def make_trainer(self, net, tokenizer, **kwargs) -> Trainer:
        return Trainer(net, tokenizer, self.engine.device, **kwargs)

    def setup(self) -> dict:
        import torch

        from harness import hardware
        from harness.engines import create_engine, engine_name
        from harness.models import parse_source

        shape = self.shape
        kind, _ = parse_source(self.ctx.case["model"].get("source", ""))
        lr = shape.lr if shape.lr is not None else self.lr_default(kind)
        variant = dict(self.ctx.case.get("variant") or {})
        dtype = variant.get("dtype") or "float32"
        if variant.get("quantization") or variant.get("prune"):
            what = variant.get("quantization") or f"pruned {variant['prune']:g}"
            raise HarnessError(
                f"{self.type} workload: a quantised or pruned variant ({what}) cannot be "
                "trained; train float32 or bfloat16"
            )
        if dtype not in ("float32", "bfloat16"):
            raise HarnessError(f"{self.type} workload: train float32 or bfloat16, not {dtype}")
        hw = self.ctx.case["hardware"]
        hardware.apply_profile(hw)
        self.engine = create_engine(engine_name(variant))
        static = self.load(variant, hw)
        self.model_name = self.ctx.case["model"]["name"]
        net, tokenizer = self.engine.trainable()
        text = self.training_text()
        self.trainer = self.make_trainer(
            net,
            tokenizer,
            steps=shape.steps,
            batch_size=shape.batch_size,
            seq_len=shape.seq_len,
            lr=lr,
            autocast_dtype=torch.bfloat16 if dtype == "bfloat16" else None,
            **text,
        )
        self.chunks = chunk_sizes(shape.steps, min(MAX_CHUNKS, shape.steps))
        self.memory = PeakMemory(self.engine.device)
        self.saved_path: Path | None = None
        from harness.workloads import forecast as forecast_mod

        self._forecast_mod = forecast_mod
        m = self.ctx.settings
        fraction = m.forecast_fraction
        self.blocks = forecast_mod.block_bounds(forecast_mod.forecast_steps(shape.steps, fraction))
        self.measured_blocks: list[forecast_mod.Block] = []
        self.forecast: dict | None = None
        self.budget_j = m.energy_budget_j
        self.over_budget: str | None = None
        columns = dict(static)
        columns.pop("trained", None)  # a train case always starts from the seeded init
        columns["dtype"] = dtype
        if dtype == "bfloat16":
            columns["precision"] = "bf16 autocast, float32 master weights"
        columns["device_name"] = hardware.describe(hw)["device_name"]
        columns.update(seq_len=shape.seq_len, batch_size=shape.batch_size, steps=shape.steps, lr=lr)
        if text.get("task"):
            columns["task"] = text["task"]
        return columns

    def planned_repetitions(self) -> int:
        return len(self.chunks)

    def warmup(self, iterations: int) -> None:
        # Time a pass (two at least, the first pays for allocation) and use fewer, longer chunks
        # when MAX_CHUNKS chunks would make windows too short for the sensors to resolve.
        if iterations < 1:
            return
        step_s = self.trainer.warm(max(2, iterations))
        min_window_s = max(MIN_WINDOW_S, self.ctx.meter.min_window_s)
        if step_s:
            fit = int(self.shape.steps * step_s // min_window_s)
            n_chunks = max(1, min(len(self.chunks), fit))
            self.chunks = chunk_sizes(self.shape.steps, n_chunks)

    def _train(self, n: int) -> list[float]:
        """``n`` steps; the forecast's blocks (nested windows) open and close on their steps."""
        losses: list[float] = []
        meter = self.ctx.meter
        end = self.trainer.step + n
        while self.trainer.step < end and self.over_budget is None:
            step = self.trainer.step
            block = next((i for i, (a, b) in enumerate(self.blocks) if a <= step < b), None)
            if block is None or self.forecast is not None:
                losses += self.trainer.run_steps(end - step)
                break
            first, last = self.blocks[block]
            if step == first:
                meter.begin(f"forecast-{block}")
            stop = min(end, last)
            losses += self.trainer.run_steps(stop - step)
            if stop == last:
                self.engine.synchronize()
                m = meter.end(f"forecast-{block}")
                self.measured_blocks.append(
                    self._forecast_mod.Block(last - first, m.total_j, m.duration_s)
                )
                if block == len(self.blocks) - 1:
                    self._forecast()
        return losses

    def _forecast(self) -> None:
        self.forecast = self._forecast_mod.forecast(self.measured_blocks, self.shape.steps)
        if self.budget_j is not None and self.forecast["forecast_j"] > float(self.budget_j):
            f = self.forecast
            self.over_budget = (
                f"energy budget: after {f['forecast_after_steps']} of {self.shape.steps} steps the "
                f"forecast is {f['forecast_j']:.4g} J (95% {f['forecast_j_ci_low']:.4g}-"
                f"{f['forecast_j_ci_high']:.4g}), more than energy_budget_j {self.budget_j:g} J"
            )

    def run(self, repetition: int) -> Repetition:
        if self.over_budget:
            raise HarnessError(self.over_budget)
        if repetition >= len(self.chunks):
            raise HarnessError(f"{self.type} workload: only {len(self.chunks)} chunks are planned")
        first_step = self.trainer.step
        self.memory.reset()
        with self.ctx.meter.window(f"train-{repetition}") as w:
            losses = self._train(self.chunks[repetition])
        memory = self.memory.read()
        n = self.trainer.step - first_step  # fewer than the chunk when the budget stopped it
        tokens = n * self.shape.batch_size * self.shape.seq_len
        if self.trainer.step == self.shape.steps:
            self._save()
        return Repetition(
            measurement=w.measurement,
            columns={
                "steps": n,
                "first_step": first_step + 1,
                "samples": n * self.shape.batch_size,
                "tokens_in": tokens,
                "loss": sum(losses) / len(losses) if losses else None,
                "seq_len": self.shape.seq_len,
                "batch_size": self.shape.batch_size,
                **(self.forecast or {}),
                **memory,
            },
        )

    def _save(self) -> None:
        from harness.models.builtin import checkpoint_dir

        folder = checkpoint_dir(self.ctx.artifacts_dir, self.model_name)
        net, tokenizer = self.engine.trainable()
        self.saved_path = save_atomically(net, tokenizer, folder)

    def summary(self) -> dict[str, Any]:
        t = self.trainer
        tokens = t.step * self.shape.batch_size * self.shape.seq_len
        return {
            "loss_curve": t.loss_curve(),
            "steps": t.step,
            "final_loss": t.losses[-1] if t.losses else None,
            "tokens": tokens,
            "train_s": t.train_s,
            "tokens_per_s": tokens / t.train_s if t.train_s > 0 else None,
            "saved_path": str(self.saved_path) if self.saved_path else None,
            "chunks": len(self.chunks),
            "forecast": self.forecast,
            # each block as measured, so a forecast rule can be checked again on the same data
            "forecast_measured_blocks": [dataclasses.asdict(b) for b in self.measured_blocks],
        }

    @property
    def loaded(self):
        """What the engine loaded (for the transformers engine: model, tokenizer, device)."""
        return self.engine.loaded if getattr(self, "engine", None) is not None else None

    def teardown(self) -> None:
        self.trainer = None
        if getattr(self, "engine", None) is not None:
            self.engine.close()
