"""The shape every workload has, and the context the runner hands it.

A *case* is a plain JSON-able dict (it is written to ``cases/<case_id>/case.json``)::

    {
      "case_id": "3f2a9c...", "case": "tiny-s/fp32/cpu/infer-b8-p32-n32", "suite": "quickstart",
      "hardware": {"name": "cpu", "device": "cpu", "threads": None, "memory_limit_mb": None, ...},
      "model": {"name": "tiny-s", "source": "builtin:tiny-s", "trust_remote_code": False} | None,
      "variant": {"name": "fp32", "dtype": "float32", "quantization": None} | None,
      "workload": one shape, with every list already expanded (its workload's ``case`` model):
          {"type": "train", "steps": 300, "batch_size": 16, "seq_len": 64, "text_file": None}
          {"type": "infer", "batch_size": 8, "prompt_tokens": 32, "new_tokens": 32}
          {"type": "accuracy", "task": "arith_mc", "limit": 200, "num_fewshot": 0}
          {"type": "command", "name": "my-script", "run": ["python", "bench.py"], "env": {}, "cwd": None}
      "measurement": the suite's measurement block (warmup, min_repeats, ...),
      "carbon": the suite's carbon block,
    }

The runner drives a workload in a fresh worker process: ``setup`` once, ``warmup`` (not measured),
then ``run`` once per repetition (until the stopping rule or ``planned_repetitions`` says stop),
then ``teardown``. Each ``run`` opens its own meter window(s) and returns one record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.meter import Measurement, Meter

if TYPE_CHECKING:
    from harness.schema import CaseShape
    from harness.settings import MeasurementSettings


@dataclass
class Context:
    meter: Meter
    case: dict
    #: the run's shared artifacts (trained builtin models live in artifacts_dir/models/<model>)
    artifacts_dir: Path
    case_dir: Path
    #: idle watts per domain of this hardware profile (for dynamic energy), if measured
    idle_w: dict[str, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> MeasurementSettings:
        """The case's measurement block as the suite's model (its defaults are the suite's)."""
        from harness.settings import case_settings

        return case_settings(self.case)


@dataclass
class Repetition:
    """One repetition's outcome: the window that is *the* energy figure, and the other columns."""

    measurement: Measurement
    #: work, time, memory and accuracy columns (tokens_out, queries, ttft_s, accuracy...)
    columns: dict[str, Any]
    #: more windows inside it worth keeping (e.g. infer's prefill and decode), by name
    parts: dict[str, Measurement] = field(default_factory=dict)


class Workload:
    """Base class. Subclasses implement ``run`` and whatever of the rest they need."""

    type: str = "?"
    #: its block of the suite: a harness.schema.WorkloadSettings model beside the class
    settings: Any = None
    #: one case's workload dict, typed: a harness.schema.CaseShape model beside the class, which
    #: ``__init__`` validates the case's dict into ``self.shape`` (None: a plugin that reads
    #: ``self.spec`` itself)
    case: type[CaseShape] | None = None
    #: what it is (read through harness.workloads, never restated by name elsewhere):
    #: whether it makes a model's checkpoint (artifacts/models/<model name>) that later cases load
    makes_model: bool = False
    #: whether it runs a suite model and variant (a command workload, or a plugin's that does not
    #: say, runs a program)
    uses_model: bool = False
    #: which engines run it: "in-process", "served" (a server engine) or "any"
    engines: str = "any"
    #: it runs a program of its own: the worker applies the profile as CPU affinity and never
    #: imports torch for it
    own_program: bool = False
    #: one unit of its work, which its per-unit figures divide by: "step" (a training step),
    #: "query" (an in-process query), "request" (a served request), "sample" (a scored
    #: question), "run" (a run of a program). The report selects rows by it, never by name.
    unit: str = "run"
    #: it scores a model: its rows carry ``accuracy`` and its sample count
    scores: bool = False
    #: the key of its case shape that setups are compared at like with like, and the word a
    #: label gives it ("batch 8", "concurrency 4"); None: not compared shape by shape
    shape_key: str | None = None
    shape_word: str | None = None
    #: the figures ``harness compare`` judges its cases by: per unit of work, never per repetition
    compare_metrics: tuple[str, ...] = ("energy_per_run_j", "duration_per_run_s")
    #: a model maker that derives its model from another one of the suite: the words for what
    #: it did ("distilled", "fine-tuned") and for the model it started from ("teacher", "from");
    #: None for one that trains from scratch
    derives: str | None = None
    source_word: str | None = None
    #: the model it makes runs the very network it started from (a fine-tune: other weights,
    #: the same work per query)
    same_network: bool = False
    #: its life-cycle stage (BoAmps ``taskStage``): "training" or "inference", None for neither
    stage: str | None = None

    @classmethod
    def loads_checkpoint_of(cls, case: dict) -> str | None:
        """The suite model whose checkpoint of this run a case of this kind loads, or None: by
        default the case model's own (when a case of the run makes one)."""
        return (case.get("model") or {}).get("name")

    def __init__(self, ctx: Context):
        self.ctx = ctx
        #: the case's workload dict as written (a plugin without a case model reads it)
        self.spec: dict = ctx.case["workload"]
        #: the same, as the ``case`` model: what the workload reads (a bad dict is one line)
        self.shape = self.case.of(self.spec) if self.case is not None else None

    def setup(self) -> dict:
        """Load what the work needs; return the static columns (params, model_size_mb, dtype...)."""
        return {}

    def planned_repetitions(self) -> int | None:
        """A fixed repetition count (train chunks, one accuracy pass), or None for the stop rule."""
        return None

    def warmup(self, iterations: int) -> None:
        """Unmeasured work before the first repetition."""

    def run(self, repetition: int) -> Repetition:
        raise NotImplementedError

    def summary(self) -> dict:
        """Case-level results beyond the repetitions (loss curve, saved model path...)."""
        return {}

    def teardown(self) -> None:
        """Free what setup took."""
