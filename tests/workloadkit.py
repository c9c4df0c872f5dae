"""Helpers for the infer and accuracy workload tests: a case dict and a Context around it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.meter import Meter
from harness.workloads.base import Context

#: one thread: steadier timings on a shared 2-core machine
CPU_1T = {"name": "cpu-1t", "device": "cpu", "threads": 1, "memory_limit_mb": None}


def make_case(workload: dict, source: str = "builtin:tiny-s", hardware: dict | None = None) -> dict:
    """A case as the runner writes it, for one model on the CPU."""
    return {
        "case_id": "test",
        "case": f"test/{workload['type']}",
        "suite": "test",
        "hardware": dict(hardware or CPU_1T),
        "model": {"name": source.partition(":")[2].rstrip("/").split("/")[-1], "source": source},
        "variant": {"name": "fp32", "dtype": "float32", "quantization": None},
        "workload": dict(workload),
        "measurement": {"warmup": 1},
        "carbon": {},
    }


def make_context(case: dict, meter: Meter, tmp_path: Path) -> Context:
    case_dir = tmp_path / "case"
    case_dir.mkdir(exist_ok=True)
    return Context(meter=meter, case=case, artifacts_dir=tmp_path / "artifacts", case_dir=case_dir)


@contextmanager
def torch_threads_kept() -> Iterator[None]:
    """Restore torch's thread count after a test whose hardware profile changed it."""
    import torch

    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
