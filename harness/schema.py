"""What every suite block is built from: strict pydantic models, bounded value excerpts, names.

The suite (harness/suite.py) and each workload's own settings model (``settings`` beside the
workload class in harness/workloads/) build on these, so a workload module declares its keys
without importing the suite. A workload's case model (``case``, a ``CaseShape``) types one case's
workload dict, as its worker reads it.
"""

from __future__ import annotations

import re
import types
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo

from harness.errors import HarnessError

#: a problem line shows at most this much of a value, and is at most LINE_CHARS long
EXCERPT_CHARS = 60
LINE_CHARS = 240
NAME = re.compile(r"[A-Za-z0-9][\w.+-]*\Z", re.ASCII)
TASK = re.compile(r"[A-Za-z0-9][\w.:+-]*\Z", re.ASCII)


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


class Strict(BaseModel):
    # unknown keys are errors everywhere: a typo must not silently fall back to a default
    model_config = ConfigDict(extra="forbid", frozen=False)


def check_name(value: str) -> str:
    if not NAME.match(value):
        raise ValueError(
            f"{excerpt(value)} is not a usable name (letters, digits, '.', '_', '-', '+'; "
            "no '/', spaces or line breaks)"
        )
    return value


def check_selection(field: str, chosen: list[str] | None, known: list[str]) -> None:
    for name in chosen or []:
        if name not in known:
            raise ValueError(f"{field}: unknown name {name!r} (known: {', '.join(known)})")


def check_task(value: str | None) -> str | None:
    if value is not None:
        from harness.models.corpus import TASKS

        if value not in TASKS:
            raise ValueError(f"unknown task {value!r} (known: {', '.join(TASKS)})")
    return value


class WorkloadSettings(Strict):
    """A workload's block of the suite: its keys, and how it expands into case shapes."""

    #: the pip extra its cases need and the modules that extra brings, or None
    extra: ClassVar[tuple[str, tuple[str, ...]] | None] = None
    #: the key naming the model it starts from (distill: teacher, finetune: from), if any
    source_field: ClassVar[str | None] = None

    def shapes(self) -> list[tuple[dict, str, str]]:
        """Each case shape: (the case's workload dict, its short name, its long name)."""
        raise NotImplementedError

    def check(self, i: int, models: list[Any]) -> None:
        """Checks against the suite's models (ValueError naming ``workloads.{i}.<key>``)."""

    def source_model(self) -> str | None:
        """The suite model whose checkpoint of this run it starts from, or None."""
        return None

    def with_source(self, spec: dict, by_name: dict[str, Any], model: Any) -> dict:
        """A shape with the model entry it starts from (a distill's teacher...)."""
        return spec


