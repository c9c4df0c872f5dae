"""Cases on this machine: a fresh worker process per case, in its own process group, with a timeout.

``execute_case`` is one case: the worker (``harness/worker.py``) is started, given the case by
pipe, waited for at most ``case_timeout_s``, and its whole process group killed after, so an
exception, a crash, a kill or a hang of one case becomes that case's recorded failure and the run
goes on. The worker is forked from the run's fork server (``forkserver.py``), which has done the
heavy imports once; without a server (a Ray task, a direct call) it is a new Python process.

``Launcher`` runs the pending cases in order, measuring each hardware profile's idle baseline
before its first case.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from harness import knobs, store
from harness.launchers import (
    INTERRUPTED,
    Job,
    dependencies,
    failed_result,
    measure_idle,
    not_run,
    read_idle,
    write_failed,
)
from harness.launchers.forkserver import BASE_PRELOAD, ForkServer
from harness.lock import HELD_ENV, lock_path
from harness.worker import PARENT_ENV, model_imports
from harness.workloads import in_process

#: the tail of a worker's output kept in cases/<id>/worker.log
WORKER_LOG_KEEP_BYTES = 256 * 1024


def _kill_group(proc) -> None:
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


def worker_env(case: dict, parent_pid: int | None = None) -> dict[str, str]:
    """The worker's environment: this harness on its path, the profile's thread count."""
    env = dict(os.environ)
    env[PARENT_ENV] = str(parent_pid or os.getpid())
    env[HELD_ENV] = str(lock_path())  # `harness measure` in a command case: its run holds it
    # the worker must import this very harness, wherever it is run from
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    threads = (case.get("hardware") or {}).get("threads")
    if threads:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = str(threads)
    return env


def _start_worker(argv, case, log, workdir, server: ForkServer | None):
    case_text = json.dumps(case)
    if server is not None:
        try:
            return server.start(argv, worker_env(case, server.pid), workdir, case_text, log)
        except OSError:
            pass  # the server is gone (killed, out of memory): this worker starts afresh
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.worker", *argv],
        stdin=subprocess.PIPE,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=workdir,
        env=worker_env(case),
    )
    # the case goes by pipe, secrets intact; case.json on disk has them masked
    try:
        proc.stdin.write(case_text.encode())
        proc.stdin.close()
    except OSError:
        pass  # the worker died at once; its exit status says why
    return proc


def execute_case(
    case: dict,
    run_dir: Path,
    idle_w: dict[str, float] | None = None,
    *,
    run_id: str | None = None,
    timeout_s: float | None = None,
    workdir: Path | None = None,
    server: ForkServer | None = None,
) -> dict:
    """Run one case in a fresh worker process and return its result (also in result.json).

    The worker gets its own process group; on timeout (``case_timeout_s`` unless ``timeout_s``)
    the whole group is killed. A worker that leaves no result gets one written here with the
    reason (its exit status or signal). Ctrl-C kills the worker, records the case as interrupted
    and re-raises. ``server``: fork the worker from it instead of starting a new interpreter.
    """
    run_dir = Path(run_dir)
    store.remember_secrets(case)  # the worker's output may echo the case's secrets
    cdir = store.case_dir(run_dir, case["case_id"])
    cdir.mkdir(parents=True, exist_ok=True)
    for stale in (store.RESULT_FILE, store.TRACE_FILE, "output.log"):
        (cdir / stale).unlink(missing_ok=True)
    store.write_json(cdir / store.CASE_FILE, case)
    run_id = run_id or run_dir.name
    if timeout_s is None:
        timeout_s = float((case.get("measurement") or {}).get("case_timeout_s") or 600)
    argv = [str(cdir.resolve()), "--run-dir", str(run_dir.resolve()), "--run-id", run_id]
    argv.append("--case-stdin")
    if idle_w:
        argv += ["--idle-w", json.dumps(idle_w)]
    started = time.monotonic()
    reason = None
    # an unnamed temporary file: the worker's raw output never lands unsanitised in the run folder
    with tempfile.TemporaryFile() as log:
        proc = _start_worker(argv, case, log, workdir, server)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.wait()
            reason = f"timed out after {timeout_s:g} s"
        except BaseException:
            _kill_group(proc)
            proc.wait()
            _save_log(cdir, log)
            store.write_failure(  # never over an ok result the worker finished
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
        last = store.last_line(store.sanitise_text(tail))
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


def preload_for(cases: list[dict]) -> tuple[str, ...]:
    """What the fork server imports: the model stack only when some case runs a model."""
    if any(in_process((c.get("workload") or {}).get("type")) for c in cases):
        # imported once by the fork server of a run with model cases, as each such worker would
        return BASE_PRELOAD + model_imports()
    return BASE_PRELOAD


class Launcher:
    """A fresh worker per case on this machine, one case at a time, in the suite's order."""

    def __init__(self, fork_server: bool = True, **_options):
        self.fork_server = fork_server

    def preflight(self, cases: list[dict]) -> None:
        """Nothing to check before the run folder: this machine is here."""

    def launch(self, cases: list[dict], job: Job) -> Iterator[tuple[dict, dict]]:
        if not cases:
            return
        idle = read_idle(job.run_dir)
        idle_s = float(job.measurement.get("idle_s") or 0)
        deps, failed = dependencies(cases), {}
        # started (and done importing) before any idle baseline, so none measures its imports
        server = None
        if self.fork_server:
            try:
                server = ForkServer(preload_for(cases))
            except OSError as e:  # every worker then starts afresh, as without a server
                job.say(f"fork server not used ({e}); each case starts a new interpreter")
        # knobs: a profile's are set before its cases (and its idle baseline), restored after
        profile_knobs = knobs.ProfileKnobs(job.run_dir, job.say)
        try:
            for case in cases:
                train = deps.get(case["case_id"])
                if train in failed:
                    job.started(case)
                    yield case, write_failed(job.run_dir, case, not_run(*failed[train]))
                    continue
                hw = case["hardware"]["name"]
                refused = profile_knobs.enter(case["hardware"])  # None, or why they are not set
                if refused is not None:
                    job.started(case)
                    failed[case["case_id"]] = (case["case"], refused)
                    yield case, write_failed(job.run_dir, case, refused)
                    continue
                if idle_s > 0 and hw not in idle:
                    job.say(f"idle baseline of {hw}: {idle_s:g} s")
                    idle[hw] = measure_idle(job.measurement, idle_s)
                    store.write_json(job.run_dir / store.IDLE, idle)
                idle_w = (idle.get(hw) or {}).get("watts")
                job.started(case)
                result = execute_case(
                    case,
                    job.run_dir,
                    idle_w,
                    run_id=job.run_id,
                    workdir=job.workdir,
                    server=server,
                )
                if result.get("status") != store.OK:
                    failed[case["case_id"]] = (case["case"], result.get("error") or "failed")
                yield case, result
        finally:
            profile_knobs.close()
            if server is not None:
                server.close()
