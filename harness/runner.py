"""Running a suite: one worker process per case, idle baselines, the machine lock, resume.

``run_suite`` is the Python entry point and ``harness run`` its command line. The run holds the
machine's measurement lock throughout; for each hardware profile it measures the idle baseline,
then runs each pending case in a fresh worker (``execute_case``) with a timeout, so an exception,
a crash, a kill or a hang of one case becomes that case's recorded failure and the run goes on.
After every case the measurements table is rebuilt, so what is done is never lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness import knobs, store
from harness.errors import HarnessError
from harness.lock import MachineLock
from harness.suite import Suite, expand, load_suite, select

#: the tail of a worker's output kept in cases/<id>/worker.log
WORKER_LOG_KEEP_BYTES = 256 * 1024
INTERRUPTED = "interrupted"


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) stopped the run; what was done is saved in ``run_dir``."""

    def __init__(self, run_dir: Path):
        super().__init__(str(run_dir))
        self.run_dir = Path(run_dir)


@dataclass
class RunOutcome:
    run_dir: Path
    #: status per selected case id after this run ("ok", "failed", or None when never run)
    statuses: dict[str, str | None] = field(default_factory=dict)
    ran: int = 0

    @property
    def failed(self) -> list[str]:
        return [cid for cid, s in self.statuses.items() if s != store.OK]

    @property
    def exit_status(self) -> int:
        return 1 if self.failed else 0


# ------------------------------------------------------------------------------ one case
def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _exit_reason(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"worker killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"worker killed by signal {-returncode}"
    if returncode == 0:
        return "worker exited without writing a result"
    return f"worker exited with status {returncode}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def failed_result(case: dict, error: str, **extra) -> dict:
    """The result.json the runner writes for a case whose worker wrote none."""
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


def _worker_env(case: dict) -> dict[str, str]:
    env = dict(os.environ)
    env["HARNESS_PARENT_PID"] = str(os.getpid())
    # the worker must import this very harness, wherever it is run from
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    threads = (case.get("hardware") or {}).get("threads")
    if threads:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = str(threads)
    return env


def execute_case(
    case: dict,
    run_dir: Path,
    idle_w: dict[str, float] | None = None,
    *,
    run_id: str | None = None,
    timeout_s: float | None = None,
    workdir: Path | None = None,
) -> dict:
    """Run one case in a fresh worker process and return its result (also in result.json).

    The worker gets its own process group; on timeout (``case_timeout_s`` unless ``timeout_s``)
    the whole group is killed. A worker that leaves no result gets one written here with the
    reason (its exit status or signal). Ctrl-C kills the worker, records the case as interrupted
    and re-raises. This function is all a remote (Ray) task needs to run a case.
    """
    run_dir = Path(run_dir)
    cdir = store.case_dir(run_dir, case["case_id"])
    cdir.mkdir(parents=True, exist_ok=True)
    for stale in (store.RESULT_FILE, store.TRACE_FILE, "output.log"):
        (cdir / stale).unlink(missing_ok=True)
    store.write_json(cdir / store.CASE_FILE, case)
    run_id = run_id or run_dir.name
    if timeout_s is None:
        timeout_s = float((case.get("measurement") or {}).get("case_timeout_s") or 600)
    cmd = [
        sys.executable,
        "-m",
        "harness.worker",
        str(cdir.resolve()),
        "--run-dir",
        str(run_dir.resolve()),
        "--run-id",
        run_id,
        "--case-stdin",
    ]
    if idle_w:
        cmd += ["--idle-w", json.dumps(idle_w)]
    started = time.monotonic()
    reason = None
    # an unnamed temporary file: the worker's raw output never lands unsanitised in the run folder
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=workdir,
            env=_worker_env(case),
        )
        try:
            # the case goes by pipe, secrets intact; case.json on disk has them masked
            try:
                proc.stdin.write(json.dumps(case).encode())
                proc.stdin.close()
            except OSError:
                pass  # the worker died at once; its exit status says why
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.wait()
            reason = f"timed out after {timeout_s:g} s"
        except BaseException:
            _kill_group(proc)
            proc.wait()
            _save_log(cdir, log)
            store.write_json(
                cdir / store.RESULT_FILE,
                failed_result(case, INTERRUPTED, wall_s=time.monotonic() - started),
            )
            raise
        finally:
            _kill_group(proc)  # whatever the program left behind in the group
        tail = _save_log(cdir, log)
    result = store.read_result(run_dir, case["case_id"])
    if result is not None and result.get("status") == store.OK:
        return result  # complete, even if teardown then overran the timeout
    if reason is None and result is None:
        reason = _exit_reason(proc.returncode)
        last = _last_line(store.sanitise_text(tail))
        if proc.returncode > 0 and last:
            reason = f"{reason}: {last[:300]}"
    if reason is not None:
        result = failed_result(
            case, reason, exit_status=proc.returncode, wall_s=time.monotonic() - started
        )
        store.write_json(cdir / store.RESULT_FILE, result)
    return result


