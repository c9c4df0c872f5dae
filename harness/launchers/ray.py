"""Cases on a Ray cluster, a Ray task per case: ``harness run SUITE --ray [ADDRESS]``.

The only module that imports Ray; what needs no Ray (placement needs, checkpoints, the files a
task sends back, the node's lock) is in ``cluster.py``. Ray's own means schedule: every case takes
its node's one ``harness_node`` (so measurements never overlap on a node), a GPU for a cuda
profile and its profile's ``resources``; a case that loads a trained builtin model is given its
train task's checkpoint ObjectRef, so Ray runs it after, and a failed train case fails it with
the reason instead of it measuring untrained weights. Ray would leave a case that no live node can
run pending forever: the driver checks. The run's *board* actor keeps the idle baselines per node
and profile and tells the driver when a case starts. Tasks never retry: no case runs twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

from harness import launchers, store
from harness.errors import HarnessError
from harness.launchers import Job, cluster
from harness.workloads import makes_model

RAY_MISSING = "--ray needs Ray: pip install 'energy-harness[ray]'"
#: object store of a Ray instance started by the driver itself: results and tiny checkpoints
LOCAL_OBJECT_STORE_BYTES = 256 * 2**20
#: how often the driver checks that a waiting case still has a live node that can run it
PLACEMENT_CHECK_S = 5.0


def require_ray():
    """The ``ray`` module, or the one-line error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise HarnessError(RAY_MISSING) from None
    return ray


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


class Board:
    """The run's idle baselines per node and profile, and the cases started: an async actor on
    the driver's node; ``next_started`` returns once a case starts, so nobody polls."""

    def __init__(self, idle: dict | None = None):
        self.idle = {k: dict(v) for k, v in (idle or {}).items() if isinstance(v, dict)}
        self.started: list[tuple[str, str]] = []
        self._news = asyncio.Event()  # bound to the actor's loop on first use

    async def idle_for(self, node: str, profile: str) -> dict | None:
        return self.idle.get(node, {}).get(profile)

    async def put_idle(self, node: str, profile: str, entry: dict) -> None:
        self.idle.setdefault(node, {})[profile] = entry

    async def all_idle(self) -> dict[str, dict[str, dict]]:
        return self.idle

    async def start(self, case_id: str, node: str) -> None:
        self.started.append((case_id, node))
        self._news.set()

    async def drain(self) -> list[tuple[str, str]]:
        out, self.started = self.started, []
        self._news.clear()
        return out

    async def next_started(self) -> list[tuple[str, str]]:
        await self._news.wait()
        return await self.drain()


def _call(board, method: str, *args, timeout_s: float = 60.0):
    """Call the board; a lost board (its node died) costs the cache, never the case."""
    import ray

    if board is None:
        return None
    try:
        return ray.get(getattr(board, method).remote(*args), timeout=timeout_s)
    except Exception:
        return None


def measure_case_on_node(case, run_id, board, checkpoint, workdir, driver_version, limit_bytes):
    """The body of a case's Ray task: measure the case on this node, send its files back.

    Returns (payload, checkpoint); see ``cluster.measure_on_node``. A dependant whose train case
    failed gets a failed checkpoint and is not run.
    """
    import ray

    import harness
    from harness.hardware import parse_device

    node_id = ray.get_runtime_context().get_node_id()
    node = cluster.node_name(socket.gethostname(), node_id)
    _call(board, "start", case["case_id"], node, timeout_s=10.0)
    cluster.check_version(node, driver_version, harness.__version__)
    if checkpoint is not None and checkpoint.get("status") != store.OK:
        reason = launchers.not_run(checkpoint["case"], checkpoint["error"])
        result = launchers.failed_result(case, reason, node=node)
        return {"node": node, "result": result, "files": {}}, None
    hw = case.get("hardware") or {}
    here = case  # a cuda profile runs on the GPU Ray gave the task, as cuda:0
    if parse_device(hw.get("device", "cpu"))[0] == "cuda":
        here = {**case, "hardware": {**hw, "device": "cuda:0"}}
    payload, trained = cluster.measure_on_node(
        here,
        node=node,
        run_id=run_id,
        checkpoint=checkpoint,
        workdir=workdir,
        limit_bytes=limit_bytes,
        idle_for=lambda profile: _call(board, "idle_for", node, profile),
        put_idle=lambda profile, entry: _call(board, "put_idle", node, profile, entry),
    )
    payload["result"]["ray"] = {
        "node": node,
        "node_id": node_id,
        "hostname": socket.gethostname(),
        "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        "device_as_suite": hw.get("device"),
        "task_pid": os.getpid(),
        **payload.pop("times"),
    }
    return payload, trained


