"""What every suite block is built from: strict pydantic models, bounded value excerpts, names.

The suite (harness/suite.py) and each workload's own settings model (``settings`` beside the
workload class in harness/workloads/) build on these, so a workload module declares its keys
without importing the suite.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

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
