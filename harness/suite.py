"""Suites: the YAML schema, its validation, and the expansion into cases.

A suite is a matrix (hardware × models × variants × workload shapes, and hardware × each command
workload). ``load_suite`` turns a file into a ``Suite`` or raises ``SuiteError`` whose lines each
name one field and what is wrong with it (``measurement.min_repeats: must be >= 1``); ``expand``
turns a ``Suite`` into the plain case dicts that workers run (format: harness/workloads/base.py).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from harness.errors import HarnessError

DTYPES = ("float32", "bfloat16", "float16")
QUANTIZATIONS = ("int8-dynamic", "int8-weight", "int4-weight")
#: weight-only quantisations done by torchao (an optional package, see variant_refusal)
TORCHAO_QUANTIZATIONS = ("int8-weight", "int4-weight")
SOURCE_PREFIXES = ("builtin:", "path:", "hf:")
MODEL_WORKLOADS = ("train", "distill", "finetune", "infer", "accuracy", "serve")
#: workloads that make a model (and save it under artifacts/models/<model name>)
PRODUCING_WORKLOADS = ("train", "distill", "finetune")
#: quantizations applied in-process (transformers, torchao)
IN_PROCESS_QUANTIZATIONS = ("int8-dynamic", "int8-weight", "int4-weight")
#: GGUF types a llamacpp variant may ask for (harness.models.gguf.GGUF_TYPES)
GGUF_QUANTIZATIONS = ("gguf-f16", "gguf-q8_0", "gguf-q5_0", "gguf-q4_0", "gguf-q4_k_m")
#: engines whose model runs behind a server (the serve workload needs one)
SERVER_ENGINES = ("llamacpp", "vllm", "openai")
#: short names for dtypes in readable case names are the variant names; these are for docs
# \Z, not $: "$" also matches before a final newline, and a name must not end in one
_HF_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?(@[\w./-]+)?\Z")
_DEVICE = re.compile(r"(cpu|cuda:\d+)\Z")
_NAME = re.compile(r"[A-Za-z0-9][\w.+-]*\Z", re.ASCII)
_TASK = re.compile(r"[A-Za-z0-9][\w.:+-]*\Z", re.ASCII)
#: a problem line shows at most this much of a value, and a suite at most this many lines
EXCERPT_CHARS = 60
LINE_CHARS = 240
MAX_PROBLEMS = 20
#: the extra to install for each kind of workload, and the modules it brings
EXTRAS = {
    "train": ("ml", ("torch", "transformers", "tokenizers")),
    "infer": ("ml", ("torch", "transformers", "tokenizers")),
    "accuracy": ("ml", ("torch", "transformers", "tokenizers", "lm_eval")),
}


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> str:
    """``repr`` of a value, cut to ``limit`` characters: a message never echoes a whole value
    (YAML aliases can make a few hundred bytes of suite into megabytes of value)."""
    text = _bounded_repr(value, limit + 1)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bounded_repr(value: Any, limit: int) -> str:
    # repr of a huge aliased structure would itself be huge: build only what is shown
    if isinstance(value, dict):
        parts, size = [], 2
        for k, v in value.items():
            part = f"{_bounded_repr(k, limit)}: {_bounded_repr(v, limit)}"
            parts.append(part)
            size += len(part) + 2
            if size > limit:
                break
        return "{" + ", ".join(parts) + "}"
    if isinstance(value, (list, tuple)):
        parts, size = [], 2
        for v in value:
            part = _bounded_repr(v, limit)
            parts.append(part)
            size += len(part) + 2
            if size > limit:
                break
        return "[" + ", ".join(parts) + "]"
    if isinstance(value, str) and len(value) > limit:
        return repr(value[:limit])
    return repr(value)


class SuiteError(HarnessError):
    """An invalid suite: ``problems`` holds one line per problem, each naming its field."""

    def __init__(self, problems: list[str], source: str = "suite"):
        self.problems = problems
        self.source = source
        first = problems[0] if problems else "invalid"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{source}: {first}{more}")


class _Strict(BaseModel):
    # unknown keys are errors everywhere: a typo must not silently fall back to a default
    model_config = ConfigDict(extra="forbid", frozen=False)


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"{excerpt(value)} is not a usable name (letters, digits, '.', '_', '-', '+'; "
            "no '/', spaces or line breaks)"
        )
    return value


class Carbon(_Strict):
    country: str | None = None
    region: str | None = None
    intensity_g_per_kwh: Annotated[float, Field(ge=0)] | None = None
    pue: Annotated[float, Field(ge=1.0)] = 1.0
    #: an hourly series (CSV: timestamp, gCO2e/kWh) instead of one figure; read relative to the
    #: working directory, kept in the run's manifest
    intensity_file: str | None = None
    #: years over which the hardware's embodied emissions are amortised
    hardware_lifetime_years: Annotated[float, Field(gt=0)] = 4.0
    #: litres of water evaporated on site per kWh of IT energy (default: a labelled average)
    wue_l_per_kwh: Annotated[float, Field(ge=0)] | None = None
    #: litres of water consumed per kWh of electricity generated (default: a labelled average)
    electricity_water_l_per_kwh: Annotated[float, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Carbon:
        given = [self.country, self.intensity_g_per_kwh, self.intensity_file]
        if sum(v is not None for v in given) != 1:
            raise ValueError(
                "give one of country (ISO 3166 alpha-3), intensity_g_per_kwh or intensity_file"
            )
        if self.region is not None and self.country is None:
            raise ValueError("region needs a country")
        if self.intensity_file is not None:
            self.intensity_file = str(Path(self.intensity_file).expanduser().resolve())
        if self.country is not None or self.intensity_file is not None:
            from harness.carbon import intensity

            try:
                intensity(self.model_dump())
            except HarnessError as e:  # unknown country or region, an unreadable series
                raise ValueError(str(e).removeprefix("carbon.").removeprefix("carbon: ")) from None
        return self


class Estimate(_Strict):
    """The estimate source's options (where nothing measures): its model and attribution."""

    #: auto: the best public model for this CPU; codecarbon: codecarbon's TDP × load model
    model: Literal["auto", "codecarbon"] = "auto"
    #: machine: the whole machine's estimated power; process: the case's own processes' share
    attribution: Literal["machine", "process"] = "machine"