class CaseShape(Strict):
    """One case's workload dict, typed: what its workload's ``WorkloadSettings.shapes()`` writes
    and what the suite's expansion adds (``with_source``), read back by the case's worker.

    A key the suite leaves out when unset (so that the ids of cases without it stay as they
    were) has its default here, once; the suite block's field says so. Values are taken as written
    (strict: ``"8"`` is not a number), since a case is JSON the suite wrote.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    type: str

    @classmethod
    def of(cls, spec: Any) -> CaseShape:
        """``spec`` as this model, or a HarnessError of one line naming the workload and key."""
        try:
            return cls.model_validate(spec)
        except ValidationError as e:
            errors = e.errors(include_url=False, include_input=True)
            kind = spec.get("type") if isinstance(spec, dict) else None
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            problem = cls.problem(errors[0])
            raise HarnessError(f"{kind or cls.kind()} workload: {problem}{more}") from None

    @classmethod
    def kind(cls) -> str:
        """The workload type this model is the case of (its ``type`` literal)."""
        args = get_args(cls.model_fields["type"].annotation)
        return str(args[0]) if args else "?"

    @classmethod
    def problem(cls, err: dict) -> str:
        """One pydantic error as ``key must be <what the field takes>, not <value>``."""
        fields = {f.alias or name: f for name, f in cls.model_fields.items()}
        loc = [str(p) for p in err.get("loc", ())]
        kind = err.get("type", "")
        if kind == "extra_forbidden" and len(loc) == 1:
            return f"unknown key {excerpt(loc[0])} (known: {', '.join(fields)})"
        field = fields.get(loc[0]) if len(loc) == 1 else None
        if field is None:  # inside a nested value (teacher_model.source), or the whole dict
            return format_error(err, "", (), "")
        key, given = loc[0], excerpt(err.get("input"))
        if kind == "missing":
            return f"{key} must be {wanted(field)}; the case gives none"
        if kind == "value_error":  # a field validator's own words
            what = str((err.get("ctx") or {}).get("error") or err.get("msg", ""))
            what = what.removeprefix("Value error, ")
            return f"{key} {what}, not {given}" if what.startswith("must ") else f"{key}: {what}"
        return f"{key} must be {wanted(field)}, not {given}"


_BOUNDS = (
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Ge, "ge", ">="),
    (annotated_types.Lt, "lt", "<"),
    (annotated_types.Le, "le", "<="),
)


def wanted(field: FieldInfo) -> str:
    """What a field takes, in words (``a positive integer``, ``an integer >= 0 or null``)."""
    return _words(field.annotation, list(field.metadata))


def _words(annotation: Any, metadata: list) -> str:
    if get_origin(annotation) is Annotated:
        annotation, *extra = get_args(annotation)
        metadata = metadata + extra
    if get_origin(annotation) in (Union, types.UnionType):
        members = get_args(annotation)
        text = " or ".join(_words(m, metadata) for m in members if m is not type(None))
        return f"{text} or null" if type(None) in members else text
    bounds = []
    for m in metadata:
        bounds += m.metadata if isinstance(m, FieldInfo) else [m]
    if annotation in (int, float):
        noun = "integer" if annotation is int else "number"
        limits = [(op, getattr(b, attr)) for b in bounds for kind, attr, op in _BOUNDS
                  if isinstance(b, kind)]  # fmt: skip
        if limits == [(">", 0)]:
            return f"a positive {noun}"
        text = " and ".join(f"{op} {_num(v)}" for op, v in limits)
        article = "an" if noun == "integer" else "a"
        return f"{article} {noun} {text}" if text else f"{article} {noun}"
    if annotation is bool:
        return "true or false"
    non_empty = any(isinstance(b, annotated_types.MinLen) and b.min_length > 0 for b in bounds)
    if annotation is str:
        return "a non-empty string" if non_empty else "a string"
    if get_origin(annotation) is Literal:
        return " or ".join(repr(v) for v in get_args(annotation))
    if get_origin(annotation) is list:
        return "a non-empty list" if non_empty else "a list"
    if (
        get_origin(annotation) is dict
        or isinstance(annotation, type)
        and issubclass(annotation, BaseModel)
    ):
        return "a mapping"
    return getattr(annotation, "__name__", str(annotation))


class ModelWorkloadSettings(WorkloadSettings):
    #: the models and variants of the suite this workload runs (all when absent)
    models: Annotated[list[str], Field(min_length=1)] | None = None
    variants: Annotated[list[str], Field(min_length=1)] | None = None


# ------------------------------------------------------------------ pydantic errors, one line each
def format_error(err: dict, union_field: str, tags: Sequence[str], tags_text: str) -> str:
    """One line for one pydantic error: ``path: what`` (``union_field``: the list whose items are
    a union discriminated by ``type``, one of ``tags``, which ``tags_text`` lists in words)."""
    loc = list(err.get("loc", ()))
    # the discriminated union puts the tag in the path (workloads.1.infer.batch_sizes): drop it
    if len(loc) >= 3 and loc[0] == union_field and loc[2] in tags:
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
        what = f"unknown workload type {excerpt(ctx.get('tag'))} (known: {', '.join(tags)})"
    elif kind == "union_tag_not_found":
        what = f"needs a type ({tags_text})"
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


def dedupe(lines: list[str]) -> list[str]:
    out: list[str] = []
    for line in lines:
        if line not in out:
            out.append(line)
    return out
