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
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from harness.errors import HarnessError
from harness.schema import Strict as _Strict
from harness.schema import check_name as _check_name
from harness.schema import check_selection, dedupe, excerpt, format_error
from harness.settings import (  # noqa: F401 - the suite's blocks, importable from here as before
    DTYPES,
    KNOB_FIELDS,
    QUANTIZATIONS,
    SOURCE_PREFIXES,
    TORCHAO_QUANTIZATIONS,
    Carbon,
    Checks,
    Estimate,
    Hardware,
    KnobCommand,
    MeasurementSettings,
    Model,
    Report,
    Variant,
    builtin_model_names,
    variant_refusal,
)
from harness.workloads import REGISTRY as WORKLOADS
from harness.workloads import makes_model, model_makers, workload_class

#: a suite shows at most this many problem lines
MAX_PROBLEMS = 20


class SuiteError(HarnessError):
    """An invalid suite: ``problems`` holds one line per problem, each naming its field."""

    def __init__(self, problems: list[str], source: str = "suite"):
        self.problems = problems
        self.source = source
        first = problems[0] if problems else "invalid"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{source}: {first}{more}")


Workload = Annotated[
    Union[tuple(filter(None, (workload_class(kind).settings for kind in WORKLOADS)))],  # noqa: UP007
    Field(discriminator="type"),
]


class Suite(_Strict):
    name: str
    description: str = ""
    carbon: Carbon
    measurement: MeasurementSettings = Field(default_factory=MeasurementSettings)
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
        commands = [w for w in self.workloads if not workload_class(w.type).uses_model]
        _unique_names("workloads", commands, what="command name")
        if not self.workloads:
            raise ValueError("workloads: no workloads, so the suite has no cases")
        uses_models = any(workload_class(w.type).uses_model for w in self.workloads)
        if uses_models and not self.models:
            raise ValueError("models: train/infer/accuracy/serve workloads need at least one model")
        if uses_models and not self.variants:
            raise ValueError(
                "variants: train/infer/accuracy/serve workloads need at least one variant"
            )
        only_train = all(makes_model(w.type) for w in self.workloads)
        if only_train and all(v.derived for v in self.variants):
            raise ValueError(
                "variants: every variant is quantized or pruned and training runs only the "
                "others, so the suite has no cases"
            )
        model_names = [m.name for m in self.models]
        variant_names = [v.name for v in self.variants]
        for i, w in enumerate(self.workloads):
            if not workload_class(w.type).uses_model:
                continue
            check_selection(f"workloads.{i}.models", w.models, model_names)
            check_selection(f"workloads.{i}.variants", w.variants, variant_names)
            w.check(i, self.models)
        for hw in self.hardware:
            for v in self.variants:
                why = variant_refusal(v, hw.device)
                if why and _variant_used(self, v.name):
                    raise ValueError(f"variants.{v.name}: cannot run on {hw.name}: {why}")
        return self


