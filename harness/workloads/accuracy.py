"""Accuracy: one lm-eval pass over a task, on the model already loaded, inside one meter window.

The task is any lm-eval task: one of the YAML tasks in ``harness/data/tasks`` (local JSONL data,
no network) or a name in lm-eval's own registry (its data must then be in the Hugging Face cache
or reachable). The model is the one the variant's engine loaded (``harness/engines``), scored
through the lm-eval model that engine gives (``HFLM`` for transformers), so the accuracy belongs
to exactly the variant (dtype, quantisation) that the energy figures describe.
Evaluation is deterministic, so a case is one pass: one repetition.

The window holds what the evaluation costs: building the requests, the model's forward passes
and scoring. Indexing the task registry and loading the task's data happen in ``setup``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator

from harness.errors import HarnessError
from harness.schema import TASK, CaseShape, ModelWorkloadSettings, excerpt
from harness.workloads.base import Repetition, Workload
from harness.workloads.memory import PeakMemory

#: lm-eval warnings that are expected here (a model passed as an instance; a hint for its command
#: line about tasks with their own loader, as suites/tasks has), so not shown
_EXPECTED_WARNINGS = (
    "is not of type `str`",
    "already-initialized model",
    "Custom kwargs can be passed to `--metadata`",
)


def tasks_dir() -> Path:
    """The folder of the harness's own lm-eval task YAMLs (harness/data/tasks)."""
    from harness.models.corpus import tasks_dir as corpus_tasks_dir

    return corpus_tasks_dir()


class _DropExpected(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in _EXPECTED_WARNINGS)


def _skip(*_args, **_kwargs) -> None:
    return None


@contextlib.contextmanager
def lean_lm_eval() -> Iterator[None]:
    """lm-eval quiet (warnings only, no expected ones, no progress bars) and without provenance.

    lm-eval passes ``disable=`` to some of its tqdm bars and nothing to others, so the bars are
    turned off by handing its modules a tqdm that always disables itself, for the block only.
    After evaluating, ``simple_evaluate`` gathers provenance (a git subprocess, and torch's
    collect_env, which starts a dozen programs: about 0.5 s here), which would land inside the
    energy window although it is no part of evaluating; the run's manifest records the
    environment instead, so both are skipped.
    """
    import lm_eval.api.model
    import lm_eval.api.task
    import lm_eval.evaluator
    import lm_eval.models.huggingface
    from tqdm import tqdm

    def silent_tqdm(*args, **kwargs):
        kwargs["disable"] = True
        return tqdm(*args, **kwargs)

    patches = [
        (m, "tqdm", silent_tqdm)
        for m in (lm_eval.api.model, lm_eval.api.task, lm_eval.models.huggingface)
    ]
    patches += [
        (lm_eval.evaluator, name, _skip) for name in ("add_env_info", "get_git_commit_hash")
    ]
    patches = [(m, name, new) for m, name, new in patches if hasattr(m, name)]
    saved = [getattr(m, name) for m, name, _ in patches]
    logger = logging.getLogger("lm_eval")
    saved_level = logger.level
    drop = _DropExpected()
    # lm-eval's loggers are children of "lm_eval": a filter on a logger does not apply to its
    # children's records, so the filter goes on each handler that could print them
    handlers = logger.handlers or logging.getLogger().handlers or [logging.lastResort]
    handlers = [h for h in handlers if h is not None]
    try:
        import datasets

        bars_were_on = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()
    except (ImportError, AttributeError):  # an older or newer datasets: its bars stay
        datasets, bars_were_on = None, False
    for m, name, new in patches:
        setattr(m, name, new)
    logger.setLevel(logging.WARNING)
    for h in handlers:
        h.addFilter(drop)
    try:
        yield
    finally:
        for (m, name, _), old in zip(patches, saved, strict=True):
            setattr(m, name, old)
        logger.setLevel(saved_level)
        for h in handlers:
            h.removeFilter(drop)
        if datasets is not None and bars_were_on:
            datasets.enable_progress_bars()


@functools.lru_cache(maxsize=4)
def _task_manager(include_path: str, include_defaults: bool):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path, include_defaults=include_defaults)


