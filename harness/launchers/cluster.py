"""Running cases on a cluster, the parts that need no Ray: placement, checkpoints, files.

``launchers/ray.py`` drives Ray; this module holds what it decides and moves without it, so it
can be read and tested on a laptop. Placement: the resources a case takes (``harness_node``, the
one per node that keeps measurements apart, a GPU for a cuda profile, a profile's own). Which case
loads which train case's checkpoint. A node's scratch run folder, the files a task sends back and
how the driver writes them into its one run folder (``result.json`` last), and the machine lock a
task takes on its node.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from pathlib import Path, PurePosixPath

from harness import store
from harness.errors import HarnessError
from harness.launchers import loads_checkpoint_of
from harness.workloads import makes_model

#: the per-node resource every node declares once and every case takes whole
NODE_RESOURCE = "harness_node"
#: Ray resource names a profile may not ask for by name (CPU and GPU it may: they map to options)
RAY_RESERVED = ("memory", "object_store_memory")
ARTIFACTS = "artifacts"
#: the most a case's files and checkpoint may weigh (and at most half the smallest object store)
CASE_FILES_LIMIT_BYTES = 512 * 2**20


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
        "num_returns": 2,  # the case's payload, and its checkpoint for the cases that load it
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


def unplaceable(case: dict, live: list[dict[str, float]]) -> str | None:
    """Why no live node can run ``case`` (Ray would leave it pending forever), or None."""
    needs = case_needs(case)
    if any(offers(r, needs) for r in live):
        return None
    return f"no live node of the Ray cluster offers {describe_needs(needs)}"


def live_resources(nodes: list[dict]) -> list[dict[str, float]]:
    return [dict(n.get("Resources") or {}) for n in nodes if n.get("Alive")]


def transfer_limit_bytes(nodes: list[dict]) -> int:
    """What one case may send back: the cap, or half the smallest live object store under it.

    A task's return values live in its node's object store; past it Ray spills or fails, so a
    case that would not fit fails with its size instead (a local instance has 256 MiB).
    """
    stores = [r.get("object_store_memory") for r in live_resources(nodes)]
    return int(min([CASE_FILES_LIMIT_BYTES] + [s // 2 for s in stores if s]))


def check_version(node: str, driver_version: str | None, here: str) -> None:
    if driver_version and driver_version != here:
        raise HarnessError(
            f"node {node} runs energy-harness {here}, the driver {driver_version}: "
            "install the same version on every node"
        )


def merge_idle(idle: dict, by_node: dict | None) -> bool:
    """Add ``{node: {profile: entry}}`` baselines into idle.json's dict; True when it changed."""
    changed = False
    for node, profiles in (by_node or {}).items():
        for profile, entry in profiles.items():
            if idle.get(node, {}).get(profile) != entry:
                idle.setdefault(node, {})[profile] = entry
                changed = True
    return changed


# ------------------------------------------------------------------------------ files
def _safe_relpath(name: str) -> PurePosixPath:
    rel = PurePosixPath(name)
    if rel.is_absolute() or not rel.parts or any(p in ("", ".", "..") for p in rel.parts):
        raise HarnessError(f"a node sent back a file with an unsafe name: {name!r}")
    return rel


def read_tree(folder: Path, skip: set[str] | None = None) -> dict[str, bytes]:
    """Every file under ``folder`` by relative POSIX path (skipping names in ``skip``)."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
        and not p.is_symlink()
        and p.relative_to(folder).as_posix() not in (skip or ())
    }


def write_tree(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        store.write_bytes(Path(folder) / _safe_relpath(name), data)


def replace_artifacts(artifacts_dir: Path, files: dict[str, bytes]) -> None:
    """Put a node's new artifacts into the run's, each model folder (``models/<name>``) swapped
    whole, so that an older, larger checkpoint's files never linger beside the new one."""
    groups: dict[str, dict[str, bytes]] = {}
    for rel, data in files.items():
        parts = _safe_relpath(rel).parts
        prefix = "/".join(parts[:2]) if len(parts) >= 2 else rel
        groups.setdefault(prefix, {})[PurePosixPath(rel).relative_to(prefix).as_posix()] = data
    for prefix, group in groups.items():
        target = Path(artifacts_dir) / prefix
        if list(group) == ["."]:  # a plain file at the top
            store.write_bytes(target, group["."])
            continue
        staging = store.staging_folder(target)
        write_tree(staging, group)
        store.replace_folder(staging, target)


def model_artifacts(artifacts_dir: Path, case: dict) -> dict[str, bytes]:
    """The trained checkpoint a builtin model's case would load here, as files (or nothing)."""
    name = loads_checkpoint_of(case)  # training starts from the seeded initialisation: None
    if name is None:
        return {}
    prefix = f"models/{name}"
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
    store.write_json(cdir / store.RESULT_FILE, payload["result"])
    return payload["result"]


