"""What every suite block is built from: strict pydantic models, bounded value excerpts, names.

The suite (harness/suite.py) and each workload's own settings model (``settings`` beside the
workload class in harness/workloads/) build on these, so a workload module declares its keys
without importing the suite.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

#: a problem line shows at most this much of a value
EXCERPT_CHARS = 60
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
