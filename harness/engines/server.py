"""A model server's life: started in its own process group on 127.0.0.1, health-checked, stopped.

Every server engine (llama.cpp, vLLM, a suite's own command) goes through ``ServerProcess``:

- it listens on 127.0.0.1 only, on a port that was free a moment before (``free_port``), or on a
  port the suite names, refused in one line when something already listens there;
- it runs in its own process group (``setsid``) with the kernel told to kill it if the worker that
  started it dies (``PR_SET_PDEATHSIG``): a case killed on timeout or by Ctrl-C leaves no server;
- ``wait_healthy`` polls its health URL; a server that exits or never becomes healthy fails the
  case with the last lines of its log;
- ``check_alive`` says why a server died mid-window; ``stop`` ends the whole group (TERM, then KILL)
  by its group id, never by name.

Its output goes to a log file in the case folder (``server.log``), kept with the results.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from harness.errors import HarnessError

HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def check_port_free(port: int) -> None:
    """One line when ``port`` on 127.0.0.1 is taken (a server of ours could not bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            raise HarnessError(f"port {port} on {HOST} is in use; choose another port") from None


def port_to_use(port: int | None) -> int:
    """``port`` once it is checked free (one line when it is not), or a free one when None."""
    if port is None:
        return free_port()
    check_port_free(port)
    return port


def _own_group_and_die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def tail(path: Path, lines: int = 8) -> str:
    """The last ``lines`` non-blank lines of a log, joined by ' | ' (one line for an error)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept) if kept else "(empty log)"


class ServerProcess:
    """One server program, started by ``start`` and ended by ``stop`` (also a context manager)."""

    def __init__(
        self,
        command: Sequence[str],
        health_url: str,
        log_path: Path,
        env: dict[str, str] | None = None,
        name: str = "server",
    ):
        self.command = [str(c) for c in command]
        self.health_url = health_url
        self.log_path = Path(log_path)
        self.env = env
        self.name = name
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> ServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **(self.env or {})}
        # the log is the program's own output stream, appended to as it runs: not a results file
        log = self.log_path.open("ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            self.proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_own_group_and_die_with_parent,
                close_fds=True,
            )
        except OSError as e:
            raise HarnessError(f"{self.name}: cannot start {self.command[0]}: {e}") from None
        finally:
            log.close()
        return self

    def check_alive(self, wait_s: float = 0.0) -> None:
        """A HarnessError with the exit status and the log's last lines if the server died.

        ``wait_s``: after a broken connection, how long to give a dying server to exit, so that
        the error names the server's end rather than the connection it cut.
        """
        if self.proc is None:
            raise HarnessError(f"{self.name} was never started")
        if wait_s:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=wait_s)
        code = self.proc.poll()
        if code is not None:
            how = f"signal {-code}" if code < 0 else f"status {code}"
            raise HarnessError(
                f"{self.name} exited with {how}; its log ends: {tail(self.log_path)}"
            )

    def wait_healthy(self, timeout_s: float) -> float:
        """Seconds until the health URL answered 200; a HarnessError (with the log) otherwise."""
        t0 = time.monotonic()
        delay = 0.05
        while True:
            self.check_alive()
            try:
                with urllib.request.urlopen(self.health_url, timeout=2) as r:
                    if r.status == 200:
                        return time.monotonic() - t0
            except (urllib.error.URLError, OSError, ValueError):
                pass  # not listening yet, or still loading the model (503)
            if time.monotonic() - t0 > timeout_s:
                self.stop()
                raise HarnessError(
                    f"{self.name} did not become healthy within {timeout_s:g} s at "
                    f"{self.health_url}; its log ends: {tail(self.log_path)}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def stop(self, grace_s: float = 5.0) -> int | None:
        """End the server's process group (TERM, then KILL after ``grace_s``); its exit status."""
        proc = self.proc
        if proc is None:
            return None
        pgid = proc.pid  # setsid made the server the leader of its own group
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        # whatever is left of the group (the leader, or children it started), killed outright
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
        return proc.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
