"""Every sysfs read goes through here, rooted at $HARNESS_SYSFS (default /sys)."""

from __future__ import annotations

import os
from pathlib import Path

from harness.errors import SensorError, SensorPermissionError


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
        try:
            data = os.pread(self._fd, 64, 0)
        except OSError as e:
            raise SensorError(f"cannot read {self.path}: {e.strerror or e}") from e
        try:
            return int(data)
        except ValueError:
            return parse_int(data.decode(errors="replace").strip(), self.path)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
