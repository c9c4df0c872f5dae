"""Atomic writes: the one way the project writes a file.

``write_bytes`` writes a temporary file in the same folder, flushed and fsynced, then renamed over
the target, so a reader (or a run killed mid-write) never sees half a file; ``replace_folder`` does
the same for a folder. Every value written as JSON, Parquet or CSV goes through
``harness.redact.sanitise`` first.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.redact import sanitise, sanitise_frame, sanitise_text

#: the characters of a temporary's random part: tempfile's, so ``sweep_temporaries`` knows both
_TEMP_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"
#: O_TMPFILE where Linux has it: a file with no name until it is linked in
_O_TMPFILE = getattr(os, "O_TMPFILE", None)
#: what open(O_TMPFILE) answers where the filesystem (or an old kernel) cannot make one
_NO_TMPFILE = {errno.EOPNOTSUPP, errno.ENOTSUP, errno.EISDIR, errno.EINVAL}


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary in the same folder, fsync, rename.

    The one way the project writes a file (results, reports, figures, task files, tokenizer):
    a reader, or a run killed half-way, sees the old file or the new one, never a part.

    The data goes into a file without a name (``O_TMPFILE``) that gets one only once it is
    written and fsynced, just before the rename: a process SIGKILLed while writing (which can take
    a long while on a busy disk) leaves nothing in the folder, where a named temporary would stay
    until the next run's ``sweep_temporaries``. Where the filesystem has no such files the
    temporary is named from the start, as ``tempfile.mkstemp`` makes it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if not _write_unnamed_then_link(path, data):
            _write_named(path, data)
    except OSError as e:
        if e.filename is None:
            e.filename = str(path)  # fsync and write name no file: say which one failed
        raise


def _write_unnamed_then_link(path: Path, data: bytes) -> bool:
    """``write_bytes`` through an unnamed file; False (nothing written) where there is none."""
    if _O_TMPFILE is None or not os.path.isdir("/proc/self/fd"):
        return False  # no O_TMPFILE here, or no /proc to link one through
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fd = os.open(path.parent, _O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600)
        except OSError as e:
            if e.errno in _NO_TMPFILE:
                return False
            raise
        try:
            with os.fdopen(fd, "wb", closefd=False) as f:
                f.write(data)
                f.flush()
            os.fsync(fd)
            tmp = _link_temporary(fd, path, dir_fd)  # a SIGKILL before here leaves nothing
            if tmp is None:
                return False
            try:
                os.replace(tmp, path)  # at once: a SIGKILL in between leaves it to the sweep
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        finally:
            os.close(fd)  # an unnamed file not linked is gone with its descriptor
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        except OSError:
            pass
        return True
    finally:
        os.close(dir_fd)


def _link_temporary(fd: int, path: Path, dir_fd: int) -> Path | None:
    """Name the unnamed file ``fd`` ``.<name>.<8 random>.tmp`` beside ``path``; None when Linux
    will not link it (a /proc that refuses), so the caller writes a named temporary instead."""
    for _attempt in range(100):
        name = f".{path.name}.{''.join(secrets.choice(_TEMP_CHARS) for _ in range(8))}.tmp"
        try:
            # dst_dir_fd makes Python call linkat(AT_SYMLINK_FOLLOW), which links the file the
            # /proc entry stands for; plain link(2) would try to link the /proc symlink itself
            os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dir_fd, follow_symlinks=True)
            return path.parent / name
        except FileExistsError:
            continue
        except OSError as e:
            if e.errno in _DISK_FULL:  # no room for the name: say which file, not /proc's
                raise OSError(e.errno, e.strerror, str(path)) from None
            return None
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))


def _write_named(path: Path, data: bytes) -> None:
    """``write_bytes`` through a named temporary (``tempfile.mkstemp``), where no unnamed file
    can be made; a SIGKILL mid-write leaves it for ``sweep_temporaries``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)  # make the rename itself durable


def write_text(path: Path, text: str) -> None:
    """``write_bytes`` of UTF-8 text."""
    write_bytes(path, text.encode("utf-8"))


