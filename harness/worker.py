"""One case in its own process: ``python -m harness.worker CASE_DIR --run-dir RUN --run-id ID``.

The runner starts a fresh worker per case, in its own process group, so that a crash, a leak or a
hang of one case cannot touch the others or the run. The worker reads ``case.json``, measures the
workload (setup, unmeasured warmup, repetitions until the stopping rule), and writes
``trace.parquet`` and then ``result.json`` — last, so a result file means the case is complete.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import HarnessError
from harness.stopping import repeat

if TYPE_CHECKING:
    from harness.settings import Hardware

#: the runner sets this so the worker can tell when the runner died before it noticed
PARENT_ENV = "HARNESS_PARENT_PID"
#: comma-separated modules imported before the workload is created (they may register workloads)
PLUGINS_ENV = "HARNESS_PLUGINS"


def model_imports() -> tuple[str, ...]:
    """What a model case imports (a spawned worker pays for it, seconds; a forked one finds it
    done): the model stack, then the default engine's module and every workload that may run a model
    in this process (each says so: ``harness.workloads.in_process``), read from the registries."""
    from harness.engines import DEFAULT_ENGINE
    from harness.engines import REGISTRY as ENGINES
    from harness.workloads import REGISTRY as WORKLOADS
    from harness.workloads import in_process

    libraries = (
        "torch",
        "transformers",
        "transformers.models.llama.modeling_llama",
        "lm_eval.evaluator",
        "lm_eval.models.huggingface",
        "lm_eval.tasks",
        "harness.meter",
        "harness.models",
        "harness.records",
    )
    workloads = [WORKLOADS[k].partition(":")[0] for k in WORKLOADS if in_process(k)]
    return (*libraries, ENGINES[DEFAULT_ENGINE].partition(":")[0], *dict.fromkeys(workloads))


#: what every worker imports
BASE_IMPORTS = ("harness.worker", "harness.store", "harness.carbon", "harness.stats")

AGGREGATED = (
    "duration_s",
    "energy_j",
    "energy_dynamic_j",
    "avg_power_w",
    "co2e_g",
    "energy_per_token_j",
    "energy_per_query_j",
    "tokens_per_s",
    "tokens_per_j",
    "ttft_s",
    "tpot_s",
    "accuracy",
    # serve
    "energy_per_request_j",
    "requests_per_s",
    "ttft_p90_s",
    "itl_p50_s",
)


def error_line(exc: BaseException) -> str:
    """One line that says what went wrong: the message of a HarnessError, else type and message."""
    text = str(exc).strip()
    if not isinstance(exc, HarnessError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    first = text.splitlines()[0] if text else type(exc).__name__
    return first[:500]


def aggregates(records: list[dict]) -> dict:
    """``n``, and per metric the median and the 95% interval of the mean (``_ci_low/_ci_high``).

    The interval is the report's own (``harness.stats.describe``): one implementation,
    so result.json and summary.csv never disagree on what a repetition set says.
    """
    from harness.stats import describe

    out: dict = {"n": len(records)}
    for col in AGGREGATED:
        values = [r.get(col) for r in records]
        values = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        if not values:
            continue
        stats = describe(values)
        out[col] = stats["median"]
        if len(values) >= 2:
            out[f"{col}_ci_low"], out[f"{col}_ci_high"] = stats["ci_low"], stats["ci_high"]
    return out


def _die_with_parent() -> None:
    """Ask Linux to signal this worker when the runner dies, and take the program down with it."""
    if os.getpgrp() == os.getpid():  # only a group leader may kill its whole group

        def _on_term(signum, frame):
            os.killpg(os.getpgrp(), signal.SIGKILL)

        signal.signal(signal.SIGTERM, _on_term)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass
    parent = os.environ.get(PARENT_ENV)
    if parent and parent.isdigit() and os.getppid() != int(parent):
        os._exit(1)  # the runner is already gone


def seconds_since_process_start() -> float | None:
    """How long this process has existed (Linux: /proc), so a worker can say what starting cost."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime_s = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime_s - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def import_modules(names: tuple[str, ...]) -> float:
    """Import ``names`` (those not yet imported); the seconds it took."""
    import importlib

    t0 = time.monotonic()
    for name in names:
        if name not in sys.modules:
            try:
                importlib.import_module(name)
            except ImportError:
                pass  # the workload that needs it says so, for its case
    return time.monotonic() - t0


