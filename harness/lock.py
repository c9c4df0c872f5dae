"""One measuring run per machine: a file lock that every run takes before it measures.

Two runs measuring at once would each count the other's energy. The lock is ``flock`` on a file
in a machine-wide place (``/tmp/energy-harness.lock``, or ``$HARNESS_LOCK_FILE``); the kernel drops
it when its holder dies, so a stale lock of a dead run is simply taken over. The holder writes who
it is (pid, run id, start time) over the start of the file so a waiting run can say whom it waits
for.

The file sits in a world-writable folder, so it is opened as something another user may have
planted: never through a symbolic link (``O_NOFOLLOW``), only when it is a regular file with no
other hard link (checked on the open descriptor, ``fstat``), and it is never chmod-ed nor
truncated: a planted link cannot make a run change or empty another file. Another user's lock file
is taken part in read-only (``flock`` needs no write access).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.errors import HarnessError

DEFAULT_LOCK_FILE = "/tmp/energy-harness.lock"
#: set in the environment of a run's workers: the lock file their run holds for them
HELD_ENV = "HARNESS_LOCK_HELD"
#: how often a wait with a timeout tries the lock again
POLL_S = 0.2
#: filesystems without flock (some NFS, FUSE and 9p mounts) answer with one of these
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL}


def lock_path() -> Path:
    return Path(os.environ.get("HARNESS_LOCK_FILE") or DEFAULT_LOCK_FILE)


def held_by_parent(path: Path | None = None) -> bool:
    """True inside a run's worker: the run holds this machine's lock for its cases (a command
    case that calls ``harness measure`` must not wait for its own run)."""
    held = os.environ.get(HELD_ENV)
    return bool(held) and Path(held) == Path(path or lock_path())


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


def _open_flags(mode: int) -> int:
    return mode | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0)


class MachineLock:
    """``with MachineLock(run_id): ...`` holds the machine's measurement lock.

    ``wait``: False fails at once when another run holds it; ``timeout_s`` (with ``wait``) gives
    up after that many seconds, None waits as long as it takes.
    """

    def __init__(
        self,
        run_id: str,
        *,
        wait: bool = True,
        timeout_s: float | None = None,
        path: Path | None = None,
        on_wait: Callable[[str], None] | None = None,
    ):
        if timeout_s is not None and not timeout_s >= 0:  # also refuses NaN
            raise HarnessError(f"--lock-timeout must be a number of seconds >= 0, not {timeout_s}")
        self.run_id = run_id
        self.wait = wait
        self.timeout_s = timeout_s
        self.path = Path(path) if path else lock_path()
        self.on_wait = on_wait
        self._fd: int | None = None
        self._writable = False
        self._record_len = 0

    def holder(self) -> dict | None:
        """Who holds (or last held) the lock, from the first line of the file."""
        try:
            fd = os.open(self.path, _open_flags(os.O_RDONLY))
        except OSError:
            return None
        try:
            text = os.pread(fd, 4096, 0).decode("utf-8", errors="replace")
        except OSError:
            return None
        finally:
            os.close(fd)
        line = text.split("\n", 1)[0].strip()
        try:
            info = json.loads(line) if line else None
        except ValueError:
            return None
        return info if isinstance(info, dict) else None

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise HarnessError(
                f"cannot make the folder of the lock file {self.path}: {e.strerror} "
                "(set HARNESS_LOCK_FILE)"
            ) from None
        try:
            return os.open(self.path, _open_flags(os.O_RDWR | os.O_CREAT), 0o666)
        except PermissionError:
            pass  # another user's lock file: a read-only descriptor still takes part in flock
        except OSError as e:
            raise self._open_error(e) from None
        try:
            return os.open(self.path, _open_flags(os.O_RDONLY))
        except OSError as e:
            raise self._open_error(e) from None

    def _open_error(self, e: OSError) -> HarnessError:
        if e.errno == errno.ELOOP:
            return HarnessError(
                f"the lock file {self.path} is a symbolic link; it is never followed "
                "(remove it, or set HARNESS_LOCK_FILE to another file)"
            )
        return HarnessError(
            f"cannot open the lock file {self.path}: {e.strerror} (set HARNESS_LOCK_FILE)"
        )

    def _check(self, fd: int) -> None:
        """The open file is a regular file with one link; note whether it is ours to write."""
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise HarnessError(
                f"the lock file {self.path} is not a regular file "
                "(remove it, or set HARNESS_LOCK_FILE to another file)"
            )
        if st.st_nlink != 1:
            raise HarnessError(
                f"the lock file {self.path} has {st.st_nlink} hard links; it is never written "
                "through a link (remove it, or set HARNESS_LOCK_FILE to another file)"
            )
        mode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
        self._writable = mode == os.O_RDWR and st.st_uid == os.geteuid()

    def _try_flock(self, fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError as e:
            if e.errno in _NO_LOCKS:
                raise HarnessError(
                    f"the lock file {self.path} is on a filesystem without file locks "
                    f"({errno.errorcode.get(e.errno, e.errno)}); set HARNESS_LOCK_FILE to a file "
                    "on a local filesystem"
                ) from None
            raise HarnessError(f"cannot lock {self.path}: {e.strerror}") from None

    def acquire(self) -> None:
        fd = self._open()
        try:
            self._check(fd)
            if not self._try_flock(fd):
                who = describe_holder(self.holder())
                if not self.wait or self.timeout_s == 0:
                    raise HarnessError(
                        f"another run is measuring on this machine ({who}; lock {self.path}); "
                        "wait for it or run without --no-wait"
                    )
                if self.on_wait:
                    self.on_wait(f"waiting for another run to finish measuring ({who})")
                self._wait(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._write_holder()

    def _wait(self, fd: int) -> None:
        if self.timeout_s is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return
        deadline = time.monotonic() + self.timeout_s
        while not self._try_flock(fd):
            if time.monotonic() >= deadline:
                raise HarnessError(
                    f"another run kept the machine busy for {self.timeout_s:g} s "
                    f"({describe_holder(self.holder())}; lock {self.path}); gave up "
                    "(--lock-timeout)"
                )
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))

    def _write_holder(self) -> None:
        """Who holds the lock, over the start of the file (never truncated: see the docstring)."""
        if not self._writable:
            return  # another user's file: the lock holds, only the description is theirs
        info = {
            "pid": os.getpid(),
            "run_id": self.run_id,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": socket.gethostname(),
        }
        data = (json.dumps(info) + "\n").encode()
        try:
            os.pwrite(self._fd, data, 0)
            self._record_len = len(data)
        except OSError:
            pass  # the lock holds, only the description is stale

    def release(self) -> None:
        if self._fd is None:
            return
        if self._writable and self._record_len:
            try:  # blank our record in place: no holder recorded
                os.pwrite(self._fd, b" " * (self._record_len - 1) + b"\n", 0)
            except OSError:
                pass
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None
            self._record_len = 0

    def __enter__(self) -> MachineLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@contextmanager
def machine_lock(
    run_id: str, *, enabled: bool = True, timeout_s: float | None = None
) -> Iterator[MachineLock | None]:
    """The lock for a one-off measurement (``harness measure``): taken unless ``enabled`` is
    False or the run this process works for already holds it; waiting is said on stderr."""
    import sys

    if not enabled or held_by_parent():
        yield None
        return
    lock = MachineLock(
        run_id,
        timeout_s=timeout_s,
        on_wait=lambda line: print(f"harness: {line}", file=sys.stderr, flush=True),
    )
    with lock:
        yield lock