def _save_log(cdir: Path, log) -> str:
    try:
        log.flush()
        size = log.seek(0, os.SEEK_END)
        log.seek(max(0, size - WORKER_LOG_KEEP_BYTES))
        text = log.read().decode(errors="replace")
        store.write_bytes(cdir / "worker.log", store.sanitise_text(text).encode())
        return text
    except OSError:
        return ""


# ------------------------------------------------------------------------------ progress
class Progress:
    """Cases done, failed, the current case and an ETA: a rich bar on a terminal, else lines."""

    def __init__(self, total: int, done: int = 0, *, live: bool | None = None, echo=None):
        self.total, self.done, self.failed = total, done, 0
        self.echo = echo or (lambda line: print(line, flush=True))
        self.live = sys.stdout.isatty() if live is None else live
        self._durations: list[float] = []
        self._bar = None
        self._task = None
        self._t0 = 0.0
        if self.live:
            from rich.progress import BarColumn, Progress, TextColumn

            self._bar = Progress(
                TextColumn("[bold]{task.completed}/{task.total}"),
                BarColumn(),
                TextColumn("{task.fields[failed]} failed"),
                TextColumn("eta {task.fields[eta]}"),
                TextColumn("{task.description}"),
                transient=False,
            )
            self._task = self._bar.add_task("", total=total, completed=done, failed=0, eta="?")
            self._bar.start()

    def message(self, line: str) -> None:
        if self._bar is not None:
            self._bar.console.print(line, markup=False, highlight=False)
        else:
            self.echo(line)

    def _eta(self) -> str:
        if not self._durations:
            return "?"
        left = (self.total - self.done) * (sum(self._durations) / len(self._durations))
        minutes, seconds = divmod(int(left), 60)
        return f"{minutes}:{seconds:02d}"

    def started(self, case: dict) -> None:
        self._t0 = time.monotonic()
        if self._bar is not None:
            self._bar.update(self._task, description=case["case"], eta=self._eta())

    def finished(self, case: dict, result: dict) -> None:
        took = time.monotonic() - self._t0
        self._durations.append(took)
        self.done += 1
        ok = result.get("status") == store.OK
        self.failed += 0 if ok else 1
        line = f"[{self.done}/{self.total}] {'ok    ' if ok else 'FAILED'} {case['case']} ({took:.1f} s)"
        if not ok:
            line += f": {result.get('error')}"
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, failed=self.failed, eta=self._eta())
            if not ok:
                self._bar.console.print(line, markup=False, highlight=False)
        else:
            self.echo(f"{line}, eta {self._eta()}" if self.done < self.total else line)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


# ------------------------------------------------------------------------------ idle
def measure_idle(suite: Suite | dict, seconds: float) -> dict:
    """Idle watts per domain (and ``total``) over ``seconds``, with the suite's sensors."""
    from harness.meter import Meter

    m = suite.measurement.model_dump() if isinstance(suite, Suite) else suite
    with Meter(sensors=m["sensors"], sample_hz=m.get("sample_hz"), tdp_w=m.get("tdp_w")) as meter:
        watts = meter.idle(seconds)
        return {
            "watts": watts,
            "seconds": seconds,
            "method": meter.method,
            "measured_at": store.utc_now(),
        }


# ------------------------------------------------------------------------------ a run
def _sensor_rows(measurement: dict) -> list[dict]:
    try:
        from harness.sensors import probe_all

        return [r.to_dict() for r in probe_all(tdp_w=measurement.get("tdp_w"))]
    except Exception as e:  # the manifest says so rather than the run failing
        return [{"error": f"sensors could not be probed: {e}"}]


def _describe(hw: dict) -> dict:
    """A profile with what it runs on (device name, cores, memory), for CPU profiles.

    A GPU profile is described by its cases (naming it here would import torch into the runner).
    """
    if hw.get("device") != "cpu":
        return hw
    try:
        from harness.hardware import describe

        return {**hw, **describe(hw)}
    except Exception:
        return hw