def _measure_reference(meter, case_dir: Path, result: dict) -> None:
    """The fixed reference loop, right before the case's repetitions (see harness.reference); a
    reference that cannot be measured leaves a warning, never a failed case."""
    from harness import reference

    try:
        reference.measure(meter, case_dir)
    except Exception as e:  # noqa: BLE001 - the case's own figures do not depend on it
        result.setdefault("warnings", []).append(f"reference loop not measured: {e}")


def _load_plugins() -> None:
    import importlib

    for name in filter(None, (s.strip() for s in os.environ.get(PLUGINS_ENV, "").split(","))):
        importlib.import_module(name)


def apply_hardware(hw: Hardware, workload_type: str) -> None:
    """Make this process look like the hardware profile.

    Model workloads use harness.hardware (device check, torch threads). Other programs (command
    workloads) get the profile's thread count as CPU affinity, without importing torch.
    """
    from harness.workloads import own_program

    if not own_program(workload_type):
        from harness.hardware import apply_profile

        apply_profile(hw.case_dict())
        return
    if hw.threads and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, cpus[: hw.threads])


def _peak_rss_mb() -> float | None:
    try:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kb_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        return max(kb, kb_children) / 1024.0
    except Exception:
        return None


def _device_name(hw: Hardware, workload_type: str) -> str | None:
    from harness.workloads import own_program

    if hw.device != "cpu" and own_program(workload_type):
        return None  # naming a GPU would mean importing torch into a worker that needs none
    try:
        from harness.hardware import describe

        return describe(hw.case_dict()).get("device_name")
    except Exception:
        return None


