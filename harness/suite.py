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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.errors import HarnessError

DTYPES = ("float32", "bfloat16", "float16")
QUANTIZATIONS = ("int8-dynamic",)
SOURCE_PREFIXES = ("builtin:", "path:", "hf:")
MODEL_WORKLOADS = ("train", "infer", "accuracy", "serve")
#: GGUF types a llamacpp variant may ask for (harness.models.gguf.GGUF_TYPES)
GGUF_QUANTIZATIONS = ("gguf-f16", "gguf-q8_0", "gguf-q5_0", "gguf-q4_0", "gguf-q4_k_m")
#: engines whose model runs behind a server (the serve workload needs one)
SERVER_ENGINES = ("llamacpp", "vllm", "openai")
#: short names for dtypes in readable case names are the variant names; these are for docs
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?(@[\w./-]+)?$")
_DEVICE = re.compile(r"^(cpu|cuda:\d+)$")
_NAME = re.compile(r"^[A-Za-z0-9][\w.+-]*$")


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
            f"{value!r} is not a usable name (letters, digits, '.', '_', '-', '+'; no '/' or spaces)"
        )
    return value


class Carbon(_Strict):
    country: str | None = None
    region: str | None = None
    intensity_g_per_kwh: Annotated[float, Field(ge=0)] | None = None
    pue: Annotated[float, Field(ge=1.0)] = 1.0

    @model_validator(mode="after")
    def _one_source(self) -> Carbon:
        if (self.country is None) == (self.intensity_g_per_kwh is None):
            raise ValueError("give either country (ISO 3166 alpha-3) or intensity_g_per_kwh")
        if self.region is not None and self.country is None:
            raise ValueError("region needs a country")
        if self.country is not None:
            from harness.carbon import intensity

            try:
                intensity(self.model_dump())
            except HarnessError as e:  # unknown country or region
                raise ValueError(str(e).removeprefix("carbon.").removeprefix("carbon: ")) from None
        return self


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
                    f"unknown source {unknown[0]!r} (known: {', '.join(sorted(REGISTRY))})"
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


class Hardware(_Strict):
    name: str
    device: str = "cpu"
    threads: Annotated[int, Field(ge=1)] | None = None
    memory_limit_mb: Annotated[float, Field(gt=0)] | None = None
    edge: bool = False
    #: Ray resources a node must offer to run this profile's cases (harness run --ray)
    resources: dict[str, float] | None = None

    _name = field_validator("name")(_check_name)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError(f"{value!r} is not a device (cpu or cuda:N)")
        return value


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
            raise ValueError(f"{value!r} has no known source prefix ({', '.join(SOURCE_PREFIXES)})")
        rest = value[len(prefix) :]
        if not rest.strip():
            raise ValueError(f"{value!r} names nothing after {prefix}")
        if prefix == "hf:" and not _HF_ID.match(rest):
            raise ValueError(f"{value!r} is not a Hugging Face id (hf:org/name[@revision])")
        if prefix == "builtin:":
            known = builtin_model_names()
            if known is not None and rest not in known:
                raise ValueError(f"unknown builtin model {rest!r} (known: {', '.join(known)})")
        return value


class Variant(_Strict):
    name: str
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    quantization: (
        Literal["int8-dynamic", "gguf-f16", "gguf-q8_0", "gguf-q5_0", "gguf-q4_0", "gguf-q4_k_m"]
        | None
    ) = None
    #: how the model runs (harness.engines.REGISTRY); None: transformers, in-process
    engine: str | None = None
    #: openai engine: the command that starts the server ({port} is replaced by a free port)
    command: list[str] | None = None
    #: openai engine: the health URL of the started server, or of the one already at ``url``
    health_url: str | None = None
    #: openai engine: an OpenAI-compatible server already running (only this machine is measured)
    url: str | None = None

    _name = field_validator("name")(_check_name)

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
        if engine in ("llamacpp", "vllm") and self.quantization == "int8-dynamic":
            raise ValueError(f"quantization: int8-dynamic is in-process only, not engine {engine}")
        openai_keys = [k for k in ("command", "health_url", "url") if getattr(self, k) is not None]
        if engine != "openai" and openai_keys:
            raise ValueError(f"{openai_keys[0]}: only engine openai takes it")
        if engine == "openai" and (self.command is None) == (self.url is None):
            raise ValueError("engine openai needs either command (with health_url) or url")
        if engine == "openai" and self.command is not None and not self.health_url:
            raise ValueError("health_url: engine openai with a command needs its health URL")
        return self


class TrainWorkload(_Strict):
    type: Literal["train"]
    steps: Annotated[int, Field(ge=1)]
    batch_size: Annotated[int, Field(ge=1)]
    seq_len: Annotated[int, Field(ge=1)]
    lr: Annotated[float, Field(gt=0)] | None = None
    text_file: str | None = None


class InferWorkload(_Strict):
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


class AccuracyWorkload(_Strict):
    type: Literal["accuracy"]
    tasks: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    limit: Annotated[int, Field(ge=1)] | None = None
    num_fewshot: Annotated[int, Field(ge=0)] = 0

    @field_validator("tasks")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
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