def _fsync_dir(folder: Path) -> None:
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def staging_folder(target: Path) -> Path:
    """A fresh hidden folder beside ``target`` to build its new contents in (``replace_folder``)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))


# what write_bytes and staging_folder leave behind when killed: ".<name>.<8 of _TEMP_CHARS>.tmp"
_STALE_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def sweep_temporaries(folder: Path) -> list[Path]:
    """Remove the temporaries a killed ``write_bytes`` or ``staging_folder`` left under ``folder``.

    Only safe while nothing else writes there (the runner calls it under the machine lock when a
    run starts or resumes): a live write's temporary has the same name. A SIGKILL gives the
    ``except`` in ``write_bytes`` no chance to unlink, so without this a resumed run keeps
    ``.result.json.x1y2z3w4.tmp`` files beside its results for good: a staging folder, a write
    killed between naming its file and renaming it, or any write killed on a filesystem without
    unnamed files. Returns what was removed.
    """
    removed: list[Path] = []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        for name in [d for d in dirs if _STALE_TEMPORARY.match(d)]:
            dirs.remove(name)  # a staging folder goes whole; do not walk into it
            path = here / name
            if path.is_symlink():
                path.unlink(missing_ok=True)
            else:
                shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        for name in files:
            if _STALE_TEMPORARY.match(name):
                path = here / name
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def replace_folder(staging: Path, target: Path) -> Path:
    """Swap a fully written ``staging`` folder into place as ``target``, atomically.

    The folder analogue of ``write_bytes`` (a checkpoint is a folder of files written by
    ``save_pretrained``): every file is fsynced, then the old folder is renamed aside, the new one
    renamed in and the old one removed, so ``target`` is always a whole checkpoint, old or new.
    """
    staging, target = Path(staging), Path(target)
    for path in staging.rglob("*"):
        if path.is_file():
            with open(path, "rb+") as f:
                os.fsync(f.fileno())
        elif path.is_dir():
            _fsync_dir(path)
    _fsync_dir(staging)
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(staging, target)
    _fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


def _finite(value: Any) -> Any:
    # JSON has no NaN or infinity: store them as null
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json(path: Path, obj: Any) -> None:
    text = json.dumps(_finite(sanitise(obj)), indent=2, default=_json_default, allow_nan=False)
    write_bytes(path, (text + "\n").encode())


def try_write_json(path: Path, obj: Any) -> bool:
    """``write_json`` that reports failure instead of raising (for last words on a full disk)."""
    try:
        write_json(path, obj)
        return True
    except OSError:
        return False


#: a run keeps this much disk in reserve (``.reserve`` in its folder), given back when the disk
#: fills so that the manifest can still say the run was interrupted
RESERVE_FILE = ".reserve"
RESERVE_BYTES = 256 * 1024


def reserve_space(run_dir: Path) -> None:
    """Set disk space aside for the run's last words (see ``release_space``)."""
    path = Path(run_dir) / RESERVE_FILE
    try:
        if path.stat().st_size >= RESERVE_BYTES:
            return
    except OSError:
        pass
    write_bytes(path, b"\0" * RESERVE_BYTES)


def release_space(run_dir: Path) -> None:
    try:
        (Path(run_dir) / RESERVE_FILE).unlink()
    except OSError:
        pass


_DISK_FULL = {28, 122}  # ENOSPC, EDQUOT


def write_error(e: OSError, resume: Path | None = None) -> HarnessError:
    """The one line for a write that failed: ``no space left on device writing PATH``."""
    where = f" writing {e.filename}" if e.filename else ""
    if e.errno in _DISK_FULL or e.errno == errno.ENOSPC:
        what = "no space left on device" if e.errno != 122 else "disk quota exceeded"
    else:
        what = (e.strerror or str(e) or type(e).__name__).lower()
    tail = f"; what was done is saved, finish with: harness run --resume {resume}" if resume else ""
    return HarnessError(f"{what}{where}{tail}")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _frame_for_arrow(df):
    """Mixed-type object columns (a number in one row, text in another) become text."""
    import pyarrow as pa

    for col in df.columns:
        if df[col].dtype != object:
            continue
        try:
            pa.array(df[col].tolist(), from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            df[col] = df[col].map(lambda v: None if v is None else str(v))
    return df


def write_parquet(path: Path, df) -> None:
    import io

    df = _frame_for_arrow(sanitise_frame(df))
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    write_bytes(path, buf.getvalue())


def write_csv(path: Path, df) -> None:
    """A CSV without secrets whose text cells a spreadsheet cannot run (see harness/csvsafe.py)."""
    from harness.csvsafe import to_csv_text

    write_bytes(path, to_csv_text(sanitise_frame(df)).encode())


def write_trace(path: Path, rows: list[dict]) -> None:
    """trace.parquet: t_s (seconds since the meter started), domain, watts."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_arrays(
        [
            pa.array([float(r["t_s"]) for r in rows], type=pa.float64()),
            pa.array([sanitise_text(str(r["domain"])) for r in rows], type=pa.string()),
            pa.array([float(r["watts"]) for r in rows], type=pa.float64()),
        ],
        names=["t_s", "domain", "watts"],
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    write_bytes(path, buf.getvalue())