def task_manager_for(task: str):
    """An lm-eval TaskManager that knows ``task``, or a HarnessError naming it.

    The harness's own folder is indexed first, on its own (milliseconds); lm-eval's registry
    (about 15,000 YAML files, several seconds) only when the name is not there. Indexes are kept
    for the process: they only list files, tasks are built fresh by each ``load``.
    """
    include = str(tasks_dir())
    for include_defaults in (False, True):
        manager = _task_manager(include, include_defaults)
        if task in manager.all_tasks:
            return manager
    raise HarnessError(f"unknown lm-eval task {task!r} (not in suites/tasks or lm-eval's registry)")


def pick_metric(scores: dict) -> tuple[str, float | None, float | None]:
    """The task's headline metric from lm-eval's ``results[task]``: name, value, stderr.

    lm-eval keys scores ``"<metric>,<filter>"``; ``acc`` is preferred, else the first metric the
    task lists. The ``,none`` filter suffix (no filter) is dropped from the name.
    """
    keys = [k for k in scores if "," in k and "_stderr," not in k]
    if not keys:
        raise HarnessError(f"lm-eval returned no metric (keys: {', '.join(scores)})")
    key = next((k for k in keys if k.split(",", 1)[0] == "acc"), keys[0])
    metric, _, filter_name = key.partition(",")
    stderr = scores.get(f"{metric}_stderr,{filter_name}")

    def number(value: Any) -> float | None:
        try:
            return float(value)
        except (TypeError, ValueError):  # lm-eval writes "N/A" where it has no stderr
            return None

    name = metric if filter_name == "none" else key
    return name, number(scores[key]), number(stderr)


#: each example's key and whether it was answered right, beside result.json
ANSWERS_FILE = "answers.json"


def per_sample_answers(logged: list | None, metric: str) -> list[dict] | None:
    """``[{doc_id, question_sha, correct}]`` from lm-eval's logged samples, where the metric is 0 or 1 per
    example (None otherwise). ``question_sha`` hashes the document and its prompt, so two runs pair an
    example only when both asked the same question the same way."""
    import hashlib

    if not logged:
        return None
    out = []
    for example in logged:
        value = example.get(metric) if isinstance(example, dict) else None
        if isinstance(value, bool):
            value = int(value)
        if value not in (0, 1, 0.0, 1.0):
            return None  # not a right-or-wrong metric: nothing to pair
        text = f"{example.get('doc_hash')}:{example.get('prompt_hash')}"
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        out.append({"doc_id": example.get("doc_id"), "question_sha": digest, "correct": int(value)})
    return out


class AccuracySettings(ModelWorkloadSettings):
    """The suite's accuracy block: a case per task."""

    extra: ClassVar = ("ml", ("torch", "transformers", "tokenizers", "lm_eval"))

    type: Literal["accuracy"]
    tasks: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    limit: Annotated[int, Field(ge=1)] | None = None
    num_fewshot: Annotated[int, Field(ge=0)] = 0

    @field_validator("tasks")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        for task in value:
            if not TASK.match(task):
                raise ValueError(
                    f"{excerpt(task)} is not a task name (no spaces, slashes or line breaks)"
                )
        if len(set(value)) != len(value):
            raise ValueError("a task is listed twice")
        return value

    def shapes(self) -> list[tuple[dict, str, str]]:
        n, limit = self.num_fewshot, self.limit
        return [
            (
                {"type": self.type, "task": t, "limit": limit, "num_fewshot": n},
                f"accuracy-{t}",
                f"accuracy-{t}-n{n}" + (f"-l{limit}" if limit else ""),
            )
            for t in self.tasks
        ]


class AccuracyCase(CaseShape):
    """One accuracy case's workload dict (``AccuracySettings.shapes``)."""

    type: Literal["accuracy"]
    task: str
    #: documents evaluated (None: all)
    limit: Annotated[int, Field(ge=1)] | None = None
    #: None keeps the task's own (a suite's block always gives one, 0 unless set)
    num_fewshot: Annotated[int, Field(ge=0)] | None = None
    #: lm-eval's batch size (lm-eval's own default); no suite block sets it
    batch_size: Annotated[int, Field(ge=1)] = 1

    @field_validator("task")
    @classmethod
    def _task_name(cls, value: str) -> str:
        if not TASK.match(value):
            raise ValueError("must be a task name (no spaces, slashes or line breaks)")
        return value