class Measurement(_Strict):
    sensors: Literal["auto"] | list[str] = "auto"
    sample_hz: Annotated[float, Field(gt=0)] | None = 10
    idle_s: Annotated[float, Field(ge=0)] = 5
    warmup: Annotated[int, Field(ge=0)] = 1
    min_repeats: Annotated[int, Field(ge=1)] = 3
    max_repeats: Annotated[int, Field(ge=1)] = 10
    min_duration_s: Annotated[float, Field(ge=0)] = 1
    target_rel_ci: Annotated[float, Field(gt=0)] = 0.05
    case_timeout_s: Annotated[float, Field(gt=0)] = 600
    tdp_w: Annotated[float, Field(gt=0)] | None = None
    #: seconds to wait between repetitions, so each starts from a similar temperature
    cooldown_s: Annotated[float, Field(ge=0)] = 0
    #: a window whose hottest device warms or cools by more than this gets a warning
    max_temp_drift_c: Annotated[float, Field(gt=0)] | None = None
    estimate: Estimate = Field(default_factory=Estimate)
    #: a training case (train, distill, finetune) forecasts its total after this share of steps
    forecast_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.1
    #: a training case whose forecast energy passes this is stopped (failed, with the reason)
    energy_budget_j: Annotated[float, Field(gt=0)] | None = None

    @field_validator("sensors", mode="before")
    @classmethod
    def _split_sensors(cls, value):
        # "rapl,nvml" or a single name reads as a list, as on the command line
        if isinstance(value, str) and value.strip() != "auto":
            return [s.strip() for s in value.split(",") if s.strip()]
        return value

    @field_validator("sensors")
    @classmethod
    def _known_sensors(cls, value):
        if isinstance(value, list):
            from harness.sensors import REGISTRY

            if not value:
                raise ValueError("the list of sources is empty (use auto, or name sources)")
            unknown = [s for s in value if s not in REGISTRY]
            if unknown:
                raise ValueError(
                    f"unknown source {excerpt(unknown[0])} (known: {', '.join(sorted(REGISTRY))})"
                )
            if len(set(value)) != len(value):
                raise ValueError("a source is listed twice")
        return value

    @model_validator(mode="after")
    def _repeats(self) -> Measurement:
        if self.min_repeats > self.max_repeats:
            raise ValueError(
                f"min_repeats: must be <= max_repeats ({self.max_repeats}), not {self.min_repeats}"
            )
        return self


class KnobCommand(_Strict):
    """A board's own tool as a knob (Jetson ``nvpmodel``): see harness/knobs.py."""

    #: prints the current setting; its last output line is saved as the original
    query: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] | None = None
    set: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    #: ``{original}`` in an argument is replaced by what ``query`` printed
    restore: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]

    @model_validator(mode="after")
    def _original_needs_query(self) -> KnobCommand:
        if self.query is None and any("{original}" in a for a in self.restore):
            raise ValueError("restore: uses {original} but there is no query to read it")
        return self


#: the knob fields of a hardware profile, in the order harness/knobs.py sets them: a board's mode
#: first (it may move clocks and limits), then the CPU's, then the GPU's
KNOB_FIELDS = (
    "knob_command",
    "cpu_governor",
    "cpu_max_mhz",
    "power_limit_w",
    "gpu_locked_clocks_mhz",
)


class Hardware(_Strict):
    name: str
    device: str = "cpu"
    threads: Annotated[int, Field(ge=1)] | None = None
    memory_limit_mb: Annotated[float, Field(gt=0)] | None = None
    edge: bool = False
    #: Ray resources a node must offer to run this profile's cases (harness run --ray)
    resources: dict[str, float] | None = None
    #: knobs, set before the profile's cases and restored after them (harness/knobs.py)
    power_limit_w: Annotated[float, Field(gt=0)] | None = None
    gpu_locked_clocks_mhz: (
        Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=2, max_length=2)] | None
    ) = None
    cpu_max_mhz: Annotated[float, Field(gt=0)] | None = None
    cpu_governor: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")] | None = None
    knob_command: KnobCommand | None = None

    _name = field_validator("name")(_check_name)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError(f"{excerpt(value)} is not a device (cpu or cuda:N)")
        return value

    @model_validator(mode="after")
    def _gpu_knobs(self) -> Hardware:
        for knob in ("power_limit_w", "gpu_locked_clocks_mhz"):
            if getattr(self, knob) is not None and not self.device.startswith("cuda"):
                raise ValueError(f"{knob}: a GPU knob needs a cuda:N device, not {self.device}")
        clocks = self.gpu_locked_clocks_mhz
        if clocks is not None and clocks[0] > clocks[1]:
            raise ValueError(f"gpu_locked_clocks_mhz: give [lowest, highest], not {clocks}")
        return self

    def case_dict(self) -> dict:
        """The profile as cases carry it: knobs left unset are left out, so that the case ids of
        profiles without knobs stay what they were before knobs existed."""
        data = self.model_dump()
        return {k: v for k, v in data.items() if k not in KNOB_FIELDS or v is not None}


class Model(_Strict):
    name: str
    source: str
    trust_remote_code: bool = False

    _name = field_validator("name")(_check_name)

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        prefix = next((p for p in SOURCE_PREFIXES if value.startswith(p)), None)
        if prefix is None:
            raise ValueError(
                f"{excerpt(value)} has no known source prefix ({', '.join(SOURCE_PREFIXES)})"
            )
        rest = value[len(prefix) :]
        if not rest.strip():
            raise ValueError(f"{excerpt(value)} names nothing after {prefix}")
        if prefix == "hf:" and not _HF_ID.match(rest):
            raise ValueError(f"{excerpt(value)} is not a Hugging Face id (hf:org/name[@revision])")
        if prefix == "path:" and "\n" in rest:
            raise ValueError(f"{excerpt(value)}: a path must not hold a line break")
        if prefix == "builtin:":
            known = builtin_model_names()
            if known is not None and rest not in known:
                raise ValueError(
                    f"unknown builtin model {excerpt(rest)} (known: {', '.join(known)})"
                )
        return value


