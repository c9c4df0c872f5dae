"""The fork server: each case still a fresh process of its own, faults reported as without it."""

from __future__ import annotations

import os
import signal
import time

import pytest
from runhelpers import FAST, TESTS

from harness.launchers.forkserver import BASE_PRELOAD, ForkServer
from harness.launchers.process import execute_case


def _case(mode: str, cid: str | None = None, **measurement) -> dict:
    return {
        "case_id": cid or f"mis-{mode}",
        "case": f"cpu/misbehave-{mode}",
        "suite": "t",
        "hardware": {"name": "cpu", "device": "cpu", "threads": None},
        "model": None,
        "variant": None,
        "workload": {"type": "misbehave", "mode": mode},
        "measurement": {**FAST, **measurement},
        "carbon": {"intensity_g_per_kwh": 100.0, "pue": 1.0},
    }


@pytest.fixture
def server(monkeypatch):
    # the plugin workloads come by the case's environment, as a suite's plugins would
    monkeypatch.setenv("HARNESS_PLUGINS", "harness_test_workloads")
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    with ForkServer(BASE_PRELOAD) as s:
        yield s


@pytest.mark.parametrize(
    "mode,reason",
    [
        ("raise", "ValueError: the workload broke"),
        ("exit", "worker exited with status 3"),
        ("kill", "worker killed by SIGKILL"),
        ("hang", "timed out after 3 s"),
    ],
)
def test_faults_of_a_forked_worker_become_failed_results(server, mode, reason, tmp_path):
    timeout_s = 3 if mode == "hang" else 15
    case = _case(mode, case_timeout_s=timeout_s)
    result = execute_case(case, tmp_path, run_id="r1", server=server)
    assert result["status"] == "failed" and result["error"] == reason


def test_each_case_is_a_fresh_process_of_its_own_group(server, tmp_path):
    first = execute_case(_case("planned", "a"), tmp_path, run_id="r1", server=server)
    second = execute_case(_case("planned", "b"), tmp_path, run_id="r1", server=server)
    assert first["status"] == second["status"] == "ok"
    pids = {first["worker_pid"], second["worker_pid"]}
    assert len(pids) == 2 and server.pid not in pids
    for pid in pids:  # each worker ended with its case (its whole process group was killed)
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
    # the worker reports where its time went
    assert first["timing"]["startup_s"] is not None and "measure_s" in first["timing"]


def test_a_dead_fork_server_costs_no_case(server, tmp_path):
    os.kill(server.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while server._proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    result = execute_case(_case("planned", "c"), tmp_path, run_id="r1", server=server)
    assert result["status"] == "ok"  # started afresh instead


def test_a_fork_server_that_cannot_start_leaves_each_case_a_new_interpreter(tmp_path, monkeypatch):
    from harness.launchers import Job, process

    def refuse(preload):
        raise OSError("the fork server refused: CUDA was initialised by the imports")

    monkeypatch.setenv("HARNESS_PLUGINS", "harness_test_workloads")
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    monkeypatch.setattr(process, "ForkServer", refuse)
    said: list[str] = []
    job = Job(run_dir=tmp_path, run_id="r1", measurement={"idle_s": 0}, message=said.append)
    results = list(process.Launcher().launch([_case("planned", "d")], job))
    assert [r["status"] for _, r in results] == ["ok"]
    assert said == [
        "fork server not used (the fork server refused: CUDA was initialised by the imports); "
        "each case starts a new interpreter"
    ]