def measure_case(
    case_dir: Path, run_dir: Path, run_id: str, idle_w: dict | None, case: dict | None = None
) -> dict:
    """Measure a case and write its trace and result into ``case_dir``; return the result.

    ``case``: the case as the runner holds it (secrets intact); by default case.json, which is
    written with secrets masked.
    """
    from harness import store

    started = store.utc_now()
    if case is None:
        case = store.read_json(case_dir / store.CASE_FILE)
    store.remember_secrets(case)  # what the program prints of its secrets is masked too
    result: dict = {
        "schema_version": store.SCHEMA_VERSION,
        "case_id": case.get("case_id"),
        "case": case.get("case"),
        "status": store.FAILED,
        "error": None,
        "stop_reason": None,
        "started": started,
        "finished": None,
        "worker_pid": os.getpid(),
        "repetitions": [],
        "windows": [],
        "aggregates": {"n": 0},
        "summary": {},
        "static": {},
        "idle_w": idle_w,
    }
    meter = None
    workload = None
    t_case = time.monotonic()
    #: where a case's time goes: starting the process, imports, setup, warmup, measuring
    timing = result["timing"] = {"startup_s": seconds_since_process_start()}
    try:
        from harness import carbon
        from harness.meter import Meter
        from harness.records import derive, measurement_columns
        from harness.settings import case_hardware, case_settings
        from harness.workloads import Context, create, in_process

        m = case_settings(case)  # the suite's measurement block, its defaults the suite's
        hw = case_hardware(case)

        _load_plugins()
        wtype = (case.get("workload") or {}).get("type", "?")
        if in_process(wtype):
            timing["imports_s"] = import_modules(model_imports())
        apply_hardware(hw, wtype)
        carbon_settings = carbon.settings(case.get("carbon") or {})
        # an hourly series is the manifest's to keep; each result names the intensity it used
        result["carbon"] = {k: v for k, v in carbon_settings.items() if k != "intensity_series"}
        meter = Meter(
            sensors=m.sensors,
            sample_hz=m.sample_hz,
            tdp_w=m.tdp_w,
            max_temp_drift_c=m.max_temp_drift_c,
            estimate=m.estimate.model_dump(),
        )
        result["meter"] = {
            "domains": meter.domains,
            "method": meter.method,
            "sources": sorted(set(meter.domain_sources.values())),
            "statuses": [s.to_dict() for s in meter.statuses],
        }
        ctx = Context(
            meter=meter,
            case=case,
            artifacts_dir=Path(run_dir) / "artifacts",
            case_dir=Path(case_dir),
            idle_w=idle_w,
        )
        t_setup = time.monotonic()
        workload = create(ctx)
        static = workload.setup() or {}
        result["static"] = static
        warmup = m.warmup
        t_warmup = time.monotonic()
        if warmup:
            workload.warmup(warmup)
        t_reference = time.monotonic()
        _measure_reference(meter, Path(case_dir), result)
        t_measure = time.monotonic()
        timing.update(
            setup_s=t_warmup - t_setup,
            warmup_s=t_reference - t_warmup,
            reference_s=t_measure - t_reference,
        )
        base = store.identity_columns(case, run_id)
        base.update(node=socket.gethostname(), device_name=_device_name(hw, wtype))
        base.update(static)
        planned = workload.planned_repetitions()
        records: list[dict] = []
        result["repetitions"] = records  # kept when a later repetition fails
        result.setdefault("warnings", [])  # the reference loop may have warned

        def run_one(i: int) -> dict:
            rep = workload.run(i)
            meas = rep.measurement
            record = {**base, "repetition": i, "status": store.OK, "error": None}
            record.update(measurement_columns(meas, idle_w))
            record.update(rep.columns or {})
            for name, part in (rep.parts or {}).items():
                record.setdefault(f"{name}_energy_j", part.total_j)
                record.setdefault(f"{name}_duration_s", part.duration_s)
            derive(record, carbon_settings)
            result["windows"].append(
                {
                    "repetition": i,
                    "start_s": meas.start_s,
                    "end_s": meas.end_s,
                    "warnings": list(meas.warnings),
                    "thermal": meas.thermal,
                }
            )
            result["warnings"] += [w for w in meas.warnings if w not in result["warnings"]]
            return record

        reason = repeat(run_one, records, m, planned=planned, started=t_case)
        for record in records:
            record["stop_reason"] = reason
        timing["measure_s"] = time.monotonic() - t_measure
        result["summary"] = workload.summary() or {}
        result["stop_reason"] = reason
        result["aggregates"] = aggregates(records)
        result["status"] = store.OK
    except BaseException as e:  # noqa: BLE001 - every failure becomes the case's recorded reason
        if isinstance(e, KeyboardInterrupt):
            result["error"] = "interrupted"
        else:
            result["error"] = error_line(e)
            if isinstance(e, HarnessError):  # a known failure: its line says it all
                print(f"error: {result['error']}", file=sys.stderr)
            else:
                traceback.print_exc(file=sys.stderr)
    finally:
        if workload is not None:
            try:
                workload.teardown()
            except Exception as e:
                print(f"teardown failed: {error_line(e)}", file=sys.stderr)
    timing["case_s"] = time.monotonic() - t_case
    if meter is not None:
        try:
            meter.close()
            if meter.sampler_error:
                note = f"sampler: {meter.sampler_error}"
                result.setdefault("notes", []).append(note)
            store.write_trace(Path(case_dir) / store.TRACE_FILE, meter.trace())
        except Exception as e:
            print(f"trace not written: {error_line(e)}", file=sys.stderr)
    result["peak_rss_mb"] = _peak_rss_mb()
    result["finished"] = store.utc_now()
    store.write_json(Path(case_dir) / store.RESULT_FILE, result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.worker", description=__doc__)
    parser.add_argument("case_dir", type=Path)
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--idle-w", default=None, help="idle watts per domain, as JSON")
    parser.add_argument(
        "--case-stdin", action="store_true", help="read the case as JSON from standard input"
    )
    args = parser.parse_args(argv)
    _die_with_parent()
    idle_w = json.loads(args.idle_w) if args.idle_w else None
    case = json.load(sys.stdin) if args.case_stdin else None
    result = measure_case(args.case_dir, args.run_dir, args.run_id, idle_w, case)
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