class Variant(_Strict):
    name: str
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    quantization: (
        Literal[
            "int8-dynamic",
            "int8-weight",
            "int4-weight",
            "gguf-f16",
            "gguf-q8_0",
            "gguf-q5_0",
            "gguf-q4_0",
            "gguf-q4_k_m",
        ]
        | None
    ) = None
    #: share of the weights of the decoder's linear layers pruned on load (0 < prune < 1)
    prune: Annotated[float, Field(gt=0, lt=1)] | None = None
    #: magnitude (the default): zero the smallest weights (same shapes); neurons: remove whole
    #: MLP neurons (the matrices shrink)
    prune_method: Literal["magnitude", "neurons"] | None = None
    #: how the model runs (harness.engines.REGISTRY); None: transformers, in-process
    engine: str | None = None
    #: openai engine: the command that starts the server ({port} is replaced by a free port)
    command: list[str] | None = None
    #: openai engine: the health URL of the started server, or of the one already at ``url``
    health_url: str | None = None
    #: openai engine: an OpenAI-compatible server already running (only this machine is measured)
    url: str | None = None

    _name = field_validator("name")(_check_name)

    @property
    def derived(self) -> bool:
        """A variant that changes the trained weights (quantised or pruned): never trained."""
        return bool(self.quantization or self.prune)

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from harness.engines import REGISTRY

        if value not in REGISTRY:
            raise ValueError(f"unknown engine {value!r} (known: {', '.join(REGISTRY)})")
        return value

    @model_validator(mode="after")
    def _engine_runs_it(self) -> Variant:
        engine = self.engine or "transformers"
        gguf = (self.quantization or "").startswith("gguf-")
        if gguf and engine != "llamacpp":
            raise ValueError(
                f"quantization: {self.quantization} is served by engine llamacpp, not {engine}"
            )
        if engine == "llamacpp" and self.quantization and not gguf:
            raise ValueError(
                f"quantization: engine llamacpp runs GGUF types ({', '.join(GGUF_QUANTIZATIONS)}), "
                f"not {self.quantization}"
            )
        if engine in ("llamacpp", "vllm") and self.quantization in IN_PROCESS_QUANTIZATIONS:
            raise ValueError(
                f"quantization: {self.quantization} is in-process only, not engine {engine}"
            )
        openai_keys = [k for k in ("command", "health_url", "url") if getattr(self, k) is not None]
        if engine != "openai" and openai_keys:
            raise ValueError(f"{openai_keys[0]}: only engine openai takes it")
        if engine == "openai" and (self.command is None) == (self.url is None):
            raise ValueError("engine openai needs either command (with health_url) or url")
        if engine == "openai" and self.command is not None and not self.health_url:
            raise ValueError("health_url: engine openai with a command needs its health URL")
        return self

    @model_validator(mode="after")
    def _combination(self) -> Variant:
        if self.quantization == "int8-dynamic" and self.dtype != "float32":
            raise ValueError(
                f"quantization: int8-dynamic quantises a float32 model; set dtype: float32, "
                f"not {self.dtype}"
            )
        if self.prune is None and self.prune_method is not None:
            raise ValueError("prune_method: needs prune (the share of weights to prune)")
        return self

    def case_dict(self) -> dict:
        """The variant as a case holds it: pruning keys only when it prunes, so that the cases
        of variants that do not keep the ids they had before pruning existed."""
        out = self.model_dump()
        if self.prune is None:
            out.pop("prune")
            out.pop("prune_method")
        elif self.prune_method is None:
            out["prune_method"] = "magnitude"
        for key in ("engine", "command", "health_url", "url"):  # likewise for engine keys
            if out[key] is None:
                out.pop(key)
        return out


def variant_refusal(variant: Variant, device: str) -> str | None:
    """Why ``variant`` cannot run on ``device`` here, or None when it can."""
    if variant.quantization == "int8-dynamic" and device != "cpu":
        return f"int8-dynamic runs on the cpu only (torch's dynamic quantisation), not {device}"
    if variant.quantization in TORCHAO_QUANTIZATIONS:
        import importlib.util

        if importlib.util.find_spec("torchao") is None:
            return (
                f"{variant.quantization} needs torchao, which is not installed "
                "(pip install 'energy-harness[ml]')"
            )
    return None


def _check_selection(field: str, chosen: list[str] | None, known: list[str]) -> None:
    for name in chosen or []:
        if name not in known:
            raise ValueError(f"{field}: unknown name {name!r} (known: {', '.join(known)})")


class _Selects(_Strict):
    #: the models and variants of the suite this workload runs (all when absent)
    models: Annotated[list[str], Field(min_length=1)] | None = None
    variants: Annotated[list[str], Field(min_length=1)] | None = None


def _check_task(value: str | None) -> str | None:
    if value is not None:
        from harness.models.corpus import TASKS

        if value not in TASKS:
            raise ValueError(f"unknown task {value!r} (known: {', '.join(TASKS)})")
    return value


class TrainWorkload(_Selects):
    type: Literal["train"]
    steps: Annotated[int, Field(ge=1)]
    batch_size: Annotated[int, Field(ge=1)]
    seq_len: Annotated[int, Field(ge=1)]
    lr: Annotated[float, Field(gt=0)] | None = None
    text_file: str | None = None
    #: train on this generated task's training questions instead of the corpus
    task: str | None = None

    _task = field_validator("task")(_check_task)

    @model_validator(mode="after")
    def _one_text(self) -> TrainWorkload:
        if self.task and self.text_file:
            raise ValueError("give task or text_file, not both")
        return self


class DistillWorkload(_Selects):
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


class FinetuneWorkload(_Selects):
    # "from" is a Python keyword: the field is from_, read and written as "from"
    model_config = ConfigDict(extra="forbid", serialize_by_alias=True)

    type: Literal["finetune"]
    #: a suite model made by a case of this run, or a path:/hf: source
    from_: str = Field(alias="from")
    task: str
    steps: Annotated[int, Field(ge=1)]
    batch_size: Annotated[int, Field(ge=1)] = 16
    seq_len: Annotated[int, Field(ge=1)] = 32
    lr: Annotated[float, Field(gt=0)] | None = None

    _task = field_validator("task")(_check_task)


