"""Where a case executes: one small interface, one module per kind, found by name.

A launcher is given the pending cases of a run and yields each case's result as it finishes
(the result is already in ``cases/<case_id>/result.json`` when it is yielded). The runner
(``harness/runner.py``) orchestrates the run around it: cases to do, resume, lock, manifest,
progress; it never imports a launcher's module itself, so Ray stays out of every run that does
not ask for it (``launchers/ray.py`` is the only module that imports Ray).

Kinds: ``process`` (a fresh worker process per case on this machine) and ``ray`` (a Ray task per
case on a cluster node). A new kind is one new module with a ``Launcher`` class and an entry here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from harness import store
from harness.workloads import loads_checkpoint_of, makes_model

#: launcher kind -> "module:class"
REGISTRY = {
    "process": "harness.launchers.process:Launcher",
    "ray": "harness.launchers.ray:Launcher",
}
INTERRUPTED = "interrupted"


@dataclass
class Job:
    """What a launcher needs to know about the run it executes cases for."""

    run_dir: Path
    run_id: str
    #: the suite's measurement block (idle_s, sensors, sample_hz, tdp_w, ...)
    measurement: dict
    #: where command cases run (the folder the run was started from)
    workdir: Path | None = None
    #: called when a case starts (on a cluster: when its task says it started on a node)
    on_start: Callable[[dict], object] | None = None
    #: one line of progress that is not a case's result (an idle baseline being measured)
    message: Callable[[str], object] | None = None

    def started(self, case: dict) -> None:
        if self.on_start is not None:
            self.on_start(case)

    def say(self, line: str) -> None:
        if self.message is not None:
            self.message(line)


class Launcher(Protocol):
    """Executes cases somewhere; ``launch`` yields ``(case, result)`` as each case finishes."""

    def preflight(self, cases: list[dict]) -> None:
        """What can be refused before a run folder exists (a missing package, a bad address)."""

    def launch(self, cases: list[dict], job: Job) -> Iterator[tuple[dict, dict]]:
        """Execute ``cases``; results are written to the run folder before they are yielded."""


def get_launcher(kind: str, **options) -> Launcher:
    """The launcher of ``kind`` (``process`` or ``ray``), built with ``options``."""
    module_name, _, cls_name = REGISTRY[kind].partition(":")
    return getattr(importlib.import_module(module_name), cls_name)(**options)


def failed_result(case: dict, error: str, **extra) -> dict:
    """The result.json written for a case whose worker wrote none (killed, timed out, lost)."""
    return {
        "schema_version": store.SCHEMA_VERSION,
        "case_id": case.get("case_id"),
        "case": case.get("case"),
        "status": store.FAILED,
        "error": error,
        "stop_reason": None,
        "finished": store.utc_now(),
        "repetitions": [],
        "aggregates": {"n": 0},
        "summary": {},
        "written_by": "runner",
        **extra,
    }


def write_failed(run_dir: Path, case: dict, reason: str, node: str | None = None, **extra) -> dict:
    """Record a case that ended without a result of its own (killed, lost, not run): its folder
    gets case.json and a failed result.json, and loses what an earlier try left there."""
    cdir = store.case_dir(run_dir, case["case_id"])
    cdir.mkdir(parents=True, exist_ok=True)
    for stale in (store.RESULT_FILE, store.TRACE_FILE, "output.log", "worker.log"):
        (cdir / stale).unlink(missing_ok=True)
    store.write_json(cdir / store.CASE_FILE, case)
    result = failed_result(case, reason, **({"node": node} if node else {}), **extra)
    store.write_json(cdir / store.RESULT_FILE, result)
    return result


def dependencies(cases: list[dict]) -> dict[str, str]:
    """case id -> the case whose checkpoint it loads (the last case before it that made it).

    A builtin model's infer and accuracy cases load what the train (or distill, finetune) case
    before them saved, and a distill or finetune case loads its teacher's or source's: locally
    they run after it, on a cluster they are given its checkpoint. Either way, when that case
    fails they are not run (``not_run``): measuring untrained weights would publish figures of a
    model nobody asked for.
    """
    last_maker: dict[str, str] = {}
    deps: dict[str, str] = {}
    for case in cases:
        model = case.get("model") or {}
        loads = loads_checkpoint_of(case)
        if loads is not None and loads in last_maker:
            deps[case["case_id"]] = last_maker[loads]
        if makes_model((case.get("workload") or {}).get("type")):
            last_maker[model.get("name")] = case["case_id"]
    return deps


def not_run(train_case: str, reason: str) -> str:
    """Why a case that loads a trained model was not run: its train case failed."""
    return f"not run: its train case {train_case} failed ({reason})"


def measure_idle(measurement: dict, seconds: float) -> dict:
    """Idle watts per domain (and ``total``) over ``seconds``, with the suite's sensors."""
    from harness.meter import Meter

    m = measurement
    with Meter(sensors=m["sensors"], sample_hz=m.get("sample_hz"), tdp_w=m.get("tdp_w")) as meter:
        watts = meter.idle(seconds)
        return {
            "watts": watts,
            "seconds": seconds,
            "method": meter.method,
            "measured_at": store.utc_now(),
        }


def read_idle(run_dir: Path) -> dict:
    """idle.json of a run folder, or nothing."""
    try:
        data = store.read_json(Path(run_dir) / store.IDLE)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
