"""Running a suite's cases on a Ray cluster: ``harness run SUITE --ray [ADDRESS]``.

Each case is one Ray task that runs the very worker a local run uses (``runner.execute_case``)
on the node Ray picks, in a scratch run folder there; the task sends the case folder's files
back and the driver writes them into its one run folder, ``result.json`` last. So the nodes need
no shared filesystem, and a run folder from a cluster reads like one from a laptop.

Placement. Every node declares one ``harness_node`` (``ray start --resources='{"harness_node":
1}'``) and every case takes all of it, so two measurements never overlap on one node. A profile
with ``device: cuda:N`` also takes one GPU (Ray picks which; the case runs as ``cuda:0`` of what
Ray lets it see, and result.json's ``ray.gpu_ids`` names the physical one), and a profile's
``resources`` (``{jetson: 1}``) send its cases only to nodes that offer them. A task also takes the
node's machine lock, unless this run's own driver holds it there.

Idle baselines are per node and hardware profile: the first case of a profile on a node measures
it there, a small actor of the run (the *board*) keeps it for the next cases of that node, and the
driver writes them to idle.json as ``{node: {profile: ...}}``. The board also tells the driver
when a case starts and where.

A case whose task fails, whose worker is killed or whose node dies is recorded as failed with the
reason, and the rest go on: tasks never retry (``max_retries=0``), so no case is measured twice.
Trained builtin models travel with the cases: a train case sends its checkpoint back, and the
infer and accuracy cases of that model wait for it and get it, as they would find it locally.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from harness import store
from harness.errors import HarnessError

RAY_MISSING = "--ray needs Ray: pip install 'energy-harness[ray]'"
#: the per-node resource every node declares once and every case takes whole
NODE_RESOURCE = "harness_node"
#: Ray resource names a profile may not ask for by name (CPU and GPU it may: they map to options)
RAY_RESERVED = ("memory", "object_store_memory")
#: object store of a Ray instance started by the driver itself: results and tiny checkpoints
LOCAL_OBJECT_STORE_BYTES = 256 * 2**20
#: how often the driver looks at finished tasks and started cases
POLL_S = 0.5
#: how often the driver checks that a waiting case still has a live node that can run it
PLACEMENT_CHECK_S = 5.0
#: the case folder files a task sends back; result.json is sent as a dict and written last
CASE_FILES_LIMIT_BYTES = 512 * 2**20
ARTIFACTS = "artifacts"

OnCase = Callable[[dict], Any]
OnResult = Callable[[dict, dict], Any]


def require_ray():
    """The ``ray`` module, or the one-line error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise HarnessError(RAY_MISSING) from None
    return ray


def preflight(address: str | None, cases: list[dict]) -> None:
    """What can be checked before a run folder exists: Ray, the profiles' resources, the address.

    The runner calls this before it takes the lock, so that ``--ray`` without Ray, a bad
    ``resources`` entry or a head that does not answer is one line and no half-made run folder.
    """
    require_ray()
    for case in cases:
        case_needs(case)
    address = (address or "auto").strip()
    if address not in ("auto", "local") and not _reachable(address):
        raise _unreachable(address)


# ------------------------------------------------------------------------------ placement
def node_name(hostname: str, node_id: str) -> str:
    """``<hostname>/<first 8 hex of the Ray node id>``: two nodes on one host stay apart."""
    return f"{hostname}/{node_id[:8]}"


def case_needs(case: dict) -> dict[str, float]:
    """The Ray resources one case takes: the whole node slot, a GPU for cuda, the profile's own."""
    from harness.hardware import parse_device

    hw = case.get("hardware") or {}
    needs: dict[str, float] = {}
    for key, amount in (hw.get("resources") or {}).items():
        if key in RAY_RESERVED:
            raise HarnessError(
                f"hardware {hw.get('name')!r}: resources: {key!r} is Ray's own and cannot be "
                "asked for here (the memory cap of a profile is memory_limit_mb)"
            )
        needs[str(key)] = float(amount)
    needs[NODE_RESOURCE] = 1.0
    if parse_device(hw.get("device", "cpu"))[0] == "cuda":
        needs["GPU"] = max(1.0, needs.get("GPU", 0.0))
    return needs


