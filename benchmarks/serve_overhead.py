"""What the serving client costs, and whether it sees the speed llama.cpp itself reports.

    python benchmarks/serve_overhead.py [--requests 256] [--new-tokens 128] [--prompt-tokens 32]

Prints, measured side by side in one run:

1. the client's own CPU time (this process: the event loop, aiohttp, the stream's events) over
   the steady-state window at concurrency 16,
   a. against a server that answers instantly (tests/fakeopenai.py, no delay): the client is then
      the bottleneck, so its share of the window is near one core by construction; what this
      measures is the client's CPU per token, and so the token rate it can follow within 5% of
      one core;
   b. against llama.cpp's server with the builtin tiny-s: the share of one core when serving
      (goal: under 5%), and the share (a) predicts at llama.cpp's token rate (the client alone,
      without sharing this machine's cores with the server);
   c. beside it, the floor of any asyncio client on this machine: a bare protocol on the same
      event loop that only notes when each read came (no HTTP library, no parsing, the request
      written as bytes), over the same streams: what the kernel and the event loop cost per read,
      which no client built on them can go below;
2. the harness's tokens/s through llama.cpp at concurrency 1 (steady-state window, every
   request's prefill and HTTP included) against llama.cpp's own generation speed for the same
   requests (its ``timings.predicted_per_second``, decode only; over a round their harmonic
   mean, which is its total tokens over its total decode time, as the harness's figure is), the
   median of five rounds; goal: at least 0.9. Requests of 128 new tokens, llama-bench's own
   generation test (tg128); 32 are shown beside, where a request's fixed costs (prefill, the
   server's own 1.4 ms from a request to its first token beyond its timed prefill, which a bare
   socket sees too) weigh four times as much.

Needs the serve extra and llama.cpp built (scripts/install-llamacpp.sh); 1b and 2 are skipped,
with a line saying so, without it.

3. the anchor (issue 23): our client against guidellm, a well-known load generator (httpx,
   several processes), on the same llama-server, at the same shape (``--prompt-tokens``,
   ``--new-tokens``, no prompt cache, end-of-sequence ignored), at concurrency 1 and 16:
   tokens/s (output tokens from the first send to the last end; guidellm's own benchmark start
   and end) and client CPU per token (ours: this process's CPU over the load; guidellm's: its
   whole process tree's, sampled every 50 ms and interpolated at its benchmark's start and end,
   so its start-up is left out), with the ratios. Goals: our CPU per token no more than
   guidellm's, and tokens/s at concurrency 1 at least 0.95 of guidellm's.
   ``--anchor-only`` runs this part alone. guidellm's pins (click, datasets, torch) do not fit
   the project's environment, so it lives in a venv of its own that sees the project's
   site-packages for the heavy ones (torch, transformers)::

       python -m venv /tmp/guidellm-venv
       python -c 'import site; print(site.getsitepackages()[0])' \
           > /tmp/guidellm-venv/lib/python3.11/site-packages/project.pth
       pip freeze | grep -E '^(torch|transformers|numpy|datasets|tokenizers|huggingface.hub)==' \
           > /tmp/guidellm-constraints.txt
       /tmp/guidellm-venv/bin/pip install -c /tmp/guidellm-constraints.txt guidellm==0.8.1

   (the first and third commands in the project's venv); ``--guidellm PATH`` names another copy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
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


def floor_share(
    host: str, port: int, payloads: list[dict], concurrency: int
) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of a bare asyncio protocol streaming ``payloads`` closed-loop:
    it writes each request as bytes and only notes each read's time; llama.cpp closes the
    connection after a stream, which ends the request. A reference floor, not a client."""
    import uvloop

    class Bare(asyncio.Protocol):
        def __init__(self, done: asyncio.Future) -> None:
            self.done, self.reads = done, []

        def data_received(self, data: bytes) -> None:
            self.reads.append(time.perf_counter())

        def connection_lost(self, exc) -> None:
            if not self.done.done():
                self.done.set_result(len(self.reads))

    bodies = [json.dumps(p).encode() for p in payloads]
    head = "POST /v1/completions HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\n"

    async def one(body: bytes) -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        transport, _ = await loop.create_connection(lambda: Bare(done), host, port)
        request = head.format(host, port) + f"Content-Length: {len(body)}\r\n\r\n"
        transport.write(request.encode() + body)
        await done

    async def main() -> tuple[float, float]:
        queue = list(bodies)

        async def client() -> None:
            while queue:
                await one(queue.pop())

        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return time.process_time() - cpu0, time.perf_counter() - t0

    return uvloop.run(main())


