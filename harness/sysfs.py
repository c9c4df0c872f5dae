"""Every sysfs read goes through here, rooted at $HARNESS_SYSFS (default /sys)."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

from harness.errors import SensorError, SensorPermissionError

#: errno values worth retrying at once: a busy I2C bus or SMBus, an interrupted read
TRANSIENT_ERRNOS = frozenset({errno.EIO, errno.EAGAIN, errno.EINTR, errno.EBUSY})
#: errno values after which the file will not come back (the device went away)
GONE_ERRNOS = frozenset({errno.ENOENT, errno.ENODEV, errno.ENXIO, errno.EBADF})
#: tries of a read that fails transiently, and the pause between them
READ_TRIES = 3
RETRY_PAUSE_S = 0.0005


class SensorReadError(SensorError):
    """A read that failed after its retries; ``gone`` when the device will not come back."""

    def __init__(self, message: str, gone: bool = False):
        super().__init__(message)
        self.gone = gone


def sysfs_root() -> Path:
    return Path(os.environ.get("HARNESS_SYSFS", "/sys"))


def sysfs_path(*parts: str) -> Path:
    return sysfs_root().joinpath(*parts)


def read_text(path: Path) -> str:
    """The stripped content of a small sysfs file; a clear error when it cannot be read."""
    try:
        return path.read_text().strip()
    except PermissionError as e:
        raise SensorPermissionError(f"cannot read {path}: permission denied") from e
    except FileNotFoundError as e:
        raise SensorError(f"{path} vanished") from e
    except OSError as e:
        raise SensorError(f"cannot read {path}: {e.strerror or e}") from e


def parse_int(text: str, path: Path) -> int:
    try:
        return int(text.split()[0]) if text else _garbage(text, path)
    except ValueError:
        return _garbage(text, path)


def _garbage(text: str, path: Path) -> int:
    shown = text[:40] if text else "an empty file"
    raise SensorError(f"{path} holds {shown!r}, not an integer")


def read_int(path: Path) -> int:
    return parse_int(read_text(path), path)


class IntFile:
    """A sysfs integer file held open and re-read with pread: about 2 µs a read instead of 10.

    sysfs regenerates a file's content on every read at offset 0, so one descriptor serves
    for the life of a meter.
    """

    __slots__ = ("path", "_fd")

    def __init__(self, path: Path):
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except PermissionError as e:
            raise SensorPermissionError(f"cannot read {path}: permission denied") from e
        except FileNotFoundError as e:
            raise SensorError(f"{path} does not exist") from e
        except OSError as e:
            raise SensorError(f"cannot open {path}: {e.strerror or e}") from e
        self.read()  # fail at construction, not inside the first window

    def read(self) -> int:
        """The file's integer; a transient error (EIO, EAGAIN...) is retried before it raises."""
        try:
            data = os.pread(self._fd, 64, 0)
        except OSError as e:
            data = self._retry(e)
        try:
            return int(data)
        except ValueError:
            return parse_int(data.decode(errors="replace").strip(), self.path)

    def _retry(self, first: OSError) -> bytes:
        e = first
        for _ in range(READ_TRIES - 1):
            if e.errno not in TRANSIENT_ERRNOS:
                break
            time.sleep(RETRY_PAUSE_S)
            try:
                return os.pread(self._fd, 64, 0)
            except OSError as again:
                e = again
        raise SensorReadError(
            f"cannot read {self.path}: {e.strerror or e}", gone=e.errno in GONE_ERRNOS
        ) from e

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def write_text(path: Path, text: str) -> None:
    """Write a sysfs attribute as ``echo text > path`` does (in place, never a new file).

    A missing file is not created: sysfs cannot, and a fake tree must not grow one. Errors
    become ``SensorPermissionError`` / ``SensorError`` naming the file.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    except PermissionError as e:
        raise SensorPermissionError(f"cannot write {path}: permission denied") from e
    except FileNotFoundError as e:
        raise SensorError(f"{path} does not exist") from e
    except OSError as e:
        raise SensorError(f"cannot open {path} for writing: {e.strerror or e}") from e
    try:
        os.write(fd, f"{text}\n".encode())
    except PermissionError as e:
        raise SensorPermissionError(f"cannot write {path}: permission denied") from e
    except OSError as e:  # EINVAL: the kernel refused the value
        raise SensorError(f"{path} refused {text!r}: {e.strerror or e}") from e
    finally:
        os.close(fd)