def task_options(case: dict) -> dict:
    """``.options(...)`` of a case's task: its resources, no retries, a readable name."""
    needs = dict(case_needs(case))
    return {
        # the node slot, not a CPU, is what keeps cases apart; the worker uses the whole node
        "num_cpus": needs.pop("CPU", 0.0),
        "num_gpus": needs.pop("GPU", 0.0),
        "resources": needs,
        "max_retries": 0,
        "retry_exceptions": False,
        "name": f"harness:{case.get('case')}",
    }


def offers(node_resources: dict[str, float], needs: dict[str, float]) -> bool:
    return all(node_resources.get(k, 0.0) >= v for k, v in needs.items())


def describe_needs(needs: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(needs.items())) + "}"


def check_nodes(nodes: list[dict]) -> None:
    """Every live node must declare exactly one ``harness_node``, and at least one must."""
    alive = [n for n in nodes if n.get("Alive")]
    slots = [(n, (n.get("Resources") or {}).get(NODE_RESOURCE, 0.0)) for n in alive]
    if not any(amount for _, amount in slots):
        raise HarnessError(
            f"no node of the Ray cluster offers the {NODE_RESOURCE} resource: start each node with "
            f"ray start ... --resources='{{\"{NODE_RESOURCE}\": 1}}' (see docs/distributed.md)"
        )
    for n, amount in slots:
        if amount and amount != 1:
            host = n.get("NodeManagerHostname") or n.get("NodeManagerAddress") or "?"
            raise HarnessError(
                f"Ray node {node_name(host, n.get('NodeID', ''))} declares {NODE_RESOURCE}: "
                f"{amount:g}; each node must declare exactly 1 so that cases never overlap on it"
            )


def live_resources(nodes: list[dict]) -> list[dict[str, float]]:
    return [dict(n.get("Resources") or {}) for n in nodes if n.get("Alive")]


def dependencies(cases: list[dict]) -> dict[str, str]:
    """case id -> the train case whose checkpoint it loads (the last train of its model before it).

    Locally, cases run in order and a builtin model's infer and accuracy cases load what the train
    case before them saved; on a cluster they wait for that train case instead.
    """
    last_train: dict[str, str] = {}
    deps: dict[str, str] = {}
    for case in cases:
        model = case.get("model") or {}
        if not str(model.get("source") or "").startswith("builtin:"):
            continue
        name = model.get("name")
        if (case.get("workload") or {}).get("type") == "train":
            last_train[name] = case["case_id"]
        elif name in last_train:
            deps[case["case_id"]] = last_train[name]
    return deps


def failure_reason(exc: BaseException, node: str | None = None) -> str:
    """One line for a task that ended without a result: what Ray says happened, and where."""
    import ray.exceptions as rex

    from harness.worker import error_line

    where = f" on node {node}" if node else ""
    if isinstance(exc, rex.NodeDiedError):
        return f"Ray node died during the case{where}"
    if isinstance(exc, rex.OutOfMemoryError):
        return f"killed by Ray's memory monitor{where} (the node ran out of memory)"
    if isinstance(exc, rex.WorkerCrashedError):
        return f"Ray worker died during the case{where} (killed, or its node was lost)"
    if isinstance(exc, rex.OwnerDiedError):
        return f"the case's result was lost with its owner{where}"
    if isinstance(exc, rex.TaskCancelledError):
        return f"cancelled{where}"
    if isinstance(exc, rex.RayTaskError):
        cause = getattr(exc, "cause", None)
        text = error_line(cause) if cause is not None else "failed"
        return f"Ray task failed{where}: {text}"
    return f"Ray: {error_line(exc)}{where}"


# ------------------------------------------------------------------------------ files
def _safe_relpath(name: str) -> PurePosixPath:
    rel = PurePosixPath(name)
    if rel.is_absolute() or not rel.parts or any(p in ("", ".", "..") for p in rel.parts):
        raise HarnessError(f"a node sent back a file with an unsafe name: {name!r}")
    return rel


