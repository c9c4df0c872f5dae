"""The suite's common blocks: carbon, measurement, hardware profiles, models, variants, report.

Each is a strict pydantic model (harness/schema.py); the suite (harness/suite.py) puts them
together with the workloads' own blocks, and a worker reads its case's measurement block and
hardware profile back through them (``case_settings``, ``case_hardware``), so a default is
written once, here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from harness.errors import HarnessError
from harness.schema import Strict as _Strict
from harness.schema import check_name as _check_name
from harness.schema import excerpt, format_error

DTYPES = ("float32", "bfloat16", "float16")
QUANTIZATIONS = ("int8-dynamic", "int8-weight", "int4-weight")
#: weight-only quantisations done by torchao (an optional package, see variant_refusal)
TORCHAO_QUANTIZATIONS = ("int8-weight", "int4-weight")
SOURCE_PREFIXES = ("builtin:", "path:", "hf:")
#: short names for dtypes in readable case names are the variant names; these are for docs
# \Z, not $: "$" also matches before a final newline, and a name must not end in one
_HF_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?(@[\w./-]+)?\Z")
_DEVICE = re.compile(r"(cpu|cuda:\d+)\Z")


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
    #: threads of the physical host this machine (a VM, a slice) runs on: embodied emissions are
    #: charged by vCPUs ÷ host_threads (on a VM without it or cloud_instance: assumed, warned)
    host_threads: Annotated[int, Field(ge=1)] | None = None
    #: a cloud instance type boaviztapi knows, provider/type (aws/m5.large): its embodied
    #: emissions are boaviztapi's for that instance
    cloud_instance: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Carbon:
        given = [self.country, self.intensity_g_per_kwh, self.intensity_file]
        if sum(v is not None for v in given) != 1:
            raise ValueError(
                "give one of country (ISO 3166 alpha-3), intensity_g_per_kwh or intensity_file"
            )
        if self.region is not None and self.country is None:
            raise ValueError("region needs a country")
        if self.host_threads is not None and self.cloud_instance is not None:
            raise ValueError("give host_threads or cloud_instance, not both")
        if self.cloud_instance is not None:
            from harness.carbon import embodied

            try:
                embodied.check_cloud_instance(self.cloud_instance)
            except HarnessError as e:
                raise ValueError(str(e).removeprefix("carbon.")) from None
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


class MeasurementSettings(_Strict):
    """A suite's ``measurement:`` block (the meter's result is ``harness.meter.Measurement``)."""

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
    def _repeats(self) -> MeasurementSettings:
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


def _engine_quantizations() -> tuple[str, ...]:
    """Every quantisation some registered engine runs, in registry order."""
    from harness.engines import engine_classes

    found: list[str] = []
    for cls in engine_classes().values():
        found += [q for q in cls.quantizations if q not in found]
    return tuple(found)


class Variant(_Strict):
    name: str
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    #: one of the quantisations some engine runs (each engine lists its own)
    quantization: Literal[_engine_quantizations()] | None = None  # type: ignore[valid-type]
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
        from harness.engines import variant_problem

        problem = variant_problem(self)
        if problem:
            raise ValueError(problem)
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
        from harness.engines import engine_keys

        for key in ("engine", *engine_keys()):  # likewise for engine keys
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


#: a workload block of the suite: one of the registered workloads' settings models, by type
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


def case_settings(case: dict) -> MeasurementSettings:
    """A case's measurement block as the suite's model: its defaults are the suite's."""
    return MeasurementSettings.model_validate(case.get("measurement") or {})


def case_hardware(case: dict) -> Hardware:
    """A case's hardware profile as the suite's model; one that is not one is a HarnessError
    of one line naming the key."""
    try:
        return Hardware.model_validate(case.get("hardware") or {})
    except ValidationError as e:
        err = e.errors(include_url=False, include_input=True)[0]
        raise HarnessError(f"hardware.{format_error(err, '', (), '')}") from None
