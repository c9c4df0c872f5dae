"""A fixed matrix-multiplication loop for a given time: the load under which scripts/gpu-check.sh
reads a GPU's energy (``harness measure -- python benchmarks/matmul_loop.py --seconds 5``).

The work per iteration never changes (one square product of ``--size``), so joules per iteration
compare across windows of 1, 5 and 30 s and across runs. On CUDA the loop synchronises before it
reads the clock, so the time it reports is the GPU's. The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0, help="how long to run (s)")
    p.add_argument("--device", default="cuda:0", help="torch device (cuda:0, cpu)")
    p.add_argument(
        "--size", type=int, default=0, help="matrix side (default 8192 on CUDA, 256 on CPU)"
    )
    p.add_argument("--dtype", default="", help="bfloat16 or float32 (default bf16 on CUDA)")
    a = p.parse_args()
    import torch

    cuda = a.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit(f"matmul_loop: {a.device} asked for, but torch sees no CUDA device")
    size = a.size or (8192 if cuda else 256)
    dtype = getattr(torch, a.dtype or ("bfloat16" if cuda else "float32"))
    gen = torch.Generator(device=a.device).manual_seed(0)
    x = torch.randn(size, size, device=a.device, dtype=dtype, generator=gen)
    y = torch.randn(size, size, device=a.device, dtype=dtype, generator=gen)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(a.device)

    sync()
    iterations = 0
    start = time.perf_counter()
    deadline = start + a.seconds
    while True:
        for _ in range(8):  # a few products between clock reads, so the read costs nothing
            torch.matmul(x, y)
        iterations += 8
        sync()
        if time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - start
    flops = 2.0 * size**3 * iterations
    print(
        json.dumps(
            {
                "device": a.device,
                "size": size,
                "dtype": str(dtype).removeprefix("torch."),
                "iterations": iterations,
                "duration_s": round(elapsed, 4),
                "tflops_per_s": round(flops / elapsed / 1e12, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
