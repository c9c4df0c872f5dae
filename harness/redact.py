"""Secrets never reach the disk: the values of secret-looking environment variables, the
arguments of secret-looking flags and the credentials in URLs are found here and masked.

Every value the results folder takes goes through ``sanitise`` (``harness.atomic`` calls it), and
a one-line error quoting a command's output through ``sanitise_text``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

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