def _variant_used(suite: Suite, variant: str) -> bool:
    """Whether some infer/accuracy workload runs ``variant`` (training refuses derived ones)."""
    return any(
        _uses_made_model(w.type) and (w.variants is None or variant in w.variants)
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


# ---------------------------------------------------------------------------------- loading
def _format_error(err: dict) -> str:
    model_kinds = [k for k in WORKLOADS if workload_class(k).uses_model]
    others = " or ".join(k for k in WORKLOADS if k not in model_kinds)
    return format_error(err, "workloads", WORKLOADS, f"{', '.join(model_kinds)} or {others}")


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
        lines = dedupe([_format_error(err) for err in errors[: 4 * MAX_PROBLEMS]])
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
def _runs(workload_type: str, variant: Variant) -> bool:
    """Whether a workload of this type is run for this variant (the matrix leaves the rest out).

    A workload that makes a model never runs a derived (quantised, pruned) variant; each runs on
    the engines it declares (``engines``: in-process, served, any).
    """
    from harness.engines import serves

    cls = workload_class(workload_type)
    if cls.makes_model and variant.derived:
        return False
    if cls.engines == "any":
        return True
    return serves(variant) == (cls.engines == "served")


def _uses_made_model(workload_type: str) -> bool:
    """A model workload that runs a model rather than making one (infer, accuracy, serve)."""
    cls = workload_class(workload_type)
    return cls.uses_model and not cls.makes_model


def _check_engine_fits(variant: Variant, hw: Hardware, model: Model) -> None:
    """Refuse a variant that its engine cannot run on this hardware or model, with the reason."""
    from harness.engines import engine_class, engine_name

    problem = engine_class(engine_name({"engine": variant.engine})).fit_problem(
        hw.device, model, variant
    )
    if problem:
        raise HarnessError(f"variants.{variant.name}: {problem}")


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
    shapes = [(w, w.shapes()) for w in suite.workloads]
    # a short readable name when no two workloads give it to the same model and variant, else
    # the long one
    uses: dict[str, dict[tuple[str, str], int]] = {}
    for w, items in shapes:
        if not workload_class(w.type).uses_model:
            continue
        for _, short, _ in items:
            seen = uses.setdefault(short, {})
            for m in suite.models:
                for v in suite.variants:
                    if _applies(w, m.name, v):
                        seen[(m.name, v.name)] = seen.get((m.name, v.name), 0) + 1
    short_ok = {short: all(n == 1 for n in seen.values()) for short, seen in uses.items()}
    cases: list[dict] = []
    made_by: list[BaseModel] = []  # each case's workload block
    by_name = {m.name: m for m in suite.models}
    models = models_in_making_order(suite)
    for hw in suite.hardware:
        hw_dict = hw.case_dict()
        for model in models:
            first = [(w, i) for w, i in shapes if makes_model(w.type)]
            then = [(w, i) for w, i in shapes if _uses_made_model(w.type)]
            for group in (first, then):
                for variant in suite.variants:
                    for w, items in group:
                        if not _applies(w, model.name, variant) or not _runs(w.type, variant):
                            continue
                        _check_engine_fits(variant, hw, model)
                        for spec, short, long in items:
                            spec = w.with_source(spec, by_name, model)
                            shape = short if short_ok[short] else long
                            made_by.append(w)
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
            if not workload_class(w.type).uses_model:
                for spec, short, _ in items:
                    made_by.append(w)
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
    _sources_are_made(out, made_by)
    return out


def _sources_are_made(cases: list[dict], blocks: list[BaseModel]) -> None:
    """A distill case's teacher (a finetune case's source model) is made by a case of the run."""
    made: set[tuple[str, str]] = set()
    makers = model_makers()
    makers_text = f"{', '.join(makers[:-1])} or {makers[-1]}" if len(makers) > 1 else makers[0]
    for c, w in zip(cases, blocks, strict=True):
        source = w.source_model()
        if source is not None and (c["hardware"]["name"], source) not in made:
            raise HarnessError(
                f"workloads: {c['case']} starts from {source}, which no {makers_text} "
                f"case of the suite makes on {c['hardware']['name']} ({w.source_field} needs one)"
            )
        if makes_model(w.type):
            made.add((c["hardware"]["name"], c["model"]["name"]))


def _applies(w: BaseModel, model: str, variant: Variant) -> bool:
    """Whether a model workload runs for this model and variant (its selections, its kind)."""
    if w.models is not None and model not in w.models:
        return False
    if w.variants is not None and variant.name not in w.variants:
        return False
    if makes_model(w.type) and variant.derived:
        return False  # a quantised or pruned variant is made from a trained model, not trained
    # a model does not learn from itself; a fine-tuned model gets its own name
    return w.source_model() != model


def models_in_making_order(suite: Suite) -> list[Model]:
    """The suite's models, each after the models its distill/finetune cases start from.

    Without distill or finetune workloads this is the suite's own order.
    """
    after: dict[str, set[str]] = {m.name: set() for m in suite.models}
    for w in suite.workloads:
        source = w.source_model()
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
        if makes_model(kind):
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
        if wtype not in WORKLOADS or wtype in seen:
            continue
        seen.add(wtype)
        if workload_class(wtype).settings.extra is None:
            continue
        extra, modules = workload_class(wtype).settings.extra
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
