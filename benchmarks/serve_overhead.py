"""What the serving client costs, and whether it sees the speed llama.cpp itself reports.

    python benchmarks/serve_overhead.py [--requests 256] [--new-tokens 32]

Prints, measured side by side in one run:

1. the client's own CPU time (this process: the asyncio loop, aiohttp, JSON of the stream) as a
   share of one core over the steady-state window at concurrency 16,
   a. against a server that answers instantly (tests/fakeopenai.py, no delay: the client's cost
      per token, with nothing to wait for),
   b. against llama.cpp's server with the builtin tiny-s (what the overhead is when serving);
   goal: under 5% of one core when serving;
2. the harness's tokens/s through llama.cpp at concurrency 1 (steady-state window) against
   llama.cpp's own generation speed for the same requests (its ``timings.predicted_per_second``);
   goal: at least 0.9.

Needs the serve extra and llama.cpp built (scripts/install-llamacpp.sh); 2 is skipped, with a
line saying so, without it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.engines.client import completion_payload, run_closed_loop  # noqa: E402
from harness.engines.server import ServerProcess, free_port  # noqa: E402
from harness.errors import HarnessError  # noqa: E402


def client_share(url: str, payloads: list[dict], concurrency: int) -> tuple[float, float, int]:
    """(CPU seconds of this process in the window, window seconds, tokens in the window)."""
    marks: dict[str, float] = {}

    def on_open() -> None:
        marks["cpu0"], marks["t0"] = time.process_time(), time.perf_counter()

    def on_close() -> None:
        marks["cpu1"], marks["t1"] = time.process_time(), time.perf_counter()

    result = run_closed_loop(url, payloads, concurrency, on_open, on_close)
    return marks["cpu1"] - marks["cpu0"], marks["t1"] - marks["t0"], result.tokens_in_window()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    args = ap.parse_args(argv)
    n, p = args.new_tokens, args.prompt_tokens
    tmp = Path(tempfile.mkdtemp(prefix="serve-overhead-"))

    # 1a: an instant server
    port = free_port()
    fake = ServerProcess(
        [sys.executable, str(ROOT / "tests" / "fakeopenai.py"), "--port", str(port)],
        f"http://127.0.0.1:{port}/health",
        tmp / "fake.log",
    ).start()
    try:
        fake.wait_healthy(60)
        payloads = [completion_payload("m", [5] * p, n) for _ in range(args.requests)]
        cpu_s, win_s, tokens = client_share(f"http://127.0.0.1:{port}/v1/completions", payloads, 16)
    finally:
        fake.stop()
    per_token_us = cpu_s / tokens * 1e6
    print(
        f"instant server, concurrency 16: client CPU {cpu_s:.3f} s in a {win_s:.3f} s window "
        f"({cpu_s / win_s:.1%} of one core; it is the bottleneck), {tokens} tokens: "
        f"{per_token_us:.1f} us of client CPU per token"
    )

    # 1b and 2: llama.cpp
    from harness.engines.llamacpp import LlamaCppEngine

    engine = LlamaCppEngine()
    try:
        engine.load(
            {"name": "tiny-s", "source": "builtin:tiny-s"},
            {"quantization": "gguf-f16"},
            {"name": "cpu", "device": "cpu"},
            tmp / "artifacts",
        )
    except HarnessError as e:
        print(f"llama.cpp part skipped: {e}")
        return 0
    try:
        engine.start(parallel=16, ctx_per_slot=p + n + 16, log_path=tmp / "server16.log")
        payloads = engine.prompt_ids(args.requests, p, 1)
        payloads = [completion_payload("tiny-s", ids, n) for ids in payloads]
        run_closed_loop(engine.completions_url, payloads[:16], 16)  # warm up
        cpu_s, win_s, tokens = client_share(engine.completions_url, payloads, 16)
        share = cpu_s / win_s
        print(
            f"llama.cpp, concurrency 16: client CPU {cpu_s:.3f} s in a {win_s:.3f} s window, "
            f"{tokens / win_s:.0f} tokens/s: client share {share:.2%} of one core "
            f"(goal < 5%: {'met' if share < 0.05 else 'NOT met'})"
        )

        engine.start(parallel=1, ctx_per_slot=p + n + 16, log_path=tmp / "server1.log")
        few = payloads[:32]
        run_closed_loop(engine.completions_url, few[:2], 1)  # warm up
        marks: dict[str, float] = {}
        result = run_closed_loop(
            engine.completions_url,
            few,
            1,
            on_open=lambda: marks.setdefault("t0", time.perf_counter()),
            on_close=lambda: marks.setdefault("t1", time.perf_counter()),
        )
        harness_tps = result.tokens_in_window() / (marks["t1"] - marks["t0"])
        own = [r.server_tokens_per_s for r in result.requests if r.server_tokens_per_s]
        if not own:
            print("llama.cpp sent no timings: its own speed is unknown")
            return 1
        own_tps = statistics.median(own)
        ratio = harness_tps / own_tps
        print(
            f"llama.cpp, concurrency 1: harness {harness_tps:.0f} tokens/s (steady window, "
            f"prefill and HTTP included) against llama.cpp's own {own_tps:.0f} tokens/s "
            f"(decode only): ratio {ratio:.3f} (goal >= 0.9: {'met' if ratio >= 0.9 else 'NOT met'})"
        )
        busy = [r.server_busy_ms for r in result.requests if r.server_busy_ms]
        own_e2e = n / (statistics.median(busy) / 1000)
        print(
            f"  and against llama.cpp's own time per request (prefill + decode, {own_e2e:.0f} "
            f"tokens/s): ratio {harness_tps / own_e2e:.3f} (what the client and HTTP cost)"
        )
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
