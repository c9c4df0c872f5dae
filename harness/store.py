"""The results folder (ARCHITECTURE.md, Results folder): layout, atomic writes, loading.

Every file goes through ``write_bytes``: a temporary file in the same folder, flushed and fsynced,
then renamed over the target, so a reader (or a run killed mid-write) never sees half a file. And
every value written goes through ``sanitise`` first: the values of secret-looking environment
variables and the credentials of URLs never reach the disk.
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
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
IDLE = "idle.json"
CASES = "cases"
CASE_FILE = "case.json"
RESULT_FILE = "result.json"
TRACE_FILE = "trace.parquet"
MEASUREMENTS_PARQUET = "measurements.parquet"
MEASUREMENTS_CSV = "measurements.csv"

OK = "ok"
FAILED = "failed"

# ------------------------------------------------------------------------------ secrets
#: names that are secrets whatever their shape (compared upper-case)
SECRET_NAMES = frozenset(
    {
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "API_KEY",
        "APIKEY",
        "ACCESS_KEY",
        "PRIVATE_KEY",
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HUGGINGFACE_TOKEN",
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "WANDB_API_KEY",
        "GITHUB_TOKEN",
        "GH_TOKEN",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AZURE_CLIENT_SECRET",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "DATABASE_URL",
    }
)
#: name patterns of secrets: a *word* TOKEN, KEY, SECRET..., not any name containing those letters
#: (TOKENIZERS_PARALLELISM, KEYBOARD_LAYOUT and MONKEY_COUNT are settings, not secrets)
_SECRET_NAME = re.compile(
    r"(^|_)(TOKEN|ACCESS_TOKEN|AUTH_TOKEN|API_KEY|APIKEY|KEY|PRIVATE_KEY|CREDENTIALS?)$"
    r"|(^|_)SECRET|PASSWORD|PASSWD|PASSPHRASE",
    re.IGNORECASE,
)
#: command-line options whose next argument (or ``=value``) is a secret
SECRET_FLAGS = (
    "--token",
    "--hf-token",
    "--auth-token",
    "--access-token",
    "--api-key",
    "--apikey",
    "--key",
    "--secret",
    "--password",
    "--passwd",
    "--client-secret",
)
_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@:]*(?::[^/\s@]*)?@")
#: shapes of well-known tokens, masked wherever they appear (Hugging Face, OpenAI-style, AWS
#: access key ids, GitHub, Slack)
_TOKEN_SHAPES = re.compile(
    r"\b(?:hf_[A-Za-z0-9]{16,}"
    r"|sk-[A-Za-z0-9_-]{16,}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|github_pat_[A-Za-z0-9_]{20,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,})"
)
#: environment variables safe to record (the manifest never dumps the environment otherwise)
ENV_ALLOW = (
    "CUDA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "HARNESS_SYSFS",
    "HARNESS_RESULTS",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
)
#: shorter values are not masked by value (they would mask unrelated text); they are still
#: masked where they stand (under a secret name, after a secret option)
_MIN_SECRET_LEN = 4
#: values that are settings even under a secret-looking name: masking them by value everywhere
#: would rewrite every "false" in a run folder
_NOT_SECRET_VALUES = frozenset({"true", "false", "yes", "no", "none", "null", "auto", "0", "1"})
MASK = "***"
#: secret values met in suites and cases by this process (see ``remember_secrets``)
_remembered: set[str] = set()


def is_secret_name(name: str) -> bool:
    """A variable or key whose value is a secret: exact names, and *_TOKEN, *_KEY, *SECRET*..."""
    return name.upper() in SECRET_NAMES or bool(_SECRET_NAME.search(name))


def _is_secret_flag(arg: str) -> bool:
    return arg.lower() in SECRET_FLAGS


def _maskable(value: str) -> bool:
    return len(value) >= _MIN_SECRET_LEN and value.strip().lower() not in _NOT_SECRET_VALUES


def secrets_in(value: Any) -> set[str]:
    """The secret values standing in a JSON-like value: under secret-named keys, after secret
    options in lists of arguments (``--token X``, ``--api-key=X``)."""
    found: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and is_secret_name(k) and isinstance(v, str) and v:
                found.add(v)
            else:
                found |= secrets_in(v)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            if not isinstance(v, str):
                found |= secrets_in(v)
                continue
            flag, eq, rest = v.partition("=")
            if eq and _is_secret_flag(flag) and rest:
                found.add(rest)
            elif _is_secret_flag(v) and i + 1 < len(value) and isinstance(value[i + 1], str):
                found.add(value[i + 1])
    return found


def remember_secrets(value: Any) -> None:
    """Mask the secrets of a suite or case (``secrets_in``) by value in everything this process
    writes from now on: a program may print the token it was given in its output."""
    _remembered.update(s for s in secrets_in(value) if s)


def _secret_values(extra: Iterable[str] = ()) -> list[str]:
    values = {v for k, v in os.environ.items() if is_secret_name(k)}
    values |= _remembered
    values |= set(extra)
    # longest first: no partial leftovers
    return sorted((v for v in values if _maskable(v)), key=len, reverse=True)


def sanitise_text(text: str, secrets_: Iterable[str] | None = None) -> str:
    """``text`` without URL credentials, token-shaped strings and the value of any secret."""
    text = _URL_CREDENTIALS.sub(r"\1***@", text)
    text = _TOKEN_SHAPES.sub(MASK, text)
    for value in _secret_values() if secrets_ is None else secrets_:
        if value in text:
            text = text.replace(value, MASK)
    return text


def sanitise(value: Any, _secrets: list[str] | None = None) -> Any:
    """A copy of a JSON-like value with secrets masked: values under secret-named keys and after
    secret options are ``***`` where they stand, and every string is ``sanitise_text``-ed with
    those values, the environment's and the remembered ones."""
    if _secrets is None:
        _secrets = _secret_values(secrets_in(value))
    if isinstance(value, str):
        return sanitise_text(value, _secrets)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            key = sanitise_text(str(k), _secrets) if isinstance(k, str) else k
            if isinstance(k, str) and is_secret_name(k) and isinstance(v, str) and v:
                out[key] = MASK
            else:
                out[key] = sanitise(v, _secrets)
        return out
    if isinstance(value, (list, tuple)):
        out_list = []
        masked_next = False
        for v in value:
            if masked_next and isinstance(v, str):
                out_list.append(MASK)
                masked_next = False
                continue
            masked_next = False
            if isinstance(v, str):
                flag, eq, rest = v.partition("=")
                if eq and _is_secret_flag(flag) and rest:
                    out_list.append(f"{sanitise_text(flag, _secrets)}={MASK}")
                    continue
                masked_next = _is_secret_flag(v)
            out_list.append(sanitise(v, _secrets))
        return out_list
    return value