def read_tree(folder: Path, skip: set[str] | None = None) -> dict[str, bytes]:
    """Every file under ``folder`` by relative POSIX path (skipping names in ``skip``)."""
    out: dict[str, bytes] = {}
    folder = Path(folder)
    if not folder.is_dir():
        return out
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            rel = path.relative_to(folder).as_posix()
            if skip and rel in skip:
                continue
            out[rel] = path.read_bytes()
    return out


def _stamp(folder: Path) -> dict[str, tuple[int, int]]:
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


def write_tree(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        store.write_bytes(Path(folder) / _safe_relpath(name), data)


def _model_prefix(rel: str) -> str:
    parts = PurePosixPath(rel).parts
    return "/".join(parts[:2]) if len(parts) >= 2 else rel


def replace_artifacts(artifacts_dir: Path, files: dict[str, bytes]) -> None:
    """Put a node's new artifacts into the run's, each model folder swapped whole.

    A checkpoint is a folder (``models/<name>/``); swapping the whole folder keeps an older,
    larger checkpoint's files from lingering beside the new one.
    """
    groups: dict[str, dict[str, bytes]] = {}
    for rel, data in files.items():
        _safe_relpath(rel)
        prefix = _model_prefix(rel)
        groups.setdefault(prefix, {})[PurePosixPath(rel).relative_to(prefix).as_posix()] = data
    for prefix, group in groups.items():
        target = Path(artifacts_dir) / prefix
        if list(group) == ["."]:  # a plain file at the top
            store.write_bytes(target, group["."])
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        write_tree(staging, group)
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}-{time.monotonic_ns()}")
            os.replace(target, old)
        os.replace(staging, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def model_artifacts(artifacts_dir: Path, case: dict) -> dict[str, bytes]:
    """The trained checkpoint a builtin model's case would load here, as files (or nothing)."""
    model = case.get("model") or {}
    if not str(model.get("source") or "").startswith("builtin:"):
        return {}
    if (case.get("workload") or {}).get("type") == "train":
        return {}  # training starts from the seeded initialisation
    prefix = f"models/{model.get('name')}"
    return {f"{prefix}/{k}": v for k, v in read_tree(Path(artifacts_dir) / prefix).items()}


def write_case_files(run_dir: Path, case: dict, payload: dict) -> dict:
    """Write what a task sent back into the driver's case folder, result.json last."""
    cdir = store.case_dir(run_dir, case["case_id"])
    cdir.mkdir(parents=True, exist_ok=True)
    for stale in (store.RESULT_FILE, store.TRACE_FILE, "output.log", "worker.log"):
        (cdir / stale).unlink(missing_ok=True)
    files = dict(payload.get("files") or {})
    files.pop(store.RESULT_FILE, None)
    if store.CASE_FILE not in files:
        store.write_json(cdir / store.CASE_FILE, case)
    write_tree(cdir, files)
    result = payload["result"]
    store.write_json(cdir / store.RESULT_FILE, result)
    return result


def write_failed(run_dir: Path, case: dict, reason: str, node: str | None) -> dict:
    """The result of a case whose task ended without one (its worker or node died, ...)."""
    from harness.runner import failed_result

    cdir = store.case_dir(run_dir, case["case_id"])
    cdir.mkdir(parents=True, exist_ok=True)
    (cdir / store.TRACE_FILE).unlink(missing_ok=True)
    store.write_json(cdir / store.CASE_FILE, case)
    result = failed_result(case, reason, node=node, written_by="driver")
    store.write_json(cdir / store.RESULT_FILE, result)
    return result


# ------------------------------------------------------------------------------ on the node
class Board:
    """The run's small shared state: idle baselines per node and profile, and cases started.

    One actor per run, on the driver's node. Cases of one node never run at once (the node slot),
    so the first case of a profile there measures the baseline and the next ones find it here.
    """

    def __init__(self, idle: dict | None = None):
        self.idle: dict[str, dict[str, dict]] = {
            k: dict(v) for k, v in (idle or {}).items() if isinstance(v, dict)
        }
        self.started: list[tuple[str, str]] = []

    def idle_for(self, node: str, profile: str) -> dict | None:
        return self.idle.get(node, {}).get(profile)

    def put_idle(self, node: str, profile: str, entry: dict) -> None:
        self.idle.setdefault(node, {})[profile] = entry

    def all_idle(self) -> dict[str, dict[str, dict]]:
        return self.idle

    def start(self, case_id: str, node: str) -> None:
        self.started.append((case_id, node))

    def drain(self) -> list[tuple[str, str]]:
        out, self.started = self.started, []
        return out


def _call(board, method: str, *args, timeout_s: float = 60.0):
    """Call the board; a lost board (its node died) costs the cache, never the case."""
    import ray

    if board is None:
        return None
    try:
        return ray.get(getattr(board, method).remote(*args), timeout=timeout_s)
    except Exception:
        return None


def _node_lock(run_id: str, wait_s: float, poll_s: float = 1.0):
    """Take this machine's measurement lock, unless this run's own driver holds it here.

    Another run holding it (a local run on this node) is waited for, at most ``wait_s``: two
    harness drivers sharing a cluster could otherwise each hold what the other waits for.
    """
    from harness.lock import MachineLock, describe_holder

    deadline = time.monotonic() + wait_s
    while True:
        lock = MachineLock(run_id, wait=False)
        try:
            lock.acquire()
            return lock
        except HarnessError:
            holder = lock.holder() or {}
            if holder.get("run_id") == run_id:
                return None  # the driver runs on this machine and holds it for the whole run
        if time.monotonic() >= deadline:
            raise HarnessError(
                f"this machine stayed busy with another run ({describe_holder(holder)}) "
                f"for {wait_s:g} s; the case was not run"
            )
        time.sleep(poll_s)


def _scratch_dir() -> Path:
    """A fresh folder for one case on this node, after removing those of killed tasks.

    A task killed with SIGKILL never cleans up; its folder is named after its pid, so the next
    task on the node removes it once that process is gone.
    """
    import psutil

    parent = Path(tempfile.gettempdir()) / "energy-harness-ray"
    parent.mkdir(parents=True, exist_ok=True)
    for old in parent.glob("task-*"):
        pid = old.name.split("-")[1]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"task-{os.getpid()}-", dir=parent))


