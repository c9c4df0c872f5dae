"""Shared test settings: every test runs offline, with results and the lock in a temp folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _isolated_paths(tmp_path_factory, monkeypatch):
    """Keep runs of the test suite out of the user's results folder and machine lock."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("HARNESS_RESULTS", str(base / "results"))
    monkeypatch.setenv("HARNESS_LOCK_FILE", str(base / "harness.lock"))


@pytest.fixture
def sysfs(tmp_path, monkeypatch) -> Path:
    """An empty /sys for the sysfs readers (``HARNESS_SYSFS``), on a machine with no GPU
    visibility variables set; fill it with tests/fakesysfs.py."""
    root = tmp_path / "sys"
    root.mkdir(exist_ok=True)
    monkeypatch.setenv("HARNESS_SYSFS", str(root))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return root