class InferWorkload(_Selects):
    type: Literal["infer"]
    batch_sizes: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]
    prompt_tokens: Annotated[int, Field(ge=1)]
    new_tokens: Annotated[int, Field(ge=1)]

    @field_validator("batch_sizes")
    @classmethod
    def _unique(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("a batch size is listed twice")
        return value


class AccuracyWorkload(_Selects):
    type: Literal["accuracy"]
    tasks: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    limit: Annotated[int, Field(ge=1)] | None = None
    num_fewshot: Annotated[int, Field(ge=0)] = 0

    @field_validator("tasks")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        for task in value:
            if not _TASK.match(task):
                raise ValueError(
                    f"{excerpt(task)} is not a task name (no spaces, slashes or line breaks)"
                )
        if len(set(value)) != len(value):
            raise ValueError("a task is listed twice")
        return value


class CommandWorkload(_Strict):
    type: Literal["command"]
    name: str
    run: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None

    _name = field_validator("name")(_check_name)

    @field_validator("env", mode="before")
    @classmethod
    def _numbers_as_text(cls, value):
        # OMP_NUM_THREADS: 4 in YAML is a number; the environment only holds text
        if isinstance(value, dict):
            return {
                k: str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
                for k, v in value.items()
            }
        return value


class ServeWorkload(_Selects):
    type: Literal["serve"]
    #: closed-loop clients, a case each (empty: only the open-loop cases of ``rate_rps``)
    concurrency: list[Annotated[int, Field(ge=1)]] = []
    #: open-loop Poisson arrivals, requests per second, a case each; the server has ``slots``
    rate_rps: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = []
    #: the server's slots in an open-loop case (default: the largest concurrency, else 16)
    slots: Annotated[int, Field(ge=1)] | None = None
    requests: Annotated[int, Field(ge=1)]
    prompt_tokens: Annotated[int, Field(ge=1)]
    new_tokens: Annotated[int, Field(ge=2)]
    #: the server's port (None: a free one); a port in use fails the case in one line
    port: Annotated[int, Field(ge=1, le=65535)] | None = None

    @field_validator("concurrency", "rate_rps")
    @classmethod
    def _unique(cls, value: list, info) -> list:
        if len(set(value)) != len(value):
            raise ValueError(f"a {info.field_name} is listed twice")
        return value

    @model_validator(mode="after")
    def _enough_requests(self) -> ServeWorkload:
        from harness.engines.client import OPEN_LOOP_MIN_REQUESTS

        if not self.concurrency and not self.rate_rps:
            raise ValueError("serve needs a concurrency list, a rate_rps list, or both")
        if self.concurrency and self.requests < max(self.concurrency):
            raise ValueError(
                f"requests: {self.requests} cannot keep {max(self.concurrency)} in flight "
                "(requests must be at least the largest concurrency)"
            )
        if self.rate_rps and self.requests < OPEN_LOOP_MIN_REQUESTS:
            raise ValueError(
                f"requests: {self.requests} is too few for an open loop's window "
                f"(rate_rps needs at least {OPEN_LOOP_MIN_REQUESTS})"
            )
        return self

    def open_loop_slots(self) -> int:
        return self.slots or (max(self.concurrency) if self.concurrency else 16)


Workload = Annotated[
    TrainWorkload
    | DistillWorkload
    | FinetuneWorkload
    | InferWorkload
    | AccuracyWorkload
    | ServeWorkload
    | CommandWorkload,
    Field(discriminator="type"),
]


class Report(_Strict):
    #: queries served over a deployment's life, to weigh training energy against inference
    queries_lifetime: Annotated[int, Field(ge=0)] = 1_000_000
    #: the answer sentence's "accurate enough": within this many accuracy points of the best
    accuracy_tolerance: Annotated[float, Field(ge=0, le=1)] = 0.05


class Checks(_Strict):
    """Thresholds of ``harness check`` (harness/report/check.py) a user may need to change; each
    default with its source. A serve workload's own ``max_failed_share`` and ``min_steady_s`` (on
    its rows) apply where this block does not set them."""

    #: average CPU/GPU power above this × TDP (GPU: its power limit) fails (ML.ENERGY: 1.1)
    max_power_tdp_ratio: Annotated[float, Field(gt=0)] = 1.1
    #: peak power above this × the device's TDP fails (ML.ENERGY: 1.7)
    max_peak_tdp_ratio: Annotated[float, Field(gt=0)] = 1.7
    #: counter against integrated power, relative (harness sensors --check: 2 %)
    max_counter_power_diff: Annotated[float, Field(gt=0)] = 0.02
    #: coefficient of variation of a case's energy over its repetitions, above which it warns
    max_energy_cv: Annotated[float, Field(gt=0)] = 0.1
    #: temperature drift in a window that warns (default: measurement.max_temp_drift_c)
    max_temp_drift_c: Annotated[float, Field(gt=0)] | None = None
    #: hottest temperature that warns (ML.ENERGY: 95 °C)
    max_temp_c: Annotated[float, Field(gt=0)] = 95.0
    #: a window clock below this share of the case's highest warns (throttling)
    min_clock_share: Annotated[float, Field(gt=0, le=1)] = 0.8
    #: share of a serve case's requests that may fail (ML.ENERGY: none)
    max_failed_share: Annotated[float, Field(ge=0, le=1)] = 0.0
    #: shortest steady window of a serve case, seconds (ML.ENERGY: 30)
    min_steady_s: Annotated[float, Field(ge=0)] = 30.0
    #: open loop: offered rate below this × rate_rps warns
    min_offered_share: Annotated[float, Field(gt=0, le=1)] = 0.9
    #: closed loop: requests in flight on average below this × concurrency warns (ML.ENERGY: 0.8)
    min_inflight_share: Annotated[float, Field(gt=0, le=1)] = 0.8
    #: energy per token above this (joules) fails (ML.ENERGY: 100)
    max_energy_per_token_j: Annotated[float, Field(gt=0)] = 100.0
    #: half-width of an accuracy's 95% interval above which it warns (too few samples)
    accuracy_ci_max: Annotated[float, Field(gt=0, le=1)] = 0.1


class Suite(_Strict):
    name: str
    description: str = ""
    carbon: Carbon
    measurement: Measurement = Field(default_factory=Measurement)
    hardware: Annotated[list[Hardware], Field(min_length=1)]
    models: list[Model] = Field(default_factory=list)
    variants: list[Variant] = Field(default_factory=list)
    workloads: list[Workload] = Field(default_factory=list)
    report: Report | None = None
    checks: Checks | None = None

    _name = field_validator("name")(_check_name)

    @field_serializer("checks")
    def _checks_as_given(self, checks: Checks | None):
        # what the suite set, not the defaults: a set threshold overrides a serve workload's own
        return checks.model_dump(exclude_unset=True) if checks is not None else None

    @model_validator(mode="after")
    def _matrix(self) -> Suite:
        for field, items in (
            ("hardware", self.hardware),
            ("models", self.models),
            ("variants", self.variants),
        ):
            _unique_names(field, items)
        commands = [w for w in self.workloads if w.type == "command"]
        _unique_names("workloads", commands, what="command name")
        if not self.workloads:
            raise ValueError("workloads: no workloads, so the suite has no cases")
        uses_models = any(w.type in MODEL_WORKLOADS for w in self.workloads)
        if uses_models and not self.models:
            raise ValueError("models: train/infer/accuracy/serve workloads need at least one model")
        if uses_models and not self.variants:
            raise ValueError(
                "variants: train/infer/accuracy/serve workloads need at least one variant"
            )
        only_train = all(w.type in PRODUCING_WORKLOADS for w in self.workloads)
        if only_train and all(v.derived for v in self.variants):
            raise ValueError(
                "variants: every variant is quantized or pruned and training runs only the "
                "others, so the suite has no cases"
            )
        model_names = [m.name for m in self.models]
        variant_names = [v.name for v in self.variants]
        for i, w in enumerate(self.workloads):
            if w.type == "command":
                continue
            _check_selection(f"workloads.{i}.models", w.models, model_names)
            _check_selection(f"workloads.{i}.variants", w.variants, variant_names)
            if w.type == "distill" and w.teacher not in model_names:
                raise ValueError(
                    f"workloads.{i}.teacher: {w.teacher!r} is not a model of the suite "
                    f"(known: {', '.join(model_names)})"
                )
            if w.type == "finetune":
                _check_finetune(i, w, self.models)
        for hw in self.hardware:
            for v in self.variants:
                why = variant_refusal(v, hw.device)
                if why and _variant_used(self, v.name):
                    raise ValueError(f"variants.{v.name}: cannot run on {hw.name}: {why}")
        return self


def _check_finetune(i: int, w: FinetuneWorkload, models: list[Model]) -> None:
    by_name = {m.name: m for m in models}
    external = w.from_.startswith(("path:", "hf:"))
    if not external and w.from_ not in by_name:
        raise ValueError(
            f"workloads.{i}.from: {w.from_!r} is neither a model of the suite nor a path:/hf: "
            f"source (models: {', '.join(by_name)})"
        )
    source = w.from_ if external else by_name[w.from_].source
    for m in models:
        if (w.models is None or m.name in w.models) and m.name != w.from_ and m.source != source:
            raise ValueError(
                f"workloads.{i}.models: {m.name} ({m.source}) cannot be fine-tuned from "
                f"{w.from_} ({source}): the fine-tuned model keeps its source's architecture; "
                f"give it source {source!r} or pick models with models:"
            )


def _variant_used(suite: Suite, variant: str) -> bool:
    """Whether some infer/accuracy workload runs ``variant`` (training refuses derived ones)."""
    return any(
        w.type in ("infer", "accuracy", "serve") and (w.variants is None or variant in w.variants)
        for w in suite.workloads
    )


def _unique_names(field: str, items: list, what: str = "name") -> None:
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if item.name in seen:
            raise ValueError(
                f"{field}.{i}.name: duplicate {what} {excerpt(item.name)} "
                f"(also {field}.{seen[item.name]})"
            )
        seen[item.name] = i


def builtin_model_names() -> list[str] | None:
    """The builtin family's names, or None when the models package is not importable here."""
    try:
        from harness.models import builtin
    except Exception:
        return None
    for attr in ("NAMES", "FAMILY", "CONFIGS", "BUILTIN", "SIZES", "MODELS"):
        table = getattr(builtin, attr, None)
        if isinstance(table, dict) and table:
            return list(table)
        if isinstance(table, (list, tuple)) and table and all(isinstance(n, str) for n in table):
            return list(table)
    return None


# ---------------------------------------------------------------------------------- loading
def _format_error(err: dict) -> str:
    loc = list(err.get("loc", ()))
    # the discriminated union puts the tag in the path (workloads.1.infer.batch_sizes): drop it
    if len(loc) >= 3 and loc[0] == "workloads" and loc[2] in (*MODEL_WORKLOADS, "command"):
        del loc[2]
    # Literal | None and list | Literal unions add their member names: drop those too
    loc = [p for p in loc if not (isinstance(p, str) and ("[" in p or p in ("str", "list")))]
    path = ".".join(str(p) for p in loc)
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    given = err.get("input")
    if kind == "extra_forbidden":
        what = "unknown key"
    elif kind == "missing":
        what = "required"
    elif kind == "greater_than_equal":
        what = f"must be >= {_num(ctx.get('ge'))}"
    elif kind == "greater_than":
        what = f"must be > {_num(ctx.get('gt'))}"
    elif kind == "less_than":
        what = f"must be < {_num(ctx.get('lt'))}"
    elif kind == "less_than_equal":
        what = f"must be <= {_num(ctx.get('le'))}"
    elif kind in ("int_parsing", "int_type", "int_from_float"):
        what = f"must be a whole number, not {excerpt(given)}"
    elif kind in ("float_parsing", "float_type"):
        what = f"must be a number, not {excerpt(given)}"
    elif kind in ("bool_parsing", "bool_type"):
        what = f"must be true or false, not {excerpt(given)}"
    elif kind in ("string_type",):
        what = f"must be a string, not {excerpt(given)}"
    elif kind in ("list_type",):
        what = f"must be a list, not {excerpt(given)}"
    elif kind in ("dict_type", "model_type", "model_attributes_type"):
        what = f"must be a mapping, not {excerpt(given)}"
    elif kind == "literal_error":
        what = f"must be {ctx.get('expected')}, not {excerpt(given)}"
    elif kind == "too_short":
        what = "must not be empty"
    elif kind == "union_tag_invalid":
        what = (
            f"unknown workload type {excerpt(ctx.get('tag'))} "
            f"(known: {', '.join((*MODEL_WORKLOADS, 'command'))})"
        )
    elif kind == "union_tag_not_found":
        what = f"needs a type ({', '.join(MODEL_WORKLOADS)} or command)"
    elif kind == "value_error":
        what = str(ctx.get("error") or err.get("msg", "")).removeprefix("Value error, ")
    else:
        what = err.get("msg", kind)
    what = what.splitlines()[0] if what else kind
    if len(what) > LINE_CHARS:
        what = what[: LINE_CHARS - 1] + "…"
    # model validators speak for the whole block; their message may start with its own path
    m = re.match(r"^([\w.]+): (.*)$", what)
    if m and kind == "value_error" and re.match(r"^[a-z_]+(\.\w+)*$", m.group(1)):
        path = f"{path}.{m.group(1)}" if path else m.group(1)
        what = m.group(2)
    if len(path) > LINE_CHARS:  # keys of a mapping are values too
        path = path[: LINE_CHARS - 1] + "…"
    return f"{path}: {what}" if path else what


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _dedupe(lines: list[str]) -> list[str]:
    out: list[str] = []
    for line in lines:
        if line not in out:
            out.append(line)
    return out


def validate_data(data: Any, source: str = "suite") -> Suite:
    """A ``Suite`` from already-parsed YAML, or ``SuiteError`` listing every problem."""
    if not isinstance(data, dict):
        raise SuiteError(
            [f"must be a mapping of keys (name, carbon, ...), not {_kind(data)}"], source
        )
    try:
        suite = Suite.model_validate(data)
    except ValidationError as e:
        errors = e.errors(include_url=False, include_input=True)
        lines = _dedupe([_format_error(err) for err in errors[: 4 * MAX_PROBLEMS]])
        # a union of "auto" | list reports both branches; keep only the most specific line
        if len(lines) > MAX_PROBLEMS or len(errors) > 4 * MAX_PROBLEMS:
            lines = [*lines[:MAX_PROBLEMS], "... and more problems (fix these first)"]
        raise SuiteError(lines, source) from None
    except HarnessError as e:  # raised inside a validator (e.g. the carbon lookup)
        raise SuiteError([str(e)], source) from None
    try:
        expand(suite)
    except HarnessError as e:
        raise SuiteError([str(e)], source) from None
    return suite


def _kind(value: Any) -> str:
    if value is None:
        return "an empty file"
    return f"a {type(value).__name__}"


def resolve_suite_path(name_or_path: str | Path) -> Path:
    """A suite file from a path, or a bare name looked up in ./suites, the checkout, package data."""
    path = Path(name_or_path)
    if path.exists():
        return path
    text = str(name_or_path)
    bare = "/" not in text and "\\" not in text
    if bare:
        stem = text.removesuffix(".yaml").removesuffix(".yml")
        here = Path(__file__).resolve().parent
        for folder in (Path("suites"), here.parent / "suites", here / "data" / "suites"):
            for suffix in (".yaml", ".yml"):
                candidate = folder / f"{stem}{suffix}"
                if candidate.is_file():
                    return candidate
    if bare:
        stem = text.removesuffix(".yaml").removesuffix(".yml")
        raise HarnessError(f"{text}: no such suite file, and no suite named {stem!r} in suites/")
    raise HarnessError(f"{text}: no such suite file")


def load_suite(name_or_path: str | Path) -> Suite:
    """Read and validate a suite file (or a bare suite name, see ``resolve_suite_path``)."""
    import yaml

    path = resolve_suite_path(name_or_path)
    if path.is_dir():
        raise HarnessError(f"{path}: is a folder, not a suite file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise HarnessError(f"{path}: cannot read: {e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise HarnessError(f"{path}: not valid YAML{where}: {problem}") from None
    return validate_data(data, source=str(path))


# ---------------------------------------------------------------------------------- expansion
def _shapes(workload: BaseModel) -> list[tuple[dict, str, str]]:
    """Each shape of a workload: (case workload dict, short name, long name)."""
    w = workload
    if w.type == "train":
        spec = {
            "type": "train",
            "steps": w.steps,
            "batch_size": w.batch_size,
            "seq_len": w.seq_len,
            "text_file": w.text_file,
        }
        if w.lr is not None:  # absent: the train workload's default
            spec["lr"] = w.lr
        if w.task:  # absent when not given, so that existing train cases keep their ids
            spec["task"] = w.task
            short = f"train-{w.task}"
            return [(spec, short, f"{short}-s{w.steps}-b{w.batch_size}-l{w.seq_len}")]
        return [(spec, "train", f"train-s{w.steps}-b{w.batch_size}-l{w.seq_len}")]
    if w.type == "distill":
        spec = {
            "type": "distill",
            "teacher": w.teacher,
            "steps": w.steps,
            "batch_size": w.batch_size,
            "seq_len": w.seq_len,
            "text_file": w.text_file,
            "temperature": w.temperature,
            "alpha": w.alpha,
        }
        if w.lr is not None:
            spec["lr"] = w.lr
        short = f"distill-{w.teacher}"
        return [(spec, short, f"{short}-s{w.steps}-b{w.batch_size}-l{w.seq_len}")]
    if w.type == "finetune":
        spec = {
            "type": "finetune",
            "from": w.from_,
            "task": w.task,
            "steps": w.steps,
            "batch_size": w.batch_size,
            "seq_len": w.seq_len,
        }
        if w.lr is not None:
            spec["lr"] = w.lr
        short = f"finetune-{w.task}"
        return [(spec, short, f"{short}-s{w.steps}-b{w.batch_size}-l{w.seq_len}")]
    if w.type == "infer":
        return [
            (
                {
                    "type": "infer",
                    "batch_size": b,
                    "prompt_tokens": w.prompt_tokens,
                    "new_tokens": w.new_tokens,
                },
                f"infer-b{b}",
                f"infer-b{b}-p{w.prompt_tokens}-n{w.new_tokens}",
            )
            for b in w.batch_sizes
        ]
    if w.type == "accuracy":
        return [
            (
                {"type": "accuracy", "task": t, "limit": w.limit, "num_fewshot": w.num_fewshot},
                f"accuracy-{t}",
                f"accuracy-{t}-n{w.num_fewshot}" + (f"-l{w.limit}" if w.limit else ""),
            )
            for t in w.tasks
        ]
    if w.type == "serve":
        shape = f"p{w.prompt_tokens}-n{w.new_tokens}-r{w.requests}"
        base = {
            "type": "serve",
            "requests": w.requests,
            "prompt_tokens": w.prompt_tokens,
            "new_tokens": w.new_tokens,
            "port": w.port,
        }
        closed = [
            ({**base, "concurrency": c}, f"serve-c{c}", f"serve-c{c}-{shape}")
            for c in w.concurrency
        ]
        slots = w.open_loop_slots()
        return closed + [
            (
                {**base, "concurrency": slots, "rate_rps": rate},
                f"serve-rps{rate:g}",
                f"serve-rps{rate:g}-c{slots}-{shape}",
            )
            for rate in w.rate_rps
        ]
    spec = {"type": "command", "name": w.name, "run": list(w.run), "env": dict(w.env), "cwd": w.cwd}
    return [(spec, w.name, w.name)]


def _runs(workload_type: str, variant: Variant) -> bool:
    """Whether a workload of this type is run for this variant (the matrix leaves the rest out).

    train, distill and finetune make in-process models, never a derived (quantised, pruned)
    variant; infer runs in-process (the transformers engine); serve needs a server engine;
    accuracy runs on every engine.
    """
    served = (variant.engine or "transformers") in SERVER_ENGINES
    if workload_type in PRODUCING_WORKLOADS:
        return not variant.derived and not served
    if workload_type == "infer":
        return not served
    if workload_type == "serve":
        return served
    return True


def _check_engine_fits(variant: Variant, hw: Hardware, model: Model) -> None:
    """Refuse a variant that its engine cannot run on this hardware or model, with the reason."""
    engine = variant.engine or "transformers"
    where = f"variants.{variant.name}"
    if engine == "llamacpp" and hw.device != "cpu":
        raise HarnessError(f"{where}: engine llamacpp is built for the cpu, not {hw.device}")
    if engine == "vllm" and not hw.device.startswith("cuda"):
        raise HarnessError(f"{where}: engine vllm runs on NVIDIA GPUs (cuda:N), not {hw.device}")
    if engine in ("llamacpp", "vllm") and model.source.startswith("hf:"):
        raise HarnessError(
            f"{where}: engine {engine} serves builtin: and path: models here, not {model.source}"
        )
    kind = (variant.quantization or "").removeprefix("gguf-")
    if engine == "llamacpp" and model.source.startswith("builtin:") and kind:
        try:
            from harness.models import builtin, gguf
        except ImportError:
            return
        arch = builtin.BUILTIN.get(model.source.removeprefix("builtin:"))
        if arch is not None and kind in gguf.GGUF_TYPES:
            gguf.check_shape(kind, arch["hidden_size"], arch["intermediate_size"], model.name)


def case_id(case: dict) -> str:
    """A stable id from what the case measures (hardware, model, variant, workload shape).

    The suite's name, description, measurement protocol and carbon settings are left out, so the
    same setup keeps its id across suites and runs and can be compared.
    """
    # hashed from the suite as written, never from masked text: masking depends on the
    # environment (which variables hold secrets now), an id must not
    settings = {k: case.get(k) for k in ("hardware", "model", "variant", "workload")}
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def expand(suite: Suite) -> list[dict]:
    """The suite's cases in run order (workloads/base.py format).

    Per hardware profile, per model: train cases first (they make the weights the other cases of a
    builtin model load), then infer and accuracy per variant; then the command workloads.
    Train runs only unquantized variants.
    """
    common = {
        "suite": suite.name,
        "measurement": suite.measurement.model_dump(),
        "carbon": suite.carbon.model_dump(),
    }
    shapes = [(w, _shapes(w)) for w in suite.workloads]
    # a short readable name when no two workloads give it to the same model and variant, else
    # the long one
    uses: dict[str, dict[tuple[str, str], int]] = {}
    for w, items in shapes:
        if w.type == "command":
            continue
        for _, short, _ in items:
            seen = uses.setdefault(short, {})
            for m in suite.models:
                for v in suite.variants:
                    if _applies(w, m.name, v):
                        seen[(m.name, v.name)] = seen.get((m.name, v.name), 0) + 1
    short_ok = {short: all(n == 1 for n in seen.values()) for short, seen in uses.items()}
    cases: list[dict] = []
    models = models_in_making_order(suite)
    for hw in suite.hardware:
        hw_dict = hw.case_dict()
        for model in models:
            first = [(w, i) for w, i in shapes if w.type in PRODUCING_WORKLOADS]
            then = [(w, i) for w, i in shapes if w.type in ("infer", "accuracy", "serve")]
            for group in (first, then):
                for variant in suite.variants:
                    for w, items in group:
                        if not _applies(w, model.name, variant) or not _runs(w.type, variant):
                            continue
                        _check_engine_fits(variant, hw, model)
                        for spec, short, long in items:
                            spec = _with_source_model(spec, suite, model)
                            shape = short if short_ok[short] else long
                            cases.append(
                                {
                                    "case": f"{model.name}/{variant.name}/{hw.name}/{shape}",
                                    **common,
                                    "hardware": hw_dict,
                                    "model": model.model_dump(),
                                    "variant": variant.case_dict(),
                                    "workload": spec,
                                }
                            )
        for w, items in shapes:
            if w.type == "command":
                for spec, short, _ in items:
                    cases.append(
                        {
                            "case": f"{hw.name}/{short}",
                            **common,
                            "hardware": hw_dict,
                            "model": None,
                            "variant": None,
                            "workload": spec,
                        }
                    )
    seen: dict[str, str] = {}
    out = []
    for case in cases:
        cid = case_id(case)
        if cid in seen:
            raise HarnessError(
                f"workloads: {case['case']} appears twice (the same shape listed twice)"
            )
        seen[cid] = case["case"]
        out.append({"case_id": cid, **case})
    names = [c["case"] for c in out]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise HarnessError(f"workloads: two cases are both named {dup}")
    if not out:
        raise HarnessError("workloads: the suite expands to no cases")
    _one_maker_per_model(out)
    _sources_are_made(out)
    return out


def _sources_are_made(cases: list[dict]) -> None:
    """A distill case's teacher (a finetune case's source model) is made by a case of the run."""
    made: set[tuple[str, str]] = set()
    for c in cases:
        w = c["workload"]
        source = w.get("teacher") if w["type"] == "distill" else None
        if w["type"] == "finetune" and not str(w.get("from")).startswith(("path:", "hf:")):
            source = w.get("from")
        if source is not None and (c["hardware"]["name"], source) not in made:
            field = "teacher" if w["type"] == "distill" else "from"
            raise HarnessError(
                f"workloads: {c['case']} starts from {source}, which no train, distill or finetune "
                f"case of the suite makes on {c['hardware']['name']} ({field} needs one)"
            )
        if w["type"] in PRODUCING_WORKLOADS:
            made.add((c["hardware"]["name"], c["model"]["name"]))


def _applies(w: BaseModel, model: str, variant: Variant) -> bool:
    """Whether a model workload runs for this model and variant (its selections, its kind)."""
    if w.models is not None and model not in w.models:
        return False
    if w.variants is not None and variant.name not in w.variants:
        return False
    if w.type in PRODUCING_WORKLOADS and variant.derived:
        return False  # a quantised or pruned variant is made from a trained model, not trained
    if w.type == "distill" and w.teacher == model:
        return False  # a model does not learn from itself
    if w.type == "finetune" and w.from_ == model:
        return False  # the fine-tuned model gets its own name (its checkpoint is another)
    return True


def _with_source_model(spec: dict, suite: Suite, model: Model) -> dict:
    """A distill or finetune shape with the model entry it starts from (its source, its name)."""
    by_name = {m.name: m for m in suite.models}
    if spec["type"] == "distill":
        return {**spec, "teacher_model": by_name[spec["teacher"]].model_dump()}
    if spec["type"] == "finetune":
        origin = spec["from"]
        if origin in by_name:
            return {**spec, "from_model": by_name[origin].model_dump()}
        entry = {**model.model_dump(), "source": origin}
        return {**spec, "from_model": entry}
    return spec


def _source_model(w: BaseModel) -> str | None:
    """The suite model whose checkpoint a distill or finetune workload starts from."""
    if w.type == "distill":
        return w.teacher
    if w.type == "finetune" and not w.from_.startswith(("path:", "hf:")):
        return w.from_
    return None


def models_in_making_order(suite: Suite) -> list[Model]:
    """The suite's models, each after the models its distill/finetune cases start from.

    Without distill or finetune workloads this is the suite's own order.
    """
    after: dict[str, set[str]] = {m.name: set() for m in suite.models}
    for w in suite.workloads:
        source = _source_model(w) if w.type in ("distill", "finetune") else None
        if source is None:
            continue
        for m in suite.models:
            if (w.models is None or m.name in w.models) and m.name != source:
                after[m.name].add(source)
    ordered: list[Model] = []
    placed: set[str] = set()
    pending = list(suite.models)
    while pending:
        ready = [m for m in pending if after[m.name] <= placed]
        if not ready:
            names = ", ".join(m.name for m in pending)
            raise HarnessError(
                f"workloads: the models {names} each start from another's checkpoint"
            )
        first = ready[0]
        ordered.append(first)
        placed.add(first.name)
        pending.remove(first)
    return ordered


def _one_maker_per_model(cases: list[dict]) -> None:
    """A model's checkpoint is made by one kind of case: a train and a distill of the same model
    would overwrite each other's weights, and its later cases would measure whichever came last."""
    makers: dict[tuple[str, str], set[str]] = {}
    for c in cases:
        kind = c["workload"]["type"]
        if kind in PRODUCING_WORKLOADS:
            key = (c["hardware"]["name"], c["model"]["name"])
            makers.setdefault(key, set()).add(
                f"train (task {c['workload']['task']})" if c["workload"].get("task") else kind
            )
    for (_, model), kinds in makers.items():
        if len(kinds) > 1:
            raise HarnessError(
                f"models.{model}: made by {' and '.join(sorted(kinds))} workloads; give each "
                "way of making it its own model entry and pick it with the workloads' models:"
            )


def select(cases: list[dict], pattern: str | None) -> list[dict]:
    """The cases whose readable name matches a glob (``--only``); all when ``pattern`` is None."""
    if not pattern:
        return cases
    return [c for c in cases if fnmatch.fnmatchcase(c["case"], pattern)]


def missing_extra(cases: list[dict]) -> str | None:
    """Why these cases cannot run here: the extra their workloads need and the first module of it
    that is not installed, or None. Checked before any case runs (a missing torch would otherwise
    fail every case in turn with ModuleNotFoundError)."""
    import importlib.util

    seen: set[str] = set()
    for case in cases:
        wtype = (case.get("workload") or {}).get("type")
        if wtype not in EXTRAS or wtype in seen:
            continue
        seen.add(wtype)
        extra, modules = EXTRAS[wtype]
        for module in modules:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                return (
                    f"the suite's {wtype} workloads need the {extra!r} extra, which is not "
                    f"installed here (no module {module}): pip install 'energy-harness[{extra}]'"
                )
    return None