def is_masked(value: Any) -> bool:
    """True when a sanitised JSON-like value still holds a mask where a secret stood."""
    if isinstance(value, str):
        return MASK in value
    if isinstance(value, dict):
        return any(is_masked(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(is_masked(v) for v in value)
    return False


def sanitise_frame(df):
    """A DataFrame whose string cells are sanitised (for parquet and CSV)."""
    secrets_ = _secret_values()
    df = df.copy()
    for col in df.columns:
        if df[col].dtype == object:
            df[col] = df[col].map(lambda v: sanitise_text(v, secrets_) if isinstance(v, str) else v)
    df.columns = [sanitise_text(str(c), secrets_) for c in df.columns]
    return df


def last_line(text: str) -> str:
    """The last non-blank line of a program's output, stripped ("" when there is none).

    A failing program's last line is usually its error; a command case's last line may be its
    JSON report. The one helper for both.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# ------------------------------------------------------------------------------ atomic writes
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


# ------------------------------------------------------------------------------ layout
def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def new_run_id(suite_name: str, now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{suite_name}-{now.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"


def default_out() -> Path:
    return Path(os.environ.get("HARNESS_RESULTS") or "results")


def case_dir(run_dir: Path, case_id: str) -> Path:
    return Path(run_dir) / CASES / case_id


def result_problem(result: Any, case_id: str | None = None) -> str | None:
    """Why a parsed result.json is not a usable result, or None when it is one.

    A result is a JSON object with a status (ok or failed), of this case (its ``case_id``, where
    it names one); an ok one also has a non-empty list of repetitions, each an object: what a done
    case has, so a truncated, hand-edited or foreign file never counts as done.
    """
    if not isinstance(result, dict):
        return f"not a JSON object but {type(result).__name__}"
    status = result.get("status")
    if status not in (OK, FAILED):
        return f"status is {status!r}, not ok or failed"
    if case_id is not None and result.get("case_id") not in (None, case_id):
        return f"it belongs to case {result.get('case_id')!r}"
    if status == OK:
        reps = result.get("repetitions")
        if not isinstance(reps, list) or not reps:
            return "status ok without repetitions"
        if not all(isinstance(r, dict) for r in reps):
            return "a repetition is not a JSON object"
    return None


def check_result(run_dir: Path, case_id: str) -> tuple[dict | None, str | None]:
    """A case's result and, when its result.json exists but is unusable, why."""
    path = case_dir(run_dir, case_id) / RESULT_FILE
    try:
        result = read_json(path)
    except FileNotFoundError:
        return None, None
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except ValueError as e:
        return None, f"does not parse ({str(e).splitlines()[0][:80]})"
    except OSError as e:
        return None, f"unreadable ({e.strerror})"
    problem = result_problem(result, case_id)
    return (None, problem) if problem else (result, None)


def read_result(run_dir: Path, case_id: str) -> dict | None:
    """A case's result.json, or None when it is missing, unreadable or not a usable result."""
    return check_result(run_dir, case_id)[0]


def is_done(run_dir: Path, case_id: str) -> bool:
    """A case is done when its result.json exists, is a complete result and says ok."""
    result = read_result(run_dir, case_id)
    return result is not None and result.get("status") == OK


def _warn(line: str) -> None:
    import sys

    print(f"harness: warning: {line}", file=sys.stderr, flush=True)


def pending_cases(run_dir: Path, cases: list[dict], warn=None) -> list[dict]:
    """The cases of ``cases`` not done in ``run_dir``; each unusable result.json gets a warning
    naming it (that case runs again)."""
    warn = warn or _warn
    pending = []
    for case in cases:
        result, problem = check_result(run_dir, case["case_id"])
        if problem:
            path = case_dir(run_dir, case["case_id"]) / RESULT_FILE
            warn(f"{path}: not a complete result ({problem}); {case.get('case')} runs again")
        if result is None or result.get("status") != OK:
            pending.append(case)
    return pending


def write_failure(path: Path, result: dict) -> bool:
    """Write a failed (or interrupted) result unless ``path`` already holds a complete ok result:
    a finished case is never overwritten by what happened after it finished. True if written."""
    try:
        existing = read_json(path)
    except (OSError, ValueError):
        existing = None
    if existing is not None and result_problem(existing) is None and existing.get("status") == OK:
        return False
    write_json(path, result)
    return True


def read_manifest(run_dir: Path) -> dict:
    path = Path(run_dir) / MANIFEST
    try:
        return read_json(path)
    except FileNotFoundError:
        raise HarnessError(f"{run_dir}: not a run folder (no {MANIFEST})") from None
    except (OSError, ValueError) as e:
        raise HarnessError(f"{path}: unreadable: {e}") from None


# ------------------------------------------------------------------------------ manifest facts
SOFTWARE = (
    "energy-harness",
    "torch",
    "transformers",
    "accelerate",
    "lm_eval",
    "codecarbon",
    "nvidia-ml-py",
    "pandas",
    "pyarrow",
    "pydantic",
    "ray",
)


def software_versions() -> dict[str, str | None]:
    """Installed versions from package metadata (nothing heavy is imported)."""
    import platform
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in SOFTWARE:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_sha(cwd: Path | None = None) -> str | None:
    """The commit of the checkout the harness runs from, if it runs from one."""
    import subprocess

    here = Path(__file__).resolve().parent.parent
    for folder in (here, Path(cwd or Path.cwd())):
        try:
            out = subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=folder,
                capture_output=True,
                text=True,
                timeout=5,
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", out.stdout.strip()):
            return out.stdout.strip()
    return None


def host_facts() -> dict:
    """Facts about this machine: harness.hardware's when present, else a small version here."""
    try:
        from harness.hardware import host_facts as _facts

        return _facts()
    except Exception:
        pass
    import platform

    facts: dict[str, Any] = {
        "hostname": platform.node(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                facts["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        facts["memory_mb"] = round(psutil.virtual_memory().total / 2**20)
    except Exception:
        pass
    return facts


def safe_environment() -> dict[str, str]:
    return {k: os.environ[k] for k in ENV_ALLOW if k in os.environ}


# ------------------------------------------------------------------------------ measurements
def _case_order(run_dir: Path) -> list[str]:
    try:
        manifest = read_json(Path(run_dir) / MANIFEST)
        return [c["case_id"] for c in manifest.get("cases", [])]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def failed_row(case: dict, run_id: str | None, error: str | None) -> dict:
    """The one row a failed case contributes to measurements."""
    row = identity_columns(case, run_id)
    row.update(status=FAILED, error=error)
    return row


def identity_columns(case: dict, run_id: str | None) -> dict:
    """The identity columns of a case's records (ARCHITECTURE.md, Columns)."""
    model = case.get("model") or {}
    variant = case.get("variant") or {}
    hw = case.get("hardware") or {}
    w = case.get("workload") or {}
    return {
        "run_id": run_id,
        "suite": case.get("suite"),
        "case_id": case.get("case_id"),
        "case": case.get("case"),
        "model": model.get("name"),
        "model_source": model.get("source"),
        "variant": variant.get("name"),
        "dtype": variant.get("dtype"),
        "quantization": variant.get("quantization"),
        "hardware": hw.get("name"),
        "device": hw.get("device"),
        "workload": w.get("type"),
        "batch_size": w.get("batch_size"),
        "prompt_tokens": w.get("prompt_tokens"),
        "new_tokens": w.get("new_tokens"),
        "seq_len": w.get("seq_len"),
        "steps": w.get("steps"),
        "task": w.get("task"),
    }


def result_rows(result: dict, case: dict | None, run_id: str | None) -> list[dict]:
    """Measurement rows of one case: its repetitions if ok, else one failed row."""
    if result.get("status") == OK and result.get("repetitions"):
        return [dict(r) for r in result["repetitions"]]
    case = case or result.get("case_settings") or {"case_id": result.get("case_id")}
    row = failed_row(case, run_id, result.get("error") or "failed without a reason")
    if result.get("node"):
        row["node"] = result["node"]  # a Ray run: which node the case failed on
    return [row]


def collect_rows(run_dir: Path) -> list[dict]:
    """Every measurement row of a run folder, from the result.json files, in case order."""
    run_dir = Path(run_dir)
    cases_dir = run_dir / CASES
    try:
        run_id = read_json(run_dir / MANIFEST).get("run_id")
    except (OSError, ValueError):
        run_id = run_dir.name
    order = {cid: i for i, cid in enumerate(_case_order(run_dir))}
    folders = sorted(
        (p for p in cases_dir.iterdir() if p.is_dir()) if cases_dir.is_dir() else [],
        key=lambda p: (order.get(p.name, len(order)), p.name),
    )
    rows: list[dict] = []
    for folder in folders:
        result, _ = check_result(run_dir, folder.name)
        if result is None:
            continue  # no usable result: the case is not done, and has no rows
        try:
            case = read_json(folder / CASE_FILE)
        except (OSError, ValueError):
            case = None
        rows += result_rows(result, case, run_id)
    return rows


def rows_frame(rows: list[dict]):
    """A DataFrame with the columns of harness.records.COLUMNS first, then the extras."""
    import pandas as pd

    from harness.records import COLUMNS

    extras: list[str] = []
    for row in rows:
        extras += [k for k in row if k not in COLUMNS and k not in extras]
    df = pd.DataFrame(rows, columns=COLUMNS + extras)
    for col in df.columns:
        # whole-number columns stay whole numbers beside a failed row's empty cell
        values = [row.get(col) for row in rows if row.get(col) is not None]
        if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            df[col] = pd.array([row.get(col) for row in rows], dtype="Int64")
    return df


#: columns the report fills (harness.report.measurements): in the files once it is built, left
#: out before (or where no row has them), never written always empty
REPORT_COLUMNS = ("produce_j", "embodied_g", "co2e_total_g")


def without_unfilled_report_columns(df):
    """``df`` less the report-time columns that no row fills."""
    empty = [c for c in REPORT_COLUMNS if c in df.columns and df[c].isna().all()]
    return df.drop(columns=empty)


def rebuild_measurements(run_dir: Path, fill=None):
    """Rewrite measurements.parquet and .csv from the case results; return the DataFrame.

    ``fill(df)``: a DataFrame of columns to set on the rows (the report's, by
    ``harness.report.measurements.report_columns``)."""
    df = rows_frame(collect_rows(run_dir))
    if fill is not None and len(df):
        for col, values in fill(df).items():
            df[col] = values
    df = without_unfilled_report_columns(df)
    write_parquet(Path(run_dir) / MEASUREMENTS_PARQUET, df)
    write_csv(Path(run_dir) / MEASUREMENTS_CSV, df)
    return df


def measurements_stale(run_dir: Path) -> bool:
    """True when a result.json is newer than measurements.parquet (a run killed between writing a
    result and rebuilding the table), or a case folder was added or removed since."""
    run_dir = Path(run_dir)
    try:
        cache = (run_dir / MEASUREMENTS_PARQUET).stat().st_mtime_ns
    except OSError:
        return True
    cases_dir = run_dir / CASES
    if not cases_dir.is_dir():
        return False
    for result in cases_dir.glob(f"*/{RESULT_FILE}"):
        try:
            if result.stat().st_mtime_ns > cache:
                return True
        except OSError:
            continue
    try:
        return cases_dir.stat().st_mtime_ns > cache
    except OSError:
        return False


def _is_run_dir(path: Path) -> bool:
    return (path / MANIFEST).is_file() or (path / CASES).is_dir()


def load_results(path: str | Path = "results"):
    """The measurements of one run folder, or of every run folder inside ``path``, as a DataFrame."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise HarnessError(f"{path}: no such results folder")
    if _is_run_dir(path):
        runs = [path]
    else:
        runs = sorted(p for p in path.iterdir() if p.is_dir() and _is_run_dir(p))
        if not runs:
            raise HarnessError(f"{path}: neither a run folder nor a folder of run folders")
    frames = []
    for run in runs:
        parquet = run / MEASUREMENTS_PARQUET
        if parquet.is_file() and not measurements_stale(run):
            try:
                frames.append(pd.read_parquet(parquet))
                continue
            except Exception:
                pass  # unreadable: rebuild from the case results below
        frames.append(without_unfilled_report_columns(rows_frame(collect_rows(run))))
    frames = [f for f in frames if len(f)]
    if not frames:
        return rows_frame([])
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return df