def c1_ratio(engine, payloads: list[dict], label: str) -> float | None:
    """The harness's tokens/s at concurrency 1 against llama.cpp's own decode speed."""
    run_closed_loop(engine.completions_url, payloads[:2], 1)  # warm up
    marks: dict[str, float] = {}
    result = run_closed_loop(
        engine.completions_url,
        payloads,
        1,
        on_open=lambda: marks.setdefault("t0", time.perf_counter()),
        on_close=lambda: marks.setdefault("t1", time.perf_counter()),
    )
    harness_tps = result.tokens_in_window() / (marks["t1"] - marks["t0"])
    own = [r.server_tokens_per_s for r in result.requests if r.server_tokens_per_s]
    if not own:
        print("llama.cpp sent no timings: its own speed is unknown")
        return None
    # every request decodes the same count: tokens over total time is the speeds' harmonic mean
    own_tps = statistics.harmonic_mean(own)
    ratio = harness_tps / own_tps
    busy = [r.server_busy_ms for r in result.requests if r.server_busy_ms]
    n = payloads[0]["max_tokens"]
    own_e2e = n / (statistics.mean(busy) / 1000)
    rs = result.requests
    gaps = [b.sent_s - a.end_s for a, b in zip(rs, rs[1:], strict=False)]
    ms = lambda xs: statistics.median(xs) * 1000  # noqa: E731
    print(
        f"llama.cpp, concurrency 1, {label}: harness {harness_tps:.0f} tokens/s against "
        f"llama.cpp's own decode {own_tps:.0f} tokens/s: ratio {ratio:.3f}; against its own "
        f"prefill + decode time ({own_e2e:.0f} tokens/s): {harness_tps / own_e2e:.3f}\n"
        f"  a request (medians): {ms([r.latency_s for r in rs]):.2f} ms = TTFT "
        f"{ms([r.ttft_s for r in rs]):.2f} + first to last token "
        f"{ms([r.token_s[-1] - r.token_s[0] for r in rs]):.2f} + to its end "
        f"{ms([r.end_s - r.token_s[-1] for r in rs]):.2f}, then {ms(gaps):.3f} to the next; "
        f"llama.cpp busy {statistics.median(busy):.2f} ms"
    )
    return ratio


#: where the anchor, guidellm, is looked for when --guidellm is not given
GUIDELLM_VENV = Path(tempfile.gettempdir()) / "guidellm-venv" / "bin" / "guidellm"


def tree_cpu_s(proc) -> float:
    """CPU seconds of a process and every descendant alive now (psutil), with what it reaped."""
    import psutil

    total = 0.0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def run_ours(url: str, payloads: list[dict], concurrency: int) -> dict:
    """Our client over a whole load: tokens/s from first send to last end, CPU per token."""
    cpu0 = time.process_time()
    result = run_closed_loop(url, payloads, concurrency)
    cpu_s = time.process_time() - cpu0
    ok = result.ok
    tokens = sum(r.tokens for r in ok)
    span = max(r.end_s for r in ok) - min(r.sent_s for r in result.requests)
    return {"tokens": tokens, "s": span, "cpu_s": cpu_s, "failed": len(result.failed)}