def _new_manifest(suite: Suite, run_id: str, suite_file: str | None, cases: list[dict]) -> dict:
    from harness import carbon

    return {
        "schema_version": store.SCHEMA_VERSION,
        "run_id": run_id,
        "suite": suite.model_dump(mode="json"),
        "suite_file": suite_file,
        "started": store.utc_now(),
        "finished": None,
        "status": "running",
        "host": store.host_facts(),
        "hardware": [_describe(hw.model_dump(mode="json")) for hw in suite.hardware],
        "software": store.software_versions(),
        "git_sha": store.git_sha(),
        "sensors": _sensor_rows(suite.measurement.model_dump()),
        "carbon": {**suite.carbon.model_dump(), **carbon.settings(suite.carbon.model_dump())},
        "environment": store.safe_environment(),
        "workdir": str(Path.cwd()),
        "cases": [{"case_id": c["case_id"], "case": c["case"]} for c in cases],
        "sessions": [],
    }


def _resolve(suite, out, resume) -> tuple[Suite, Path | None, str | None, dict | None]:
    """The suite, the existing run folder (resume) and its manifest."""
    if resume is not None:
        run_dir = Path(resume)
        manifest = store.read_manifest(run_dir)
        return _resumed_suite(run_dir, manifest), run_dir, manifest.get("suite_file"), manifest
    if isinstance(suite, Suite):
        return suite, None, None, None
    if suite is None:
        raise HarnessError("no suite given (a suite file, a suite name, or --resume RUN_DIR)")
    from harness.suite import resolve_suite_path

    path = resolve_suite_path(suite)
    return load_suite(path), None, str(path.resolve()), None


def _resumed_suite(run_dir: Path, manifest: dict) -> Suite:
    """The suite of a run folder: its manifest's copy, or the suite file when that is unchanged.

    The manifest holds the suite with secrets masked; if the original file still says the same
    (once masked), it is used so that commands get their real arguments and environment back.
    """
    from harness.suite import validate_data

    recorded = manifest.get("suite")
    suite = validate_data(recorded, source=f"{run_dir}/manifest.json suite")
    path = manifest.get("suite_file")
    if path and Path(path).is_file():
        try:
            original = load_suite(path)
        except HarnessError:
            return suite
        if store.sanitise(original.model_dump(mode="json")) == recorded:
            return original
    return suite


def execute_run(
    suite: Suite | str | Path | None,
    out: str | Path | None = None,
    *,
    resume: str | Path | None = None,
    only: str | None = None,
    no_wait: bool = False,
    report: bool = True,
    ray: str | None = None,
    live: bool | None = None,
    echo: Callable[[str], None] | None = None,
) -> RunOutcome:
    """Run (or resume) a suite; see ``run_suite``. Returns the statuses of the selected cases."""
    suite_obj, run_dir, suite_file, manifest = _resolve(suite, out, resume)
    cases = select(expand(suite_obj), only)
    if not cases:
        raise HarnessError(f"--only {only}: no case matches")
    if ray is not None:
        knobs.refuse_on_ray(cases)  # knobs: the runner sets them on its own machine only
        # Ray hook (harness/distributed.py): no Ray, a bad resources entry or an address where
        # nothing answers is one line and exit 2, before any run folder
        from harness.distributed import preflight

        preflight(ray, cases)
    echo = echo or (lambda line: print(line, flush=True))
    if run_dir is None:
        run_id = store.new_run_id(suite_obj.name)
        run_dir = Path(out) if out is not None else store.default_out()
        run_dir = run_dir / run_id
    else:
        run_id = manifest.get("run_id") or run_dir.name
    lock = MachineLock(run_id, wait=not no_wait, on_wait=echo)
    lock.acquire()
    progress = None
    try:
        if manifest is None:
            if run_dir.exists():
                raise HarnessError(f"{run_dir}: already exists")
            manifest = _new_manifest(suite_obj, run_id, suite_file, expand(suite_obj))
        session = {"started": store.utc_now(), "pid": os.getpid(), "only": only, "finished": None}
        manifest.setdefault("sessions", []).append(session)
        manifest["status"] = "running"
        try:
            store.write_json(run_dir / store.MANIFEST, manifest)
        except OSError as e:
            raise HarnessError(f"{run_dir}: cannot write the run folder: {e.strerror}") from None
        knobs.restore_left_over(run_dir, echo)  # knobs a dead run left set, before measuring
        workdir = Path(manifest.get("workdir") or Path.cwd())
        if not workdir.is_dir():
            workdir = Path.cwd()
        pending = [c for c in cases if not store.is_done(run_dir, c["case_id"])]
        progress = Progress(len(cases), len(cases) - len(pending), live=live, echo=echo)
        progress.message(f"run {run_id}: {len(pending)} of {len(cases)} cases to run")
        outcome = RunOutcome(run_dir)
        try:
            if ray is not None:
                _run_on_ray(pending, run_dir, run_id, ray, suite_obj, workdir, progress)
            else:
                _run_here(pending, run_dir, run_id, suite_obj, workdir, progress, outcome)
        except KeyboardInterrupt:
            _finish(run_dir, manifest, session, INTERRUPTED)
            raise RunInterrupted(run_dir) from None
        _finish(run_dir, manifest, session, "finished")
    finally:
        if progress is not None:
            progress.close()
        lock.release()
    for c in cases:
        result = store.read_result(run_dir, c["case_id"])
        outcome.statuses[c["case_id"]] = result.get("status") if result else None
    if report:
        _report(run_dir, echo)
    return outcome