def _localise(case: dict) -> tuple[dict, list[str]]:
    """The case as this node runs it: a cuda profile uses the GPU Ray gave the task (cuda:0)."""
    import ray

    from harness.hardware import parse_device

    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    hw = case.get("hardware") or {}
    if parse_device(hw.get("device", "cpu"))[0] != "cuda":
        return case, gpu_ids
    return {**case, "hardware": {**hw, "device": "cuda:0"}}, gpu_ids


def run_case_task(
    case: dict,
    run_id: str,
    board,
    artifacts: dict[str, bytes] | None,
    workdir: str | None,
    driver_version: str | None,
) -> dict:
    """The body of a case's Ray task: measure the case on this node, send its files back."""
    import ray

    import harness
    from harness.runner import execute_case, measure_idle

    node_id = ray.get_runtime_context().get_node_id()
    node = node_name(socket.gethostname(), node_id)
    _call(board, "start", case["case_id"], node, timeout_s=10.0)
    if driver_version and driver_version != harness.__version__:
        raise HarnessError(
            f"node {node} runs energy-harness {harness.__version__}, the driver {driver_version}: "
            "install the same version on every node"
        )
    measurement = case.get("measurement") or {}
    lock = _node_lock(run_id, wait_s=float(measurement.get("case_timeout_s") or 600))
    scratch = _scratch_dir()
    try:
        here, gpu_ids = _localise(case)
        profile = (case.get("hardware") or {}).get("name") or "?"
        idle_s = float(measurement.get("idle_s") or 0)
        idle, new_idle = None, None
        if idle_s > 0:
            idle = _call(board, "idle_for", node, profile)
            if idle is None:
                idle = new_idle = measure_idle(measurement, idle_s)
                _call(board, "put_idle", node, profile, idle)
        write_tree(scratch / ARTIFACTS, artifacts or {})
        before = _stamp(scratch / ARTIFACTS)
        wd = Path(workdir) if workdir and Path(workdir).is_dir() else None
        started_unix = time.time()
        result = execute_case(here, scratch, (idle or {}).get("watts"), run_id=run_id, workdir=wd)
        finished_unix = time.time()
        result = dict(result)
        result["node"] = node
        for record in result.get("repetitions") or []:
            record["node"] = node
        result["ray"] = {
            "node": node,
            "node_id": node_id,
            "hostname": socket.gethostname(),
            "gpu_ids": gpu_ids,
            "device_as_suite": (case.get("hardware") or {}).get("device"),
            "task_pid": os.getpid(),
            "started_unix": started_unix,
            "finished_unix": finished_unix,
        }
        cdir = store.case_dir(scratch, case["case_id"])
        files = read_tree(cdir, skip={store.RESULT_FILE})
        if sum(len(v) for v in files.values()) > CASE_FILES_LIMIT_BYTES:
            raise HarnessError(f"case folder on {node} is larger than the transfer limit")
        after = _stamp(scratch / ARTIFACTS)
        changed = {rel for rel, st in after.items() if before.get(rel) != st}
        new_artifacts = {
            rel: data for rel, data in read_tree(scratch / ARTIFACTS).items() if rel in changed
        }
        return {
            "node": node,
            "result": result,
            "files": files,
            "artifacts": new_artifacts,
            "idle": {"node": node, "profile": profile, "entry": new_idle} if new_idle else None,
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if lock is not None:
            lock.release()


# ------------------------------------------------------------------------------ the driver
def _quiet() -> dict:
    return {"log_to_driver": False, "logging_level": logging.WARNING}


def _reachable(address: str) -> bool:
    host, sep, port = address.rpartition(":")
    if address.startswith("ray://") or not sep or not port.isdigit():
        return True  # not host:port: let Ray judge it
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError:
        return False
    return True


def _unreachable(address: str) -> HarnessError:
    return HarnessError(
        f"--ray {address}: no Ray head answers there; "
        "start one with ray start --head (see docs/distributed.md)"
    )


def _auto_address() -> str | None:
    """The cluster ``auto`` means (RAY_ADDRESS, or the one ``ray start`` left on this machine)."""
    try:
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:  # a Ray without it: let ray.init look
        return "auto"
    try:
        return canonicalize_bootstrap_address("auto")
    except ConnectionError:
        return None


def _keeping_signal_handlers(init: Callable[[], Any]) -> None:
    """Call ``ray.init`` but keep this process's SIGTERM and SIGINT handlers.

    Ray's driver installs its own (a SIGTERM ends the process at once); the runner's turn SIGTERM
    into an orderly stop that cancels the cases in flight and marks the manifest interrupted.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        init()
        return
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        init()
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)


def connect(address: str | None) -> bool:
    """Connect this driver to Ray. Returns True when it did (and so must shut down after).

    ``auto`` (or nothing): the cluster named by RAY_ADDRESS or started on this machine with
    ``ray start``, else a Ray instance of its own on this machine, whose one node declares
    ``harness_node: 1``. ``local``: always an instance of its own. Anything else: that address.
    Nothing answering at an address is one line at once, not Ray's minutes of retries.
    """
    ray = require_ray()
    if ray.is_initialized():
        return False
    address = (address or "auto").strip()
    if address == "auto":
        found = _auto_address()
        if found is not None and found != "auto" and not _reachable(found):
            if os.environ.get("RAY_ADDRESS"):
                raise _unreachable(found)
            found = None  # a stale record of a cluster that is gone
        address = found or "local"
    if address != "local":
        if not _reachable(address):
            raise _unreachable(address)
        try:
            _keeping_signal_handlers(lambda: ray.init(address=address, **_quiet()))
        except (ConnectionError, ValueError, RuntimeError) as e:
            line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise HarnessError(f"--ray {address}: cannot connect ({line})") from None
        return True
    _keeping_signal_handlers(
        lambda: ray.init(
            address="local",
            include_dashboard=False,
            resources={NODE_RESOURCE: 1},
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            **_quiet(),
        )
    )
    return True


class _Dispatch:
    """The driver's loop: submit the cases that can run, collect what comes back."""

    def __init__(self, ray, cases, run_dir, run_id, workdir, on_start, on_result):
        import harness

        self.ray = ray
        self.cases = {c["case_id"]: c for c in cases}
        self.order = [c["case_id"] for c in cases]
        self.run_dir = Path(run_dir)
        self.run_id = run_id
        self.workdir = str(workdir) if workdir is not None else None
        self.on_start = on_start
        self.on_result = on_result
        self.version = harness.__version__
        self.deps = dependencies(cases)
        self.waiting = [cid for cid in self.order if cid in self.deps]
        self.ready = [cid for cid in self.order if cid not in self.deps]
        self.in_flight: dict[Any, str] = {}  # ObjectRef -> case id
        self.node_of: dict[str, str] = {}  # case id -> node, once started
        self.overridden: dict[str, str] = {}  # case id -> our own reason (cancelled by us)
        self.trained: dict[str, Any] = {}  # train case id -> ObjectRef of its checkpoint files
        self.on_disk: dict[str, Any] = {}  # model name -> ObjectRef of artifacts/models/<name>
        self.idle = self._read_idle()
        self.board = None
        self.remote = ray.remote(run_case_task)

    # -- idle.json, keyed by node then profile
    def _read_idle(self) -> dict:
        """idle.json as it is (a local session of the run may have added profile keys)."""
        try:
            data = store.read_json(self.run_dir / store.IDLE)
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save_idle(self, by_node: dict) -> None:
        changed = False
        for node, profiles in (by_node or {}).items():
            for profile, entry in profiles.items():
                if self.idle.get(node, {}).get(profile) != entry:
                    self.idle.setdefault(node, {})[profile] = entry
                    changed = True
        if changed:
            store.write_json(self.run_dir / store.IDLE, self.idle)

    def _node_idle(self) -> dict:
        # node names hold a '/', which profile names may not: the two kinds of key never mix
        return {k: v for k, v in self.idle.items() if "/" in k and isinstance(v, dict)}

    def _start_board(self) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = self.ray.get_runtime_context().get_node_id()
        self.board = (
            self.ray.remote(Board)
            .options(
                num_cpus=0,
                max_restarts=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=True),
            )
            .remote(self._node_idle())
        )

    def _nodes(self) -> list[dict]:
        return self.ray.nodes()

    def _finish(self, cid: str, result: dict) -> None:
        if self.on_result is not None:
            self.on_result(self.cases[cid], result)

    def _fail(self, cid: str, reason: str) -> None:
        result = write_failed(self.run_dir, self.cases[cid], reason, self.node_of.get(cid))
        self._finish(cid, result)

    def _artifacts_for(self, cid: str):
        dep = self.deps.get(cid)
        if dep is not None and dep in self.trained:
            return self.trained[dep]
        name = (self.cases[cid].get("model") or {}).get("name")
        if name not in self.on_disk:
            files = model_artifacts(self.run_dir / ARTIFACTS, self.cases[cid])
            if not files:
                return None
            self.on_disk[name] = self.ray.put(files)
        return self.on_disk[name]

    def _submit(self, live: list[dict[str, float]]) -> None:
        while self.ready:
            cid = self.ready.pop(0)
            case = self.cases[cid]
            needs = case_needs(case)
            if not any(offers(r, needs) for r in live):
                self._fail(cid, f"no live node of the Ray cluster offers {describe_needs(needs)}")
                self._release(cid)
                continue
            ref = self.remote.options(**task_options(case)).remote(
                case, self.run_id, self.board, self._artifacts_for(cid), self.workdir, self.version
            )
            self.in_flight[ref] = cid

    def _release(self, finished: str) -> None:
        """Cases that waited for ``finished`` (a train case) may go now."""
        for cid in list(self.waiting):
            if self.deps.get(cid) == finished:
                self.waiting.remove(cid)
                self.ready.append(cid)
        self.ready.sort(key=self.order.index)

    def _started(self) -> None:
        for cid, node in _call(self.board, "drain", timeout_s=10.0) or []:
            if cid in self.cases and cid not in self.node_of:
                self.node_of[cid] = node
                if self.on_start is not None:
                    self.on_start(self.cases[cid])

    def _collect(self, ref) -> None:
        cid = self.in_flight.pop(ref)
        try:
            payload = self.ray.get(ref)
        except self.ray.exceptions.RayError as e:
            self._started()  # it may have started (and said where) just before it died
            reason = self.overridden.get(cid) or failure_reason(e, self.node_of.get(cid))
            self._fail(cid, reason)
            self._release(cid)
            return
        self.node_of[cid] = payload.get("node")
        new_idle = payload.get("idle")
        if new_idle:
            self._save_idle({new_idle["node"]: {new_idle["profile"]: new_idle["entry"]}})
        artifacts = payload.get("artifacts") or {}
        if artifacts:
            replace_artifacts(self.run_dir / ARTIFACTS, artifacts)
            self.on_disk.clear()
            self.trained[cid] = self.ray.put(artifacts)
        result = write_case_files(self.run_dir, self.cases[cid], payload)
        self._finish(cid, result)
        self._release(cid)

    def _check_placement(self, live: list[dict[str, float]]) -> None:
        """Cancel waiting tasks that no live node can run any more (their node died)."""
        for ref, cid in list(self.in_flight.items()):
            if cid in self.node_of or cid in self.overridden:
                continue
            needs = case_needs(self.cases[cid])
            if not any(offers(r, needs) for r in live):
                self.overridden[cid] = (
                    f"no live node of the Ray cluster offers {describe_needs(needs)} any more"
                )
                self.ray.cancel(ref, force=False)

    def run(self) -> None:
        nodes = self._nodes()
        check_nodes(nodes)
        self._start_board()
        self._submit(live_resources(nodes))
        last_check = time.monotonic()
        try:
            while self.in_flight or self.ready:
                done = []
                if self.in_flight:
                    done, _ = self.ray.wait(
                        list(self.in_flight), num_returns=len(self.in_flight), timeout=POLL_S
                    )
                self._started()
                for ref in done:
                    self._collect(ref)
                if self.ready or time.monotonic() - last_check > PLACEMENT_CHECK_S:
                    live = live_resources(self._nodes())
                    self._check_placement(live)
                    self._submit(live)
                    last_check = time.monotonic()
            for cid in list(self.waiting):  # a dependency that never came back
                self.waiting.remove(cid)
                self._fail(cid, "its train case never finished")
        except BaseException:
            for ref in self.in_flight:
                self.ray.cancel(ref, force=True)
            raise
        finally:
            if self.board is not None:
                # baselines of cases that then died on their node are still baselines
                self._save_idle(_call(self.board, "all_idle", timeout_s=10.0) or {})
                try:
                    self.ray.kill(self.board)
                except Exception:
                    pass


def run_cases(
    cases: list[dict],
    run_dir: Path,
    *,
    address: str | None = "auto",
    run_id: str | None = None,
    suite=None,
    workdir: Path | None = None,
    on_start: OnCase | None = None,
    on_result: OnResult | None = None,
) -> None:
    """Run ``cases`` on a Ray cluster, each result written into ``run_dir`` as it comes back.

    The runner calls this for ``harness run --ray``, after taking the lock and writing the
    manifest; ``cases`` are the pending ones (so ``--resume`` dispatches only those). ``suite``
    is accepted for symmetry with the local path; each case carries its measurement settings.
    """
    if not cases:
        return
    ray = require_ray()
    for case in cases:
        case_needs(case)  # a bad resources entry is one line now, not a Ray error later
    joined = connect(address)
    try:
        _Dispatch(
            ray, cases, run_dir, run_id or Path(run_dir).name, workdir, on_start, on_result
        ).run()
    finally:
        if joined:
            ray.shutdown()
