"""Shared test settings: every test runs offline, with results and the lock in a temp folder."""

from __future__ import annotations

import os

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
