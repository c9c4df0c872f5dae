"""A fork server: a process that has imported torch, transformers and lm-eval once, and forks a
fresh worker per case from there.

A worker started with ``python -m harness.worker`` pays those imports (4 to 6 s on 2 cores) for
every case; a forked one finds them done. Each case still gets a process of its own (its own
process group, memory, crash and timeout), so nothing of one case reaches the next: the server
itself never runs a case, never touches a GPU (importing torch makes no CUDA context; forking
after one would be unsafe) and never computes, so no thread pool exists to be broken by a fork.

Protocol, over a Unix socket pair: the runner sends one JSON request per case (the worker's
arguments, environment, working folder and the case as text) with the file descriptor of the
worker's log attached (SCM_RIGHTS), and gets back ``{"pid": N}`` when the worker is forked and
``{"pid": N, "status": S}`` (``os.waitpid``'s status) when it has ended. The server dies with
the runner (``PR_SET_PDEATHSIG``), and a worker with the server, which takes its group along.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from harness.worker import BASE_IMPORTS

#: what every worker imports (the server of a run of command cases only loads just these)
BASE_PRELOAD = BASE_IMPORTS
_MAX_MESSAGE = 1 << 24


def _die_with(parent_pid: int) -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass
    if os.getppid() != parent_pid:
        os._exit(1)


def _receive(sock: socket.socket) -> tuple[dict | None, list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(sock, _MAX_MESSAGE, 4)
    if not data:
        return None, fds
    return json.loads(data), fds


def _exec_worker(request: dict, log_fd: int) -> None:
    """In the forked child: become the case's worker, then exit with its status."""
    status = 1
    try:
        os.setsid()  # its own process group: the runner kills the whole group on timeout
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        read_end, write_end = os.pipe()
        os.dup2(read_end, 0)
        os.close(read_end)
        case_bytes = request.get("stdin", "").encode()
        with os.fdopen(write_end, "wb") as w:  # small: a pipe's buffer holds a case
            w.write(case_bytes)
        sys.stdin = os.fdopen(0, "r", closefd=False)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        env = request["env"]
        os.environ.clear()
        os.environ.update(env)
        # the case's PYTHONPATH (plugins, a test's modules) joins the server's import path
        for entry in reversed([p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]):
            if entry not in sys.path:
                sys.path.insert(0, entry)
        if request.get("cwd"):
            os.chdir(request["cwd"])
        torch = sys.modules.get("torch")
        if torch is not None:
            # the intra-op thread pool's state came over with the fork, its threads did not:
            # size it afresh (the profile's threads, else torch's default, as the server has it)
            torch.set_num_threads(int(env.get("OMP_NUM_THREADS") or 0) or torch.get_num_threads())
        gc.enable()
        from harness import worker

        status = worker.main(request["argv"])
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        status = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        os._exit(status)


def serve(sock: socket.socket, preload: list[str]) -> None:
    """The server's loop: import ``preload``, say ready, then fork one worker per request."""
    for name in preload:
        try:
            importlib.import_module(name)
        except Exception as e:  # the worker will meet the same error and report it for its case
            print(f"fork server: {name} not preloaded: {e}", file=sys.stderr)
    gc.collect()
    gc.freeze()  # what the imports made is shared with each fork, never copied by a collection
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        # a CUDA context does not survive a fork: say so, and the runner starts workers afresh
        sock.sendall(json.dumps({"refused": "CUDA was initialised by the imports"}).encode())
        return
    sock.sendall(json.dumps({"ready": os.getpid()}).encode())
    while True:
        request, fds = _receive(sock)
        if request is None:
            return  # the runner closed its end
        pid = os.fork()
        if pid == 0:
            sock.close()
            _exec_worker(request, fds[0])
        for fd in fds:
            os.close(fd)
        sock.sendall(json.dumps({"pid": pid}).encode())
        _, status = os.waitpid(pid, 0)
        sock.sendall(json.dumps({"pid": pid, "status": status}).encode())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    fd, parent_pid, preload = int(argv[0]), int(argv[1]), argv[2:]
    _die_with(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the runner's to handle
    serve(socket.socket(fileno=fd), preload)
    return 0


# ------------------------------------------------------------------------------ the runner's side
class ForkedWorker:
    """A worker forked by the server, waited for like a ``subprocess.Popen``."""

    def __init__(self, server: ForkServer, pid: int):
        self.server, self.pid, self.returncode = server, pid, None

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            status = self.server._reply(timeout, cmd=f"worker {self.pid}")["status"]
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


class ForkServer:
    """The runner's handle on its fork server: started once per run, closed at its end."""

    def __init__(self, preload: list[str] | tuple[str, ...] = BASE_PRELOAD, *, env=None):
        self.preload = list(preload)
        # SEQPACKET: each reply is one message, however fast a worker ends after its start
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ if env is None else env)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        # torch.cuda.is_available() during an import then asks NVML, not the CUDA driver, so
        # the server stays free of CUDA state that its forked workers would inherit broken
        env.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
        t0 = time.monotonic()
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "harness.launchers.forkserver",
                str(theirs.fileno()),
                str(os.getpid()),
                *self.preload,
            ],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            env=env,
        )
        theirs.close()
        self.pid = self._proc.pid
        try:
            hello = self._reply(None, cmd="fork server start")
            if "ready" not in hello:
                raise OSError(f"the fork server refused: {hello.get('refused')}")
        except BaseException:
            self.close()
            raise
        #: seconds the server took to start and import its preload
        self.startup_s = time.monotonic() - t0

    def _reply(self, timeout: float | None, cmd: str) -> dict:
        self._sock.settimeout(timeout)
        try:
            data = self._sock.recv(_MAX_MESSAGE)
        except TimeoutError:
            raise subprocess.TimeoutExpired(cmd, timeout) from None
        if not data:
            raise OSError(f"the fork server (pid {self.pid}) ended")
        return json.loads(data)

    def start(self, argv: list[str], env: dict[str, str], cwd, stdin: str, log) -> ForkedWorker:
        """Fork a worker running ``python -m harness.worker argv``; its output goes to ``log``."""
        request = {"argv": argv, "env": env, "cwd": str(cwd) if cwd else None, "stdin": stdin}
        self._sock.settimeout(None)
        socket.send_fds(self._sock, [json.dumps(request).encode()], [log.fileno()])
        return ForkedWorker(self, self._reply(60, cmd="fork")["pid"])

    def close(self) -> None:
        try:
            self._sock.close()
        finally:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> ForkServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == "__main__":
    sys.exit(main())