# ------------------------------------------------------------------------------ on a node
def node_lock(run_id: str, wait_s: float, poll_s: float = 1.0):
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


def scratch_dir() -> Path:
    """A fresh folder for one case on this node, after removing those of killed tasks (a task
    killed with SIGKILL never cleans up; its folder is named after its pid)."""
    import psutil

    parent = Path(tempfile.gettempdir()) / "energy-harness-ray"
    parent.mkdir(parents=True, exist_ok=True)
    for old in parent.glob("task-*"):
        pid = old.name.split("-")[1]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"task-{os.getpid()}-", dir=parent))


def model_artifacts_of(scratch: Path, case: dict, ok: bool) -> dict[str, bytes]:
    """What a train case saved in its scratch run folder (nothing when it failed)."""
    name = (case.get("model") or {}).get("name")
    folder = scratch / ARTIFACTS / "models" / str(name)
    return {f"models/{name}/{k}": v for k, v in read_tree(folder).items()} if ok else {}


def measure_on_node(
    case, *, node, run_id, checkpoint, workdir, limit_bytes, idle_for, put_idle
) -> tuple[dict, dict | None]:
    """Measure ``case`` here, on a cluster node, in a scratch run folder; return what to send back.

    Takes this machine's lock (unless the run's driver holds it here), measures the profile's
    idle baseline unless ``idle_for(profile)`` knows it (then ``put_idle`` shares it), runs the
    case's worker (``process.execute_case``) and returns ``(payload, trained)``: the result and
    case files, and for a train case its checkpoint (``{"status", "error", "case", "files"}``)
    for the cases that load it. Past ``limit_bytes`` (what the object store can carry) the case
    fails with the sizes rather than the node's memory.
    """
    from harness.launchers import measure_idle
    from harness.launchers.process import execute_case

    measurement = case.get("measurement") or {}
    lock = node_lock(run_id, wait_s=float(measurement.get("case_timeout_s") or 600))
    scratch = scratch_dir()
    try:
        profile = (case.get("hardware") or {}).get("name") or "?"
        idle_s = float(measurement.get("idle_s") or 0)
        idle = new_idle = None
        if idle_s > 0:
            idle = idle_for(profile)
            if idle is None:
                idle = new_idle = measure_idle(measurement, idle_s)
                put_idle(profile, idle)
        write_tree(scratch / ARTIFACTS, (checkpoint or {}).get("files") or {})
        wd = Path(workdir) if workdir and Path(workdir).is_dir() else None
        started_unix = time.time()
        result = execute_case(case, scratch, (idle or {}).get("watts"), run_id=run_id, workdir=wd)
        times = {"started_unix": started_unix, "finished_unix": time.time()}
        result = {**result, "node": node}
        for record in result.get("repetitions") or []:
            record["node"] = node
        files = read_tree(store.case_dir(scratch, case["case_id"]), skip={store.RESULT_FILE})
        trained = None
        if makes_model((case.get("workload") or {}).get("type")):
            ok = result.get("status") == store.OK
            trained = {"status": result.get("status"), "error": result.get("error")}
            trained.update(case=case.get("case"), files=model_artifacts_of(scratch, case, ok))
        size = sum(len(v) for v in [*files.values(), *(trained or {}).get("files", {}).values()])
        if size > limit_bytes:
            raise HarnessError(
                f"case folder and checkpoint on {node} weigh {size / 2**20:.0f} MiB, more than "
                f"the {limit_bytes / 2**20:.0f} MiB the cluster's object store can carry"
            )
        idle_entry = {"node": node, "profile": profile, "entry": new_idle} if new_idle else None
        payload = {"node": node, "result": result, "files": files, "idle": idle_entry}
        return {**payload, "times": times}, trained
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if lock is not None:
            lock.release()


# ------------------------------------------------------------------------------ addresses
def reachable(address: str) -> bool:
    host, sep, port = address.rpartition(":")
    if address.startswith("ray://") or not sep or not port.isdigit():
        return True  # not host:port: let Ray judge it
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError:
        return False
    return True


def unreachable(address: str) -> HarnessError:
    return HarnessError(
        f"--ray {address}: no Ray head answers there; "
        "start one with ray start --head (see docs/distributed.md)"
    )


def check_address(address: str | None) -> None:
    """A host:port where nothing answers is refused at once, not after Ray's minutes of retries."""
    address = (address or "auto").strip()
    if address not in ("auto", "local") and not reachable(address):
        raise unreachable(address)
