"""A run of a suite: the cases to do, resume, the machine lock, the manifest, progress.

``run_suite`` is the Python entry point and ``harness run`` its command line; both go through
``orchestrate_run``. The run holds the machine's measurement lock throughout and hands the pending
cases to a launcher (``harness/launchers/``: ``process`` on this machine, ``ray`` on a cluster),
which yields each case's result as it finishes. After every case the measurements table is
rebuilt, so what is done is never lost. This module knows no launcher by its module: it names
one, and ``harness.launchers`` finds it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness import knobs, store
from harness.errors import HarnessError
from harness.launchers import INTERRUPTED, Job, get_launcher
from harness.lock import MachineLock
from harness.resume import resumed_suite
from harness.suite import Suite, expand, load_suite, missing_extra, select

__all__ = [
    "INTERRUPTED",
    "Progress",
    "RunInterrupted",
    "RunOutcome",
    "orchestrate_run",
    "run_suite",
]


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


# ------------------------------------------------------------------------------ a run
def _sensor_rows(measurement: dict) -> list[dict]:
    try:
        from harness.sensors import probe_all
        from harness.sensors.estimate import source_options

        options = source_options(measurement.get("estimate"))  # the estimate's model, attribution
        return [r.to_dict() for r in probe_all(tdp_w=measurement.get("tdp_w"), **options)]
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
        return resumed_suite(run_dir, manifest), run_dir, manifest.get("suite_file"), manifest
    if isinstance(suite, Suite):
        return suite, None, None, None
    if suite is None:
        raise HarnessError("no suite given (a suite file, a suite name, or --resume RUN_DIR)")
    from harness.suite import resolve_suite_path

    path = resolve_suite_path(suite)
    return load_suite(path), None, str(path.resolve()), None


def orchestrate_run(
    suite: Suite | str | Path | None,
    out: str | Path | None = None,
    *,
    resume: str | Path | None = None,
    only: str | None = None,
    no_wait: bool = False,
    lock_timeout_s: float | None = None,
    report: bool = True,
    ray: str | None = None,
    live: bool | None = None,
    echo: Callable[[str], None] | None = None,
    launcher_options: dict | None = None,
    on_result: Callable[[dict, dict], None] | None = None,
) -> RunOutcome:
    """Run (or resume) a suite; see ``run_suite``. Returns the statuses of the selected cases."""
    suite_obj, run_dir, suite_file, manifest = _resolve(suite, out, resume)
    cases = select(expand(suite_obj), only)
    if not cases:
        raise HarnessError(f"--only {only}: no case matches")
    if ray is not None:
        knobs.refuse_on_ray(cases)  # knobs: the runner sets them on its own machine only
    if ray is None and (missing := missing_extra(cases)):
        raise HarnessError(missing)  # before any case runs, not once per case
    # no Ray, a bad resources entry or an address where nothing answers is one line and exit 2,
    # before any run folder
    options = dict(launcher_options or {})
    if ray is None:
        launcher = get_launcher("process", **options)
    else:
        launcher = get_launcher("ray", address=ray, **options)
    launcher.preflight(cases)
    echo = echo or (lambda line: print(line, flush=True))
    if run_dir is None:
        run_id = store.new_run_id(suite_obj.name)
        run_dir = Path(out) if out is not None else store.default_out()
        run_dir = run_dir / run_id
    else:
        run_id = manifest.get("run_id") or run_dir.name
    lock = MachineLock(run_id, wait=not no_wait, timeout_s=lock_timeout_s, on_wait=echo)
    lock.acquire()
    progress = None
    try:
        if manifest is None:
            if run_dir.exists():
                raise HarnessError(f"{run_dir}: already exists")
            manifest = _new_manifest(suite_obj, run_id, suite_file, expand(suite_obj))
        if run_dir.exists():
            # a runner killed mid-write left its temporaries; no other writer holds the lock
            store.sweep_temporaries(run_dir)
        session = {"started": store.utc_now(), "pid": os.getpid(), "only": only, "finished": None}
        manifest.setdefault("sessions", []).append(session)
        manifest["status"] = "running"
        try:
            store.write_json(run_dir / store.MANIFEST, manifest)
            store.reserve_space(run_dir)
        except OSError as e:
            raise store.write_error(e) from None
        knobs.restore_left_over(run_dir, echo)  # knobs a dead run left set, before measuring
        workdir = Path(manifest.get("workdir") or Path.cwd())
        if not workdir.is_dir():
            workdir = Path.cwd()
        pending = store.pending_cases(run_dir, cases)
        progress = Progress(len(cases), len(cases) - len(pending), live=live, echo=echo)
        progress.message(f"run {run_id}: {len(pending)} of {len(cases)} cases to run")
        outcome = RunOutcome(run_dir)
        job = Job(
            run_dir=run_dir,
            run_id=run_id,
            measurement=suite_obj.measurement.model_dump(),
            workdir=workdir,
            on_start=progress.started,
            message=progress.message,
        )
        results = launcher.launch(pending, job)
        try:
            for case, result in results:
                outcome.ran += 1
                store.rebuild_measurements(run_dir)
                progress.finished(case, result)
                if on_result is not None:  # e.g. the Prometheus metrics' case counters
                    on_result(case, result)
        except KeyboardInterrupt:
            results.close()  # the launcher stops what it started before the run is marked
            _finish(run_dir, manifest, session, INTERRUPTED)
            store.release_space(run_dir)
            raise RunInterrupted(run_dir) from None
        except OSError as e:  # a full disk, a folder gone: one line, the run resumable
            results.close()
            store.release_space(run_dir)
            store.try_write_json(run_dir / store.MANIFEST, _stopped(manifest, session))
            raise store.write_error(e, resume=run_dir) from None
        finally:
            results.close()
        _finish(run_dir, manifest, session, "finished")
        store.release_space(run_dir)
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


def _stopped(manifest: dict, session: dict, status: str = INTERRUPTED) -> dict:
    session["finished"] = store.utc_now()
    return {**manifest, "finished": session["finished"], "status": status}


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
    (fail at once when another run holds the machine), ``lock_timeout_s`` (wait at most that
    long for it), ``report`` (build the report, default True), ``live`` (progress bar on/off), ``echo`` (where progress lines go).
    """
    return orchestrate_run(suite, out, **options).run_dir