def run_guidellm(
    guidellm: Path,
    base_url: str,
    model: str,
    tokenizer: Path,
    concurrency: int,
    requests: int,
    p: int,
    n: int,
    out: Path,
) -> dict:
    """guidellm over the same load: its own benchmark's start and end (its JSON report), its
    process tree's CPU in between (sampled every 50 ms, interpolated at those instants), and
    the output tokens of its successful requests."""
    import psutil

    report = out / f"guidellm-c{concurrency}-{time.monotonic_ns()}.json"
    cmd = [
        str(guidellm), "run",
        "--backend", f"kind=openai_http,target={base_url},model={model},"
        "request_format=/v1/completions,extras.body.cache_prompt=false",
        "--profile", f"kind=concurrent,streams={concurrency}",
        "--constraint", f"kind=max_requests,count={requests}",
        "--data", f"kind=synthetic_text,prompt_tokens={p},output_tokens={n}",
        "--tokenizer", f"kind=huggingface_auto,model={tokenizer}",
        "--output", f"kind=json,path={report}",
        "--disable-console",
    ]  # fmt: skip
    log = (out / "guidellm.log").open("ab")
    try:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=out)
    finally:
        log.close()
    watched = psutil.Process(proc.pid)
    samples: list[tuple[float, float]] = []
    while proc.poll() is None:
        samples.append((time.time(), tree_cpu_s(watched)))
        time.sleep(0.05)
    if proc.returncode != 0 or not report.exists():
        raise HarnessError(f"guidellm exited with {proc.returncode}; see {out / 'guidellm.log'}")
    bench = json.loads(report.read_text())["benchmarks"][0]
    t0, t1 = float(bench["start_time"]), float(bench["end_time"])

    def cpu_at(t: float) -> float:
        for (ta, ca), (tb, cb) in zip(samples, samples[1:], strict=False):
            if ta <= t <= tb:
                return ca + (cb - ca) * (t - ta) / (tb - ta) if tb > ta else ca
        raise HarnessError("guidellm's benchmark fell outside the CPU samples")

    ok = bench["requests"]["successful"]
    return {
        "tokens": sum(int(r["output_tokens"] or 0) for r in ok),
        "s": t1 - t0,
        "cpu_s": cpu_at(t1) - cpu_at(t0),
        "failed": len(bench["requests"]["errored"]) + len(bench["requests"]["incomplete"]),
    }


def anchor(engine, tokenizer: Path, guidellm: Path, p: int, n: int, tmp: Path) -> None:
    """Our client against guidellm on the same llama-server, shape and concurrency (1 and 16):
    tokens/s and client CPU per token of each, and their ratios; rounds alternated (ours,
    guidellm, guidellm, ours, ours, guidellm), the median of each."""
    for concurrency, requests in ((1, 16), (16, 64)):
        anchor_at(engine, tokenizer, guidellm, concurrency, requests, p, n, tmp)