# ------------------------------------------------------------------------------ the driver
def _auto_address() -> str | None:
    """The cluster ``auto`` means (RAY_ADDRESS, or the one ``ray start`` left on this machine)."""
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address("auto")
    except ImportError:  # a Ray without it: let ray.init look
        return "auto"
    except ConnectionError:
        return None


def _init_keeping_signal_handlers(**kwargs) -> None:
    """``ray.init`` but keep this process's SIGTERM and SIGINT handlers: Ray's driver installs its
    own (a SIGTERM ends the process at once); the runner's stop the run in order instead."""
    import signal
    import threading

    import ray

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        ray.init(log_to_driver=False, logging_level=logging.WARNING, **kwargs)
    finally:
        if threading.current_thread() is threading.main_thread():
            for sig, handler in saved.items():
                if handler is not None:
                    signal.signal(sig, handler)


def connect(address: str | None) -> bool:
    """Connect this driver to Ray; True when it did (and so must shut down after). ``auto``: the
    cluster of RAY_ADDRESS or of ``ray start`` here, else an instance of its own (one node with
    ``harness_node: 1``), as ``local`` always; anything else: that address, if it answers."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    address = (address or "auto").strip()
    if address == "auto":
        found = _auto_address()
        if found is not None and found != "auto" and not cluster.reachable(found):
            if os.environ.get("RAY_ADDRESS"):
                raise cluster.unreachable(found)
            found = None  # a stale record of a cluster that is gone
        address = found or "local"
    if address == "local":
        _init_keeping_signal_handlers(
            address="local",
            include_dashboard=False,
            resources={cluster.NODE_RESOURCE: 1},
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
        )
        return True
    if not cluster.reachable(address):
        raise cluster.unreachable(address)
    try:
        _init_keeping_signal_handlers(address=address)
    except (ConnectionError, ValueError, RuntimeError) as e:
        line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HarnessError(f"--ray {address}: cannot connect ({line})") from None
    return True


class Launcher:
    """A Ray task per case; results are yielded as the tasks come back."""

    def __init__(self, address: str | None = "auto", **_options):
        self.address = address

    def preflight(self, cases: list[dict]) -> None:
        """Ray, the profiles' resources and the address: checked before a run folder exists."""
        require_ray()
        for case in cases:
            cluster.case_needs(case)
        cluster.check_address(self.address)

    def launch(self, cases: list[dict], job: Job) -> Iterator[tuple[dict, dict]]:
        if not cases:
            return
        ray = require_ray()
        joined = connect(self.address)
        try:
            yield from _Driver(ray, cases, job).results()
        finally:
            if joined:
                ray.shutdown()


