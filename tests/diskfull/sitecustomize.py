"""A disk that fills up, for the fault tests (tests/test_faults.py).

Put this folder on PYTHONPATH and every Python process started from there (the runner, its
workers) imports it. With ``FAKE_DISK_DIR`` and ``FAKE_DISK_BYTES`` set, the files under that
folder are the disk's contents: once they add up to more than its capacity, ``os.fsync`` fails
with ENOSPC, as a real full disk fails a write. Removing files frees space again.
"""

from __future__ import annotations

import errno
import os

_DIR = os.environ.get("FAKE_DISK_DIR")
_CAPACITY = int(os.environ.get("FAKE_DISK_BYTES") or 0)


def used_bytes(folder: str | None = _DIR) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder or "."):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


if _DIR and _CAPACITY:
    _real_fsync = os.fsync

    def _fsync(fd: int) -> None:
        if used_bytes() > _CAPACITY:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        _real_fsync(fd)

    os.fsync = _fsync
