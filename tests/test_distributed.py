"""Running suites on a Ray cluster (harness/launchers/ray.py) and on a schedule (scripts/).

The Ray tests start a real two-node cluster on this machine (both nodes on 127.0.0.1, each with
one ``harness_node``; the second also offers ``jetson``) and drive it through ``harness run --ray
ADDRESS`` in a subprocess, as a user would. The rest runs without Ray.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from runhelpers import PY, ROOT, last_line, results_by_name

SCRIPT = ROOT / "scripts" / "scheduled-run.sh"
OBJECT_STORE_BYTES = 80 * 2**20
#: servers of this machine listen on 127.0.0.1 only; Ray would otherwise swap a loopback address
#: for the machine's outward one (see docs/distributed.md, Troubleshooting)
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


# ------------------------------------------------------------------------------ helpers
def _write_suite(folder: Path, data: dict, name: str) -> Path:
    base = {
        "name": name,
        "carbon": {"intensity_g_per_kwh": 100, "pue": 1.0},
        "measurement": {
            "sensors": ["estimate"],
            "sample_hz": 20,
            "idle_s": 0,
            "warmup": 0,
            "min_repeats": 1,
            "max_repeats": 1,
            "min_duration_s": 0,
            "case_timeout_s": 120,
        },
        "hardware": [{"name": "cpu", "device": "cpu"}],
    }
    base.update(data)
    path = Path(folder) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    return path


def _stamping_command(name: str, log: Path, sleep_s: float) -> dict:
    """A command that records its own start and end (unix seconds) and its worker's pid."""
    code = (
        "import json, os, time; t0 = time.time(); "
        f"time.sleep({sleep_s}); t1 = time.time(); "
        f"open({str(log)!r}, 'a').write(json.dumps([os.getppid(), t0, t1]) + '\\n'); "
        "print(json.dumps({'queries': 1}))"
    )
    return {"type": "command", "name": name, "run": [PY, "-c", code]}


