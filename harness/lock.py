"""One measuring run per machine: a file lock that every run takes before it measures.

Two runs measuring at once would each count the other's energy. The lock is ``flock`` on a file
in a machine-wide place (``/tmp/energy-harness.lock``, or ``$HARNESS_LOCK_FILE``); the kernel drops
it when its holder dies, so a stale lock of a dead run is simply taken over. The holder writes who
it is (pid, run id, start time) into the file so a waiting run can say whom it waits for.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from harness.errors import HarnessError

DEFAULT_LOCK_FILE = "/tmp/energy-harness.lock"


def lock_path() -> Path:
    return Path(os.environ.get("HARNESS_LOCK_FILE") or DEFAULT_LOCK_FILE)


def describe_holder(info: dict | None) -> str:
    if not info:
        return "an unknown process"
    parts = [f"pid {info.get('pid', '?')}"]
    if info.get("run_id"):
        parts.append(f"run {info['run_id']}")
    if info.get("started"):
        parts.append(f"since {info['started']}")
    if info.get("host") and info.get("host") != socket.gethostname():
        parts.append(f"on {info['host']}")
    return ", ".join(parts)


class MachineLock:
    """``with MachineLock(run_id): ...`` holds the machine's measurement lock."""

    def __init__(
        self,
        run_id: str,
        *,
        wait: bool = True,
        path: Path | None = None,
        on_wait: Callable[[str], None] | None = None,
    ):
        self.run_id = run_id
        self.wait = wait
        self.path = Path(path) if path else lock_path()
        self.on_wait = on_wait
        self._fd: int | None = None

    def holder(self) -> dict | None:
        """Who holds (or last held) the lock, from the file."""
        try:
            text = self.path.read_text(encoding="utf-8")
            return json.loads(text) if text.strip() else None
        except (OSError, ValueError):
            return None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except PermissionError:
            # another user's lock file: a read-only descriptor still takes part in flock
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                raise HarnessError(f"cannot open the lock file {self.path}: {e}") from None
        except OSError as e:
            raise HarnessError(
                f"cannot open the lock file {self.path}: {e} (set HARNESS_LOCK_FILE)"
            ) from None
        try:
            try:
                os.fchmod(fd, 0o666)  # any user's run must be able to take it next
            except OSError:
                pass
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                who = describe_holder(self.holder())
                if not self.wait:
                    raise HarnessError(
                        f"another run is measuring on this machine ({who}; lock {self.path}); "
                        "wait for it or run without --no-wait"
                    ) from None
                if self.on_wait:
                    self.on_wait(f"waiting for another run to finish measuring ({who})")
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._write_holder()

    def _write_holder(self) -> None:
        info = {
            "pid": os.getpid(),
            "run_id": self.run_id,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": socket.gethostname(),
        }
        data = (json.dumps(info) + "\n").encode()
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)
            os.fsync(self._fd)
        except OSError:
            pass  # read-only descriptor: the lock holds, only the description is stale

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> MachineLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