class _Driver:
    """Submits every case at once (dependants with their train task's ObjectRef), then collects."""

    def __init__(self, ray, cases: list[dict], job: Job):
        self.ray, self.job = ray, job
        self.cases = {c["case_id"]: c for c in cases}
        self.order = {c["case_id"]: i for i, c in enumerate(cases)}
        self.deps = launchers.dependencies(cases)
        self.in_flight: dict[Any, str] = {}  # payload ObjectRef -> case id
        self.checkpoints: dict[str, Any] = {}  # train case id -> ObjectRef of its checkpoint
        self.node_of: dict[str, str] = {}  # case id -> node, once started
        self.failed: dict[str, str] = {}  # case id -> why it failed (train cases' reasons)
        self.overridden: dict[str, str] = {}  # case id -> our own reason (cancelled by us)
        self.idle = launchers.read_idle(job.run_dir)

    def _save_idle(self, by_node: dict) -> None:
        if cluster.merge_idle(self.idle, by_node):
            store.write_json(self.job.run_dir / store.IDLE, self.idle)

    def _start_board(self) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = self.ray.get_runtime_context().get_node_id()
        # node names hold a '/', which profile names may not: a local session's keys stay apart
        known = {k: v for k, v in self.idle.items() if "/" in k and isinstance(v, dict)}
        self.board = (
            self.ray.remote(Board)
            .options(
                num_cpus=0,
                max_restarts=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=True),
            )
            .remote(known)
        )

    def _checkpoint_for(self, cid: str, disk: dict[str, Any]):
        """The train task's checkpoint ref, or the run folder's checkpoint (a resumed run)."""
        if cid in self.deps:
            return self.checkpoints[self.deps[cid]]
        name = (self.cases[cid].get("model") or {}).get("name")
        if name not in disk:
            files = cluster.model_artifacts(self.job.run_dir / cluster.ARTIFACTS, self.cases[cid])
            disk[name] = self.ray.put({"status": store.OK, "files": files}) if files else None
        return disk[name]

    def _submit_all(self, nodes: list[dict]) -> Iterator[tuple[dict, dict]]:
        import harness

        task = self.ray.remote(measure_case_on_node)
        live, disk, limit = cluster.live_resources(nodes), {}, cluster.transfer_limit_bytes(nodes)
        workdir = str(self.job.workdir) if self.job.workdir is not None else None
        for cid, case in self.cases.items():
            reason = cluster.unplaceable(case, live)
            if reason is not None:
                yield self._fail(cid, reason)
                continue
            if cid in self.deps and self.deps[cid] in self.failed:
                yield self._fail(cid, launchers.not_run(*self._producer(cid)))
                continue
            payload, checkpoint = task.options(**cluster.task_options(case)).remote(
                case,
                self.job.run_id,
                self.board,
                self._checkpoint_for(cid, disk),
                workdir,
                harness.__version__,
                limit,
            )
            self.in_flight[payload] = cid
            self.checkpoints[cid] = checkpoint

    def _producer(self, cid: str) -> tuple[str, str]:
        return self.cases[self.deps[cid]]["case"], self.failed[self.deps[cid]]

    def _fail(self, cid: str, reason: str) -> tuple[dict, dict]:
        self.failed[cid], case, node = reason, self.cases[cid], self.node_of.get(cid)
        result = launchers.write_failed(self.job.run_dir, case, reason, node, written_by="driver")
        return case, result

    def _heard(self, started) -> None:
        for cid, node in started or []:
            if cid in self.cases and cid not in self.node_of:
                self.node_of[cid] = node
                self.job.started(self.cases[cid])

    def _collect(self, ref) -> tuple[dict, dict]:
        cid = self.in_flight.pop(ref)
        try:
            payload = self.ray.get(ref)
        except self.ray.exceptions.RayError as e:
            self._heard(_call(self.board, "drain", timeout_s=10.0))  # where it started, if it did
            if cid in self.overridden:
                return self._fail(cid, self.overridden[cid])
            if cid in self.deps and self.deps[cid] in self.failed and cid not in self.node_of:
                return self._fail(cid, launchers.not_run(*self._producer(cid)))  # Ray never ran it
            return self._fail(cid, failure_reason(e, self.node_of.get(cid)))
        self.node_of[cid] = payload.get("node")
        if entry := payload.get("idle"):
            self._save_idle({entry["node"]: {entry["profile"]: entry["entry"]}})
        case = self.cases[cid]
        if makes_model((case.get("workload") or {}).get("type")):
            trained = self.ray.get(self.checkpoints[cid])
            if trained.get("files"):
                cluster.replace_artifacts(self.job.run_dir / cluster.ARTIFACTS, trained["files"])
        result = cluster.write_case_files(self.job.run_dir, case, payload)
        if result.get("status") != store.OK:
            self.failed[cid] = result.get("error") or "failed"
        return case, result

    def _check_placement(self) -> None:
        """Cancel waiting tasks that no live node can run any more (their node died)."""
        live = cluster.live_resources(self.ray.nodes())
        for ref, cid in list(self.in_flight.items()):
            reason = cluster.unplaceable(self.cases[cid], live)
            if reason is not None and cid not in self.node_of and cid not in self.overridden:
                self.overridden[cid] = f"{reason} any more"
                self.ray.cancel(ref, force=False)

    def results(self) -> Iterator[tuple[dict, dict]]:
        nodes = self.ray.nodes()
        cluster.check_nodes(nodes)
        self._start_board()
        try:
            yield from self._submit_all(nodes)
            news, checked = self.board.next_started.remote(), time.monotonic()
            while self.in_flight:
                wait = [*self.in_flight] + ([news] if news is not None else [])
                done, _ = self.ray.wait(wait, num_returns=1, timeout=PLACEMENT_CHECK_S)
                if news in done:
                    try:
                        self._heard(self.ray.get(news))
                        news = self.board.next_started.remote()
                    except self.ray.exceptions.RayError:  # its node died: no notices, no cache
                        news = self.board = None
                ready, _ = self.ray.wait(
                    list(self.in_flight), num_returns=len(self.in_flight), timeout=0
                )
                # a train case before its dependants: their reason names its failure
                for ref in sorted(ready, key=lambda r: self.order[self.in_flight[r]]):
                    yield self._collect(ref)
                if time.monotonic() - checked >= PLACEMENT_CHECK_S:
                    self._check_placement()
                    checked = time.monotonic()
        except BaseException:
            for ref in self.in_flight:
                self.ray.cancel(ref, force=True)
            raise
        finally:
            # baselines of cases that then died on their node are still baselines
            self._save_idle(_call(self.board, "all_idle", timeout_s=10.0) or {})
            try:
                self.ray.kill(self.board)
            except Exception:
                pass