def _harness_env(lock_file: Path, **extra: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["HARNESS_LOCK_FILE"] = str(lock_file)
    env.update(LOOPBACK_ENV)
    env.update(extra)
    return env


def _run_harness(args: list[str], cwd: Path, env: dict, timeout: float = 240):
    return subprocess.run(
        [PY, "-m", "harness", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _windows_by_node(results: dict[str, dict]) -> dict[str, list[tuple[float, float, str]]]:
    out: dict[str, list[tuple[float, float, str]]] = {}
    for name, r in results.items():
        ray_info = r.get("ray") or {}
        if "started_unix" in ray_info:
            out.setdefault(r["node"], []).append(
                (ray_info["started_unix"], ray_info["finished_unix"], name)
            )
    return out


def _assert_no_overlap(windows: list[tuple[float, float, str]]) -> None:
    windows = sorted(windows)
    for (s0, e0, n0), (s1, e1, n1) in zip(windows, windows[1:], strict=False):
        assert s1 >= e0, f"{n0} [{s0:.3f}, {e0:.3f}] overlaps {n1} [{s1:.3f}, {e1:.3f}]"


# ------------------------------------------------------------------------------ no Ray needed
def test_ray_missing_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    from harness.cli import main

    suite = _write_suite(tmp_path, {"workloads": [_stamping_command("a", tmp_path / "l", 0)]}, "s")
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    rc = main(["run", str(suite), "--ray", "--out", str(tmp_path / "res")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err == "harness: --ray needs Ray: pip install 'energy-harness[ray]'\n"
    assert not (tmp_path / "res").exists()  # refused before any run folder


def test_ray_address_where_nothing_answers_is_one_line(tmp_path, capsys):
    pytest.importorskip("ray")
    import socket

    from harness.cli import main

    with socket.socket() as free:  # a port nobody listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    suite = _write_suite(tmp_path, {"workloads": [_stamping_command("a", tmp_path / "l", 0)]}, "s")
    t0 = time.monotonic()
    rc = main(["run", str(suite), "--ray", f"127.0.0.1:{port}", "--out", str(tmp_path / "res")])
    err = capsys.readouterr().err
    assert rc == 2 and time.monotonic() - t0 < 30
    assert err.startswith(f"harness: --ray 127.0.0.1:{port}: no Ray head answers there")
    assert err.count("\n") == 1 and not (tmp_path / "res").exists()


def test_node_lock_waits_for_other_runs_not_for_its_own_driver(tmp_path, monkeypatch):
    import threading

    from harness.errors import HarnessError
    from harness.launchers.cluster import node_lock as _node_lock
    from harness.lock import MachineLock

    monkeypatch.setenv("HARNESS_LOCK_FILE", str(tmp_path / "m.lock"))
    with MachineLock("run-1"):  # this run's driver, on this machine
        assert _node_lock("run-1", wait_s=5) is None
    own = _node_lock("run-1", wait_s=5)  # nobody holds it: the task takes it
    assert own is not None and MachineLock("x").holder()["run_id"] == "run-1"
    with pytest.raises(HarnessError, match=r"busy with another run \(pid \d+, run run-1"):
        _node_lock("run-2", wait_s=0.3, poll_s=0.1)
    got = []
    waiter = threading.Thread(target=lambda: got.append(_node_lock("run-2", 30, poll_s=0.1)))
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive() and not got  # another run measures here: wait for it
    own.release()
    waiter.join(10)
    assert got and got[0] is not None
    got[0].release()


def test_case_needs_map_profiles_to_ray_resources():
    from harness.errors import HarnessError
    from harness.launchers.cluster import NODE_RESOURCE, case_needs, task_options

    cpu = {"hardware": {"name": "cpu", "device": "cpu"}, "case": "x"}
    gpu = {"hardware": {"name": "h", "device": "cuda:1", "resources": {"h100": 1}}, "case": "y"}
    edge = {"hardware": {"name": "e", "device": "cpu", "resources": {"jetson": 1}}, "case": "z"}
    assert case_needs(cpu) == {NODE_RESOURCE: 1.0}
    assert case_needs(gpu) == {NODE_RESOURCE: 1.0, "GPU": 1.0, "h100": 1.0}
    opts = task_options(gpu)
    assert opts["num_gpus"] == 1.0 and opts["num_cpus"] == 0.0 and opts["max_retries"] == 0
    assert opts["resources"] == {NODE_RESOURCE: 1.0, "h100": 1.0}
    assert task_options(edge)["resources"] == {NODE_RESOURCE: 1.0, "jetson": 1.0}
    assert task_options(edge)["num_gpus"] == 0.0
    bad = {"hardware": {"name": "b", "device": "cpu", "resources": {"memory": 1e9}}}
    with pytest.raises(HarnessError, match="'memory' is Ray's own"):
        case_needs(bad)


def test_check_nodes_wants_one_harness_node_each():
    from harness.errors import HarnessError
    from harness.launchers.cluster import check_nodes

    good = {"Alive": True, "NodeID": "ab" * 20, "Resources": {"CPU": 2.0, "harness_node": 1.0}}
    check_nodes([good, {"Alive": False, "Resources": {}}])
    with pytest.raises(HarnessError, match="offers the harness_node resource"):
        check_nodes([{"Alive": True, "Resources": {"CPU": 4.0}}])
    two = {**good, "NodeManagerHostname": "box", "Resources": {"harness_node": 2.0}}
    with pytest.raises(HarnessError, match=r"box/abababab declares harness_node: 2"):
        check_nodes([good, two])


def test_what_a_case_sends_back_fits_the_smallest_object_store():
    from harness.launchers.cluster import CASE_FILES_LIMIT_BYTES, transfer_limit_bytes

    mib = 2**20
    small = {"Alive": True, "Resources": {"harness_node": 1.0, "object_store_memory": 256 * mib}}
    big = {"Alive": True, "Resources": {"harness_node": 1.0, "object_store_memory": 8192 * mib}}
    dead = {"Alive": False, "Resources": {"object_store_memory": 16 * mib}}
    assert transfer_limit_bytes([small, big, dead]) == 128 * mib  # half the smallest live one
    assert transfer_limit_bytes([big]) == CASE_FILES_LIMIT_BYTES == 512 * mib


def test_infer_cases_wait_for_their_models_train_case():
    from harness.launchers import dependencies

    def case(cid, model, wtype, source="builtin:tiny-xs"):
        return {
            "case_id": cid,
            "model": {"name": model, "source": source},
            "workload": {"type": wtype},
        }

    cases = [
        case("t1", "m", "train"),
        case("i1", "m", "infer"),
        case("t2", "m", "train"),
        case("a2", "m", "accuracy"),
        case("i3", "other", "infer"),  # no train of its own in this run
        case("h1", "hf", "infer", source="hf:org/x"),
        {"case_id": "c", "model": None, "workload": {"type": "command"}},
    ]
    assert dependencies(cases) == {"i1": "t1", "a2": "t2"}


def test_artifacts_replace_a_checkpoint_folder_whole(tmp_path):
    from harness.errors import HarnessError
    from harness.launchers.cluster import model_artifacts, replace_artifacts

    art = tmp_path / "artifacts"
    replace_artifacts(art, {"models/m/config.json": b"{}", "models/m/old.bin": b"1"})
    replace_artifacts(art, {"models/m/config.json": b'{"v": 2}', "models/m/new.bin": b"2"})
    assert sorted(p.name for p in (art / "models" / "m").iterdir()) == ["config.json", "new.bin"]
    infer = {"model": {"name": "m", "source": "builtin:tiny-xs"}, "workload": {"type": "infer"}}
    train = {"model": {"name": "m", "source": "builtin:tiny-xs"}, "workload": {"type": "train"}}
    assert model_artifacts(art, infer) == {
        "models/m/config.json": b'{"v": 2}',
        "models/m/new.bin": b"2",
    }
    assert model_artifacts(art, train) == {}
    with pytest.raises(HarnessError, match="unsafe name"):
        replace_artifacts(art, {"models/../../escape": b"x"})
    assert not (tmp_path / "escape").exists()


def test_failure_reasons_name_what_ray_says():
    pytest.importorskip("ray")
    import ray.exceptions as rex

    from harness.launchers.ray import failure_reason

    assert failure_reason(rex.WorkerCrashedError(), "vm/1234abcd") == (
        "Ray worker died during the case on node vm/1234abcd (killed, or its node was lost)"
    )
    assert failure_reason(rex.NodeDiedError("gone")).startswith("Ray node died during the case")
    assert failure_reason(rex.TaskCancelledError()) == "cancelled"
    crash = rex.RayTaskError("f", "Traceback...\nlong", ValueError("bad input\nmore"))
    assert failure_reason(crash, "n/1") == "Ray task failed on node n/1: ValueError: bad input"


def test_failed_case_gets_its_folder_and_node(tmp_path):
    from harness import store
    from harness.launchers import write_failed
    from harness.launchers.cluster import write_case_files

    case = {"case_id": "abc123", "case": "cpu/x", "hardware": {"name": "cpu"}}
    cdir = store.case_dir(tmp_path, "abc123")
    cdir.mkdir(parents=True)
    (cdir / store.TRACE_FILE).write_bytes(b"stale")
    result = write_failed(tmp_path, case, "Ray worker died", "vm/00112233")
    assert not (cdir / store.TRACE_FILE).exists()
    saved = json.loads((cdir / store.RESULT_FILE).read_text())
    assert saved == json.loads(json.dumps(result))
    assert (saved["status"], saved["error"], saved["node"]) == (
        "failed",
        "Ray worker died",
        "vm/00112233",
    )
    assert json.loads((cdir / store.CASE_FILE).read_text())["case_id"] == "abc123"
    payload = {
        "files": {
            "trace.parquet": b"T",
            "case.json": b'{"case_id": "abc123"}',
            "result.json": b"x",
        },
        "result": {"case_id": "abc123", "status": "ok", "node": "vm/1"},
    }
    write_case_files(tmp_path, case, payload)
    assert (cdir / store.TRACE_FILE).read_bytes() == b"T"
    assert json.loads((cdir / store.RESULT_FILE).read_text())["status"] == "ok"


# ------------------------------------------------------------------------------ schedules
def _scheduled(suite: Path, cwd: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), str(suite), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_scheduled_run_fails_on_a_planted_regression(tmp_path):
    from fakesysfs import make_rapl

    # a RAPL counter that never moves: energy is exactly 0 in every run, so only the planted
    # change of duration can differ between runs, whatever else this machine is doing
    make_rapl(tmp_path / "sys", sockets=1, dram=False, psys=False, core=False)
    delay = tmp_path / "delay"
    # 0.3 s a repetition: the process start-up that varies under a loaded machine is a small
    # part of it, so three runs of history have a spread the planted change stands out from
    delay.write_text("0.3")
    job = {
        "type": "command",
        "name": "job",
        "run": ["sh", "-c", f"sleep $(cat {delay}); echo '{{\"queries\": 1}}'"],
    }
    suite = _write_suite(
        tmp_path,
        {
            "measurement": {
                "sensors": ["rapl"],
                "sample_hz": None,
                "idle_s": 0,
                "warmup": 0,
                # five repetitions a run: Welch's test on two a side (one degree of freedom)
                # cannot call even a fivefold slowdown significant on a noisy machine
                "min_repeats": 5,
                "max_repeats": 5,
                "min_duration_s": 0,
                "case_timeout_s": 60,
            },
            "workloads": [job],
        },
        "nightly",
    )
    results = tmp_path / "results"
    env = _harness_env(
        tmp_path / "harness.lock",
        HARNESS=f"{PY} -m harness",
        HARNESS_RESULTS=str(results),
        HARNESS_SYSFS=str(tmp_path / "sys"),
        HARNESS_COMPARE_THRESHOLD="0.5",
    )

    first = _scheduled(suite, tmp_path, env, "--no-report")
    assert first.returncode == 0, first.stderr
    assert "no baseline to compare with yet" in first.stdout
    first_dir = Path(last_line(first.stdout))
    assert first_dir.parent == results and (first_dir / "manifest.json").is_file()

    same = _scheduled(suite, tmp_path, env, "--no-report")
    assert same.returncode == 0, same.stdout + same.stderr
    assert f"base: {first_dir.name}" in same.stdout and "0 regressions" in same.stdout

    # the planted regression: the job takes eight times as long. compare judges it against the
    # last three runs (a t prediction test with 2 degrees of freedom, bencher's rule): at 0.1 s
    # against 0.6 s, one slow earlier run under a second test worker left a sixfold change at
    # p = 0.069, "within noise"
    delay.write_text("2.4")
    slower = _scheduled(suite, tmp_path, env, "--no-report")
    assert slower.returncode == 1, slower.stdout + slower.stderr
    assert "regression" in slower.stdout and "REGRESSION" in slower.stderr
    assert f"base: {Path(last_line(same.stdout)).name}" in slower.stdout


def test_scheduled_run_skips_while_another_run_holds_the_machine(tmp_path):
    from harness.lock import MachineLock

    suite = _write_suite(tmp_path, {"workloads": [_stamping_command("a", tmp_path / "l", 0)]}, "s")
    env = _harness_env(tmp_path / "harness.lock", HARNESS=f"{PY} -m harness")
    with MachineLock("someone-else", path=tmp_path / "harness.lock"):
        proc = _scheduled(suite, tmp_path, env, "--out", str(tmp_path / "res"))
    assert proc.returncode == 75, proc.stderr
    assert "run someone-else" in proc.stderr and "skipped" in proc.stderr
    assert not (tmp_path / "res").exists()


# ------------------------------------------------------------------------------ a Ray cluster
@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two Ray nodes on this machine; the second also offers ``jetson: 1``."""
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    lock_file = tmp_path_factory.getbasetemp() / "ray-harness.lock"
    env = {
        **LOOPBACK_ENV,
        "HARNESS_LOCK_FILE": str(lock_file),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the nodes' workers inherit it: same lock file, this checkout
    cl = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "resources": {"harness_node": 1},
            "node_ip_address": "127.0.0.1",
            "include_dashboard": False,
            "object_store_memory": OBJECT_STORE_BYTES,
        },
    )
    try:
        worker = cl.add_node(
            num_cpus=1,
            resources={"harness_node": 1, "jetson": 1},
            node_ip_address="127.0.0.1",
            object_store_memory=OBJECT_STORE_BYTES,
        )
        cl.wait_for_nodes()
        yield {"cluster": cl, "address": cl.address, "worker": worker, "lock_file": lock_file}
    finally:
        cl.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.mark.ray
@pytest.mark.slow
def test_two_nodes_share_the_cases_without_overlap(cluster, tmp_path):
    stamps = tmp_path / "stamps.jsonl"
    suite = _write_suite(
        tmp_path,
        {
            "measurement": {
                "sensors": ["estimate"],
                "sample_hz": 20,
                "idle_s": 0.3,
                "warmup": 0,
                "min_repeats": 2,
                "max_repeats": 2,
                "min_duration_s": 0,
                "case_timeout_s": 180,
            },
            "hardware": [
                {"name": "cpu", "device": "cpu", "threads": 1},
                {"name": "edge", "device": "cpu", "threads": 1, "resources": {"jetson": 1}},
            ],
            "models": [{"name": "tiny-xs", "source": "builtin:tiny-xs"}],
            "variants": [{"name": "fp32", "dtype": "float32"}],
            "workloads": [
                {"type": "train", "steps": 2, "batch_size": 2, "seq_len": 8},
                {"type": "infer", "batch_sizes": [1], "prompt_tokens": 4, "new_tokens": 2},
                _stamping_command("a", stamps, 0.4),
                _stamping_command("b", stamps, 0.4),
            ],
        },
        "twonodes",
    )
    env = _harness_env(cluster["lock_file"])
    proc = _run_harness(
        ["run", str(suite), "--ray", cluster["address"], "--out", "res", "--no-report"],
        tmp_path,
        env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = tmp_path / last_line(proc.stdout)
    results = results_by_name(run_dir)
    # one run folder holds every result: 4 command cases and 4 builtin-model cases
    assert set(results) == {f"{hw}/{c}" for hw in ("cpu", "edge") for c in ("a", "b")} | {
        f"tiny-xs/fp32/{hw}/{w}" for hw in ("cpu", "edge") for w in ("train", "infer-b1")
    }
    assert all(r["status"] == "ok" for r in results.values())

    import pandas as pd

    df = pd.read_parquet(run_dir / "measurements.parquet")
    assert set(df["run_id"]) == {run_dir.name} and len(set(df["case_id"])) == 8
    nodes = set(df["node"])
    assert len(nodes) == 2, nodes  # both nodes ran cases
    assert len({n.split("/")[1] for n in nodes}) == 2  # one host, two Ray node ids
    for r in results.values():
        assert {rec["node"] for rec in r["repetitions"]} == {r["node"]}

    # a profile's resources send its cases only to the node that offers them
    edge_nodes = {r["node"] for name, r in results.items() if "/edge/" in f"/{name}"}
    assert edge_nodes == {node_of_worker(cluster, nodes)}

    # no two cases overlapped in time on one node: the tasks' windows, and the commands' own
    windows = _windows_by_node(results)
    for node_windows in windows.values():
        _assert_no_overlap(node_windows)
    by_worker = {r["worker_pid"]: r for r in results.values()}
    own: dict[str, list[tuple[float, float, str]]] = {}
    lines = stamps.read_text().splitlines()
    assert len(lines) == 4 * 2  # four command cases, two repetitions each
    for line in lines:
        worker_pid, t0, t1 = json.loads(line)
        r = by_worker[worker_pid]
        assert r["ray"]["started_unix"] <= t0 <= t1 <= r["ray"]["finished_unix"]
        own.setdefault(r["node"], []).append((t0, t1, r["case"]))
    for node_windows in own.values():
        _assert_no_overlap(node_windows)

    # the trained checkpoint travelled: each infer case loaded what the train case saved
    for hw in ("cpu", "edge"):
        assert results[f"tiny-xs/fp32/{hw}/infer-b1"]["static"].get("trained") is True
    assert (run_dir / "artifacts" / "models" / "tiny-xs" / "config.json").is_file()

    # idle baselines per node and profile, measured on that node
    idle = json.loads((run_dir / "idle.json").read_text())
    assert set(idle) <= nodes and set(idle[node_of_worker(cluster, nodes)]) >= {"edge"}
    for r in results.values():
        assert r["idle_w"] == idle[r["node"]][r["case"].split("/")[-2]]["watts"]


def node_of_worker(cluster, nodes: set[str]) -> str:
    """The harness name of the second (jetson) node."""
    node_id = cluster["worker"].node_id
    return next(n for n in nodes if node_id.startswith(n.split("/")[1]))


def _ray_worker_of(pid: int):
    """The Ray worker process running the task whose descendant ``pid`` is."""
    import psutil

    proc = psutil.Process(pid)
    while proc is not None:
        if proc.name().startswith("ray::") or " ".join(proc.cmdline()).startswith("ray::"):
            return proc
        proc = proc.parent()
    raise AssertionError(f"no Ray worker above pid {pid}")


def _wait_for(path: Path, timeout_s: float, proc: subprocess.Popen) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().strip():
            return path.read_text().strip()
        if proc.poll() is not None:
            raise AssertionError(f"harness run ended first: {proc.communicate()}")
        time.sleep(0.1)
    raise AssertionError(f"{path} never appeared")


@pytest.mark.ray
def test_killed_worker_fails_its_case_and_resume_reruns_only_it(cluster, tmp_path):
    import psutil

    pid_file = tmp_path / "victim.pid"
    # the first time it writes its pid and sleeps (to be killed); once the file exists, it passes
    victim = (
        "import os, sys, time; p = sys.argv[1]\n"
        "if os.path.exists(p): print('{\"queries\": 1}'); sys.exit(0)\n"
        "open(p, 'w').write(str(os.getpid())); time.sleep(60)"
    )
    suite = _write_suite(
        tmp_path,
        {
            "hardware": [
                {"name": "cpu", "device": "cpu"},
                {"name": "tpu", "device": "cpu", "resources": {"tpu_pod": 1}},
            ],
            "workloads": [
                {"type": "command", "name": "victim", "run": [PY, "-c", victim, str(pid_file)]},
                _stamping_command("quick1", tmp_path / "stamps", 0.2),
                _stamping_command("quick2", tmp_path / "stamps", 0.2),
            ],
        },
        "killed",
    )
    env = _harness_env(cluster["lock_file"])
    args = ["run", str(suite), "--ray", cluster["address"], "--out", "res", "--no-report"]
    proc = subprocess.Popen(
        [PY, "-m", "harness", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        victim_pid = int(_wait_for(pid_file, 120, proc))
        ray_worker = _ray_worker_of(victim_pid)
        ray_worker.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, out + err
    run_dir = tmp_path / last_line(out)
    results = results_by_name(run_dir)
    assert results["cpu/victim"]["status"] == "failed"
    assert results["cpu/victim"]["error"].startswith("Ray worker died during the case")
    assert results["cpu/quick1"]["status"] == "ok" and results["cpu/quick2"]["status"] == "ok"
    # nothing offers tpu_pod: those cases fail at once, named, instead of waiting forever
    for name in ("tpu/victim", "tpu/quick1", "tpu/quick2"):
        assert results[name]["error"] == (
            "no live node of the Ray cluster offers {harness_node: 1, tpu_pod: 1}"
        )
    # the killed worker took its case's program down with it: nothing measures on unseen
    deadline = time.monotonic() + 10
    while psutil.pid_exists(victim_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not psutil.pid_exists(victim_pid) or psutil.Process(victim_pid).status() == "zombie"

    before = {n: r.get("ray", {}).get("started_unix") for n, r in results.items()}
    again = _run_harness(
        ["run", "--resume", str(run_dir), "--ray", cluster["address"], "--no-report"], tmp_path, env
    )
    assert again.returncode == 1, again.stdout + again.stderr  # the tpu cases still cannot run
    assert "5 of 6 cases to run" not in again.stdout and "4 of 6 cases to run" in again.stdout
    after = results_by_name(run_dir)
    assert after["cpu/victim"]["status"] == "ok"
    for name in ("cpu/quick1", "cpu/quick2"):  # done before: not measured twice
        assert after[name]["ray"]["started_unix"] == before[name]


@pytest.mark.ray
def test_failed_train_case_fails_its_dependants_on_ray(cluster, tmp_path):
    from test_runner import failing_train_suite

    suite = failing_train_suite(tmp_path, name="failedtrain")
    env = _harness_env(cluster["lock_file"])
    proc = _run_harness(
        ["run", str(suite), "--ray", cluster["address"], "--out", "res", "--no-report"],
        tmp_path,
        env,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    results = results_by_name(tmp_path / last_line(proc.stdout))
    train = results["tiny-xs/fp32/cpu/train"]
    assert train["status"] == "failed" and "text_file /no/such.txt" in train["error"]
    infer = results["tiny-xs/fp32/cpu/infer-b1"]
    # it received the train task's checkpoint ObjectRef: failed, so it was never measured
    assert (
        infer["error"]
        == f"not run: its train case tiny-xs/fp32/cpu/train failed ({train['error']})"
    )
    assert infer["repetitions"] == [] and infer["node"] is not None
    assert results["cpu/after"]["status"] == "ok"


@pytest.mark.ray
@pytest.mark.slow
def test_lost_node_fails_its_cases_and_the_rest_finish(cluster, tmp_path):
    """Removes the second node: keep this test last, it leaves the cluster with the head alone."""
    pid_file = tmp_path / "hang.pid"
    # on the edge profile (2 threads) it hangs until its node is taken away; elsewhere it passes
    hang = (
        "import os, sys, time\n"
        "if os.environ.get('OMP_NUM_THREADS') != '2': print('{\"queries\": 1}'); sys.exit(0)\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    )
    suite = _write_suite(
        tmp_path,
        {
            "hardware": [
                {"name": "cpu", "device": "cpu", "threads": 1},
                {"name": "edge", "device": "cpu", "threads": 2, "resources": {"jetson": 1}},
            ],
            "workloads": [
                {"type": "command", "name": "hang", "run": [PY, "-c", hang]},
                _stamping_command("quick", tmp_path / "stamps", 0.1),
            ],
        },
        "lostnode",
    )
    env = _harness_env(cluster["lock_file"])
    args = ["run", str(suite), "--ray", cluster["address"], "--out", "res", "--no-report"]
    proc = subprocess.Popen(
        [PY, "-m", "harness", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(pid_file, 120, proc)
        t_lost = time.monotonic()
        cluster["cluster"].remove_node(cluster["worker"], allow_graceful=False)
        out, err = proc.communicate(timeout=180)
        took_s = time.monotonic() - t_lost
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, out + err
    results = results_by_name(tmp_path / last_line(out))
    assert results["cpu/hang"]["status"] == "ok" and results["cpu/quick"]["status"] == "ok"
    lost = results["edge/hang"]
    assert lost["status"] == "failed"
    assert lost["error"].startswith(("Ray node died", "Ray worker died")), lost["error"]
    assert lost["node"] is not None and lost["node"] in lost["error"]
    # the case queued behind it had nowhere left to go
    assert results["edge/quick"]["error"] == (
        "no live node of the Ray cluster offers {harness_node: 1, jetson: 1} any more"
    )
    assert took_s < 120