def anchor_at(
    engine,
    tokenizer: Path,
    guidellm: Path,
    concurrency: int,
    requests: int,
    p: int,
    n: int,
    tmp: Path,
) -> None:
    engine.start(
        parallel=concurrency, ctx_per_slot=p + n + 64, log_path=tmp / f"anchor{concurrency}.log"
    )
    model = engine.columns.get("model") or "model"
    extra = engine.request_extra(False)
    seeds = iter(range(100, 200))

    def ours() -> dict:
        ids = engine.prompt_ids(requests, p, next(seeds))
        payloads = [completion_payload(model, i, n, **extra) for i in ids]
        return run_ours(engine.completions_url, payloads, concurrency)

    def theirs() -> dict:
        return run_guidellm(
            guidellm, engine.base_url, model, tokenizer, concurrency, requests, p, n, tmp
        )

    run_closed_loop(
        engine.completions_url,
        [completion_payload(model, i, n, **extra) for i in engine.prompt_ids(concurrency, p, 7)],
        concurrency,
    )  # warm up
    a1, g1, g2, a2, a3, g3 = ours(), theirs(), theirs(), ours(), ours(), theirs()
    rows = {"harness": [a1, a2, a3], "guidellm": [g1, g2, g3]}
    figures = {}
    for who, runs in rows.items():
        tps = statistics.median(r["tokens"] / r["s"] for r in runs)
        us = statistics.median(r["cpu_s"] / r["tokens"] * 1e6 for r in runs)
        failed = sum(r["failed"] for r in runs)
        figures[who] = (tps, us)
        print(
            f"anchor, concurrency {concurrency}, {requests} requests of {p} + {n} tokens, "
            f"{who}: {tps:.0f} tokens/s, {us:.1f} us of client CPU per token"
            + (f", {failed} failed" if failed else "")
        )
    (h_tps, h_us), (g_tps, g_us) = figures["harness"], figures["guidellm"]
    goal = ""
    if concurrency == 1:
        goal = f" (goal >= 0.95: {'met' if h_tps / g_tps >= 0.95 else 'NOT met'})"
    print(
        f"anchor, concurrency {concurrency}: tokens/s harness / guidellm "
        f"{h_tps / g_tps:.3f}{goal}; CPU per token harness / guidellm {h_us / g_us:.3f} "
        f"(goal <= 1: {'met' if h_us <= g_us else 'NOT met'})"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument(
        "--anchor-only", action="store_true", help="only part 3: our client against guidellm"
    )
    ap.add_argument("--guidellm", type=Path, default=None, help="the guidellm program")
    args = ap.parse_args(argv)
    n, p = args.new_tokens, args.prompt_tokens
    tmp = Path(tempfile.mkdtemp(prefix="serve-overhead-"))
    if args.anchor_only:
        return anchor_part(args, tmp)

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
        url = f"http://127.0.0.1:{port}/v1/completions"
        client_share(url, payloads[:32], 16)  # warm up
        cpu_s, win_s, tokens = client_share(url, payloads, 16)
    finally:
        fake.stop()
    per_token_s = cpu_s / tokens
    print(
        f"instant server, concurrency 16, {n} tokens a request: client CPU {cpu_s:.3f} s in a "
        f"{win_s:.3f} s window ({cpu_s / win_s:.0%} of one core: the client is the bottleneck), "
        f"{tokens} tokens: {per_token_s * 1e6:.1f} us of client CPU per token; within 5% of one "
        f"core it can follow {0.05 / per_token_s:.0f} tokens/s"
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
        ids = engine.prompt_ids(args.requests, p, 1)
        payloads = [completion_payload("tiny-s", i, n, cache_prompt=False) for i in ids]
        run_closed_loop(engine.completions_url, payloads[:16], 16)  # warm up
        cpu_s, win_s, tokens = client_share(engine.completions_url, payloads, 16)
        share, rate = cpu_s / win_s, tokens / win_s
        print(
            f"llama.cpp, concurrency 16: client CPU {cpu_s:.3f} s in a {win_s:.3f} s window, "
            f"{rate:.0f} tokens/s, {cpu_s / tokens * 1e6:.1f} us per token: client share "
            f"{share:.1%} of one core (goal < 5%: {'met' if share < 0.05 else 'NOT met'}); "
            f"the instant server's cost per token predicts {per_token_s * rate:.1%} at this rate"
        )
        bare = [completion_payload("tiny-s", i, n) for i in engine.prompt_ids(args.requests, p, 2)]
        port16 = int(engine.base_url.rsplit(":", 1)[1])
        bare_cpu, bare_s = floor_share("127.0.0.1", port16, bare, 16)
        bare_tokens = len(bare) * n
        print(
            f"  the floor, a bare asyncio protocol on the same streams: CPU {bare_cpu:.3f} s in "
            f"{bare_s:.3f} s, {bare_tokens / bare_s:.0f} tokens/s, "
            f"{bare_cpu / bare_tokens * 1e6:.1f} us per token: {bare_cpu / bare_s:.1%} of one core"
            f" ({bare_cpu / bare_tokens / (cpu_s / tokens):.0%} of the client's cost per token)"
        )

        engine.start(parallel=1, ctx_per_slot=p + max(n, 32) + 16, log_path=tmp / "server1.log")
        # five rounds of fresh prompts: one round's ratio moves by several hundredths with the load
        ratios = [
            c1_ratio(engine, payloads[k * 12 : (k + 1) * 12], f"{n} new tokens, round {k + 1}")
            for k in range(5)
        ]
        short = [completion_payload("tiny-s", i, 32, cache_prompt=False) for i in ids[64:112]]
        c1_ratio(engine, short, "32 new tokens")
        if None in ratios:
            return 1
        ratio = statistics.median(ratios)
        print(
            f"concurrency 1, {n} new tokens: median ratio {ratio:.3f} of 5 rounds "
            f"(goal >= 0.9: {'met' if ratio >= 0.9 else 'NOT met'})"
        )
    finally:
        engine.close()
    return anchor_part(args, tmp)


def anchor_part(args, tmp: Path) -> int:
    """Part 3, where guidellm and llama.cpp are installed (a line saying why not otherwise)."""
    import shutil

    from harness.engines.llamacpp import LlamaCppEngine
    from harness.models import gguf

    guidellm = args.guidellm or (
        Path(found) if (found := shutil.which("guidellm")) else GUIDELLM_VENV
    )
    if not guidellm.exists():
        print(f"anchor part skipped: guidellm not found ({guidellm}); see the docstring")
        return 0
    engine = LlamaCppEngine()
    try:
        engine.load(
            {"name": "tiny-s", "source": "builtin:tiny-s"},
            {"quantization": "gguf-f16"},
            # one thread, as suites/serving.yaml: the server on one core, the client on the other
            {"name": "cpu", "device": "cpu", "threads": 1},
            tmp / "artifacts",
        )
    except HarnessError as e:
        print(f"anchor part skipped: {e}")
        return 0
    try:
        tokenizer = gguf.saved_tokenizer(engine.gguf_path)
        anchor(engine, tokenizer, guidellm, args.prompt_tokens, args.new_tokens, tmp)
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