def _run_here(pending, run_dir, run_id, suite, workdir, progress, outcome) -> None:
    # knobs: a profile's are set before its cases (and its idle baseline), restored after
    with knobs.ProfileKnobs(run_dir, progress.message) as profile_knobs:
        _run_cases_here(pending, run_dir, run_id, suite, workdir, progress, outcome, profile_knobs)


def _refused(case: dict, run_dir: Path, reason: str) -> dict:
    """A case whose profile's knobs could not be set fails with that reason, unrun."""
    cdir = store.case_dir(run_dir, case["case_id"])
    store.write_json(cdir / store.CASE_FILE, case)
    result = failed_result(case, reason)
    store.write_json(cdir / store.RESULT_FILE, result)
    return result


def _run_cases_here(pending, run_dir, run_id, suite, workdir, progress, outcome, profile_knobs):
    idle = _read_idle(run_dir)
    idle_s = float(suite.measurement.idle_s)
    for case in pending:
        hw = case["hardware"]["name"]
        refused = profile_knobs.enter(case["hardware"])  # None, or why its knobs are not set
        if refused is None and idle_s > 0 and hw not in idle:
            progress.message(f"idle baseline of {hw}: {idle_s:g} s")
            idle[hw] = measure_idle(suite, idle_s)
            store.write_json(run_dir / store.IDLE, idle)
        idle_w = (idle.get(hw) or {}).get("watts")
        progress.started(case)
        result = (
            execute_case(case, run_dir, idle_w, run_id=run_id, workdir=workdir)
            if refused is None
            else _refused(case, run_dir, refused)
        )
        outcome.ran += 1
        store.rebuild_measurements(run_dir)
        progress.finished(case, result)


def _run_on_ray(pending, run_dir, run_id, address, suite, workdir, progress) -> None:
    """Hand the pending cases to harness.distributed (it calls ``execute_case`` on the nodes)."""
    from harness import distributed

    distributed.run_cases(
        pending,
        run_dir,
        address=address,
        run_id=run_id,
        suite=suite,
        workdir=workdir,
        on_start=progress.started,
        on_result=lambda case, result: (
            store.rebuild_measurements(run_dir),
            progress.finished(case, result),
        ),
    )


def _read_idle(run_dir: Path) -> dict:
    try:
        return store.read_json(Path(run_dir) / store.IDLE)
    except (OSError, ValueError):
        return {}


def _finish(run_dir: Path, manifest: dict, session: dict, status: str) -> None:
    store.rebuild_measurements(run_dir)
    session["finished"] = store.utc_now()
    manifest["finished"] = session["finished"]
    manifest["status"] = status
    store.write_json(Path(run_dir) / store.MANIFEST, manifest)


def _report(run_dir: Path, echo: Callable[[str], None]) -> None:
    """Build the report; a missing or failing report never costs the results."""
    try:
        from harness.report import build_report
    except ImportError:
        echo(f"report: not available in this version; results are in {run_dir}")
        return
    try:
        build_report(run_dir)
    except Exception as e:  # noqa: BLE001
        line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        echo(f"report failed ({store.sanitise_text(line)}); retry with: harness report {run_dir}")


def run_suite(
    suite: Suite | str | Path | None,
    out: str | Path | None = None,
    **options,
) -> Path:
    """Run a suite (a ``Suite``, a file, or a bare name from suites/) and return the run folder.

    Options: ``resume`` (a run folder to finish), ``only`` (a glob over case names), ``no_wait``
    (fail at once when another run holds the machine), ``report`` (build the report, default
    True), ``live`` (progress bar on/off), ``echo`` (where progress lines go).
    """
    return execute_run(suite, out, **options).run_dir