class AccuracyWorkload(Workload):
    """``{type: accuracy, task, limit, num_fewshot, batch_size}``: one lm-eval pass, one window
    (``AccuracyCase``)."""

    type = "accuracy"
    settings = AccuracySettings
    case = AccuracyCase
    shape: AccuracyCase
    uses_model = True
    unit = "sample"
    scores = True
    compare_metrics = ("accuracy", "energy_per_sample_j")

    def __init__(self, ctx):
        super().__init__(ctx)
        self.engine = None

    @property
    def loaded(self):
        """What the engine loaded (for the transformers engine: model, tokenizer, device)."""
        return self.engine.loaded if self.engine is not None else None

    def planned_repetitions(self) -> int | None:
        return 1

    def setup(self) -> dict:
        from harness.engines import create_engine, engine_name
        from harness.hardware import apply_profile, describe

        case = self.ctx.case
        apply_profile(case["hardware"])
        with lean_lm_eval():
            # the task first: an unknown name or missing data fails before the model loads
            self.task_manager = task_manager_for(self.shape.task)
            try:
                self.tasks = self.task_manager.load([self.shape.task])
            except Exception as e:  # data missing offline, a broken YAML: say which task
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise HarnessError(
                    f"lm-eval task {self.shape.task!r} could not be loaded: {first}"
                ) from None
            self.engine = create_engine(engine_name(case.get("variant")))
            self.engine.making_window = self.ctx.meter.window  # a variant's making is measured
            if self.engine.serves:
                # a served model: its export is measured (produce_j), then its server started
                self.engine.measure = self.ctx.meter.window
            static = self.engine.load(
                case["model"], case.get("variant"), case["hardware"], self.ctx.artifacts_dir
            )
            if self.engine.serves:
                self.engine.start(
                    parallel=1,
                    ctx_per_slot=self.engine.context_length() or 1024,
                    log_path=self.ctx.case_dir / "server.log",
                )
                static["engine"] = self.engine.name
            self.lm = self.engine.lm_eval_model(self.shape.batch_size)
        self._memory = PeakMemory(self.engine.device)
        return {
            **static,
            "device_name": describe(case["hardware"])["device_name"],
            "task": self.shape.task,
            "batch_size": self.shape.batch_size,
        }

    def run(self, repetition: int) -> Repetition:
        from lm_eval.evaluator import simple_evaluate

        task_objects = list(self.tasks["groups"].values()) or list(self.tasks["tasks"].values())
        name = f"accuracy-{repetition}"
        self._memory.reset()
        with lean_lm_eval():
            self.ctx.meter.begin(name)
            try:
                results = simple_evaluate(
                    model=self.lm,
                    tasks=task_objects,
                    num_fewshot=self.shape.num_fewshot,
                    limit=self.shape.limit,
                    task_manager=self.task_manager,
                    log_samples=True,  # each answer, for compare's paired test
                )
            finally:
                m = self.ctx.meter.end(name)
        if results is None or self.shape.task not in results.get("results", {}):
            raise HarnessError(
                f"lm-eval gave no score for {self.shape.task!r} (a tag of several tasks has no "
                "combined score: name one task or a group)"
            )
        metric, accuracy, stderr = pick_metric(results["results"][self.shape.task])
        answers = per_sample_answers(results.get("samples", {}).get(self.shape.task), metric)
        if answers is not None:
            from harness import atomic

            atomic.write_json(
                self.ctx.case_dir / ANSWERS_FILE,
                {"task": self.shape.task, "metric": metric, "samples": answers},
            )
        n_samples = results.get("n-samples", {})
        samples = sum(int(v.get("effective", 0)) for v in n_samples.values())
        columns = {
            "task": self.shape.task,
            "batch_size": self.shape.batch_size,
            "metric": metric,
            "accuracy": accuracy,
            "accuracy_stderr": stderr,
            "samples": samples,
            "queries": samples,
            "num_fewshot": self.shape.num_fewshot,
            **self._memory.read(),
        }
        return Repetition(measurement=m, columns=columns)

    def teardown(self) -> None:
        self.lm = None
        if self.engine is not None:
            self.engine.close()