class ServeWorkload(_Strict):
    type: Literal["serve"]
    concurrency: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]
    requests: Annotated[int, Field(ge=1)]
    prompt_tokens: Annotated[int, Field(ge=1)]
    new_tokens: Annotated[int, Field(ge=2)]
    #: the server's port (None: a free one); a port in use fails the case in one line
    port: Annotated[int, Field(ge=1, le=65535)] | None = None

    @field_validator("concurrency")
    @classmethod
    def _unique(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("a concurrency is listed twice")
        return value

    @model_validator(mode="after")
    def _enough_requests(self) -> ServeWorkload:
        if self.requests < max(self.concurrency):
            raise ValueError(
                f"requests: {self.requests} cannot keep {max(self.concurrency)} in flight "
                "(requests must be at least the largest concurrency)"
            )
        return self


Workload = Annotated[
    TrainWorkload | InferWorkload | AccuracyWorkload | ServeWorkload | CommandWorkload,
    Field(discriminator="type"),
]


class Report(_Strict):
    #: queries served over a deployment's life, to weigh training energy against inference
    queries_lifetime: Annotated[int, Field(ge=0)] = 1_000_000


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

    _name = field_validator("name")(_check_name)

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
        only_train = all(w.type == "train" for w in self.workloads)
        if only_train and all(v.quantization for v in self.variants):
            raise ValueError(
                "variants: every variant is quantized and train runs only unquantized variants, "
                "so the suite has no cases"
            )
        return self


def _unique_names(field: str, items: list, what: str = "name") -> None:
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if item.name in seen:
            raise ValueError(
                f"{field}.{i}.name: duplicate {what} {item.name!r} (also {field}.{seen[item.name]})"
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
    elif kind in ("int_parsing", "int_type", "int_from_float"):
        what = f"must be a whole number, not {given!r}"
    elif kind in ("float_parsing", "float_type"):
        what = f"must be a number, not {given!r}"
    elif kind in ("bool_parsing", "bool_type"):
        what = f"must be true or false, not {given!r}"
    elif kind in ("string_type",):
        what = f"must be a string, not {given!r}"
    elif kind in ("list_type",):
        what = f"must be a list, not {given!r}"
    elif kind in ("dict_type", "model_type", "model_attributes_type"):
        what = f"must be a mapping, not {given!r}"
    elif kind == "literal_error":
        what = f"must be {ctx.get('expected')}, not {given!r}"
    elif kind == "too_short":
        what = "must not be empty"
    elif kind == "union_tag_invalid":
        what = f"unknown workload type {ctx.get('tag')!r} (known: train, infer, accuracy, serve, command)"
    elif kind == "union_tag_not_found":
        what = "needs a type (train, infer, accuracy, serve or command)"
    elif kind == "value_error":
        what = str(ctx.get("error") or err.get("msg", "")).removeprefix("Value error, ")
    else:
        what = err.get("msg", kind)
    what = what.splitlines()[0] if what else kind
    # model validators speak for the whole block; their message may start with its own path
    m = re.match(r"^([\w.]+): (.*)$", what)
    if m and kind == "value_error" and re.match(r"^[a-z_]+(\.\w+)*$", m.group(1)):
        path = f"{path}.{m.group(1)}" if path else m.group(1)
        what = m.group(2)
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
        lines = [_format_error(err) for err in e.errors(include_url=False)]
        # a union of "auto" | list reports both branches; keep only the most specific line
        raise SuiteError(_dedupe(lines), source) from None
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
        return [(spec, "train", f"train-s{w.steps}-b{w.batch_size}-l{w.seq_len}")]
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
        return [
            (
                {
                    "type": "serve",
                    "concurrency": c,
                    "requests": w.requests,
                    "prompt_tokens": w.prompt_tokens,
                    "new_tokens": w.new_tokens,
                    "port": w.port,
                },
                f"serve-c{c}",
                f"serve-c{c}-p{w.prompt_tokens}-n{w.new_tokens}-r{w.requests}",
            )
            for c in w.concurrency
        ]
    spec = {"type": "command", "name": w.name, "run": list(w.run), "env": dict(w.env), "cwd": w.cwd}
    return [(spec, w.name, w.name)]


def _runs(workload_type: str, variant: Variant) -> bool:
    """Whether a workload of this type is run for this variant (the matrix leaves the rest out).

    train runs unquantized in-process variants only; infer runs in-process (the transformers
    engine); serve needs a server engine; accuracy runs on every engine.
    """
    served = (variant.engine or "transformers") in SERVER_ENGINES
    if workload_type == "train":
        return not variant.quantization and not served
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
    from harness.store import sanitise

    # hashed as written to disk (secrets masked), so a resumed run finds the same ids
    settings = sanitise({k: case.get(k) for k in ("hardware", "model", "variant", "workload")})
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
    # a short readable name when it is unique, else the long one
    short_counts: dict[str, int] = {}
    for w, items in shapes:
        for _, short, _ in items:
            if w.type != "command":
                short_counts[short] = short_counts.get(short, 0) + 1
    cases: list[dict] = []
    for hw in suite.hardware:
        hw_dict = hw.model_dump()
        for model in suite.models:
            first = [(w, i) for w, i in shapes if w.type == "train"]
            then = [(w, i) for w, i in shapes if w.type in ("infer", "accuracy", "serve")]
            for group in (first, then):
                for variant in suite.variants:
                    for w, items in group:
                        if not _runs(w.type, variant):
                            continue
                        _check_engine_fits(variant, hw, model)
                        for spec, short, long in items:
                            shape = short if short_counts[short] == 1 else long
                            cases.append(
                                {
                                    "case": f"{model.name}/{variant.name}/{hw.name}/{shape}",
                                    **common,
                                    "hardware": hw_dict,
                                    "model": model.model_dump(),
                                    "variant": variant.model_dump(),
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
    return out


def select(cases: list[dict], pattern: str | None) -> list[dict]:
    """The cases whose readable name matches a glob (``--only``); all when ``pattern`` is None."""
    if not pattern:
        return cases
    return [c for c in cases if fnmatch.fnmatchcase(c["case"], pattern)]
