"""A fake OpenAI-compatible completions server for tests and benchmarks/serve_overhead.py.

    python tests/fakeopenai.py --port P [--token-delay-s S] [--parallel N] [--die-after N]
        [--fail-health] [--idle-close-s S] [--prompt-cache] [--prefill-s S]
        [--fault KIND --fault-at N]

Streams ``max_tokens`` chunks per request (one token each, as llama.cpp does), ``--token-delay-s``
apart (after ``--prefill-s``, default 0, before the first: a prompt's prefill) (0: it answers instantly, so the client's own cost can be measured), then a usage chunk and
``[DONE]``. ``--die-after N`` exits the process in the middle of request N (a server that dies
mid-window); ``--fail-health`` never answers /health with 200; ``--parallel N`` streams at most
N answers at once, as a server's slots do (the rest wait their turn); ``--idle-close-s S`` closes a
connection that has sent no request within S seconds (llama.cpp's and uvicorn's keep-alive do so
after 5). ``/metrics`` counts the requests, the connections they came on, and the prompt tokens
prefilled (``fake:prompt_tokens_total``, as llama.cpp's ``llamacpp:prompt_tokens_total``): with
``--prompt-cache`` a prompt seen before costs one token unless its request says
``cache_prompt: false`` (llama.cpp's prompt cache). ``--fault KIND --fault-at N`` spoils request N
(counted from 1) only: ``http500`` answers 500, ``cut`` closes the connection half-way through the
stream, ``garbage`` streams a line that is not JSON half-way, ``stall`` stops sending half-way
(and holds the connection open), ``exit`` ends the process half-way (as ``--die-after``). Listens
on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from aiohttp import web


def _event(obj: dict) -> bytes:
    # compact separators, as llama.cpp and vLLM write their chunks
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


FAULTS = ("http500", "cut", "garbage", "stall", "exit")


def build_app(
    token_delay_s: float,
    die_after: int | None,
    fail_health: bool,
    parallel: int | None = None,
    prompt_cache: bool = False,
    fault: str | None = None,
    fault_at: int = 1,
    prefill_s: float = 0.0,
) -> web.Application:
    state = {"requests": 0, "peers": set(), "prompt_tokens": 0, "seen": set()}
    slots = asyncio.Semaphore(parallel) if parallel else None

    async def health(_request):
        if fail_health:
            return web.json_response({"status": "loading"}, status=503)
        return web.json_response({"status": "ok"})

    async def metrics(_request):
        return web.Response(
            text=f"fake_requests_total {state['requests']}\n"
            f"fake_request_connections_total {len(state['peers'])}\n"
            f"fake:prompt_tokens_total {state['prompt_tokens']}\n"
        )

    async def completions(request):
        if slots is None:
            return await answer(request)
        async with slots:
            return await answer(request)

    async def answer(request):
        body = await request.json()
        state["requests"] += 1
        number = state["requests"]
        state["peers"].add(request.transport.get_extra_info("peername"))
        prompt = body.get("prompt") or []
        key = tuple(prompt) if isinstance(prompt, list) else prompt
        cached = prompt_cache and body.get("cache_prompt", True) and key in state["seen"]
        state["prompt_tokens"] += 1 if cached else len(prompt)
        state["seen"].add(key)
        spoil = fault if number == fault_at else None
        if spoil == "http500":
            return web.json_response(
                {"error": {"message": "internal failure (on purpose)"}}, status=500
            )
        n = int(body.get("max_tokens", 16))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if prefill_s:
            await asyncio.sleep(prefill_s)
        for i in range(n):
            dying = die_after is not None and number >= die_after
            if (dying or spoil == "exit") and i == n // 2:
                print("fake server: dying on purpose", flush=True)
                os._exit(3)
            if spoil == "cut" and i == n // 2:
                request.transport.close()
                return resp
            if spoil == "garbage" and i == n // 2:
                await resp.write(b"data: {this is not json\n\n")
            if spoil == "stall" and i == n // 2:
                await asyncio.sleep(3600)
            chunk = {"choices": [{"index": 0, "text": f" t{i}", "finish_reason": None}]}
            await resp.write(_event(chunk))
            # even an instant server streams its requests side by side, a token of each in turn
            # (as a server's slots decode together), not one whole answer after another
            await asyncio.sleep(token_delay_s)
        final = {
            "choices": [{"index": 0, "text": "", "finish_reason": "length"}],
            "timings": {"predicted_per_second": 1.0 / token_delay_s if token_delay_s else 1e6},
        }
        await resp.write(_event(final))
        usage = {"choices": [], "usage": {"completion_tokens": n}}
        await resp.write(_event(usage))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/v1/completions", completions)
    return app


def close_idle_connections(after_s: float) -> None:
    """Close each connection that has not sent a request within ``after_s`` of opening."""
    from aiohttp import web_protocol

    made = web_protocol.RequestHandler.connection_made
    received = web_protocol.RequestHandler.data_received
    idle: dict = {}  # handler -> its timer (handlers have __slots__)

    def connection_made(self, transport) -> None:
        made(self, transport)
        idle[self] = asyncio.get_running_loop().call_later(after_s, transport.close)

    def data_received(self, data: bytes) -> None:
        timer = idle.pop(self, None)
        if timer is not None:
            timer.cancel()
        received(self, data)

    web_protocol.RequestHandler.connection_made = connection_made
    web_protocol.RequestHandler.data_received = data_received


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--token-delay-s", type=float, default=0.0)
    ap.add_argument("--die-after", type=int, default=None)
    ap.add_argument("--parallel", type=int, default=None)
    ap.add_argument("--fail-health", action="store_true")
    ap.add_argument("--idle-close-s", type=float, default=None)
    ap.add_argument("--prompt-cache", action="store_true")
    ap.add_argument("--prefill-s", type=float, default=0.0)
    ap.add_argument("--fault", choices=FAULTS, default=None)
    ap.add_argument("--fault-at", type=int, default=1)
    args = ap.parse_args(argv)
    if args.idle_close_s is not None:
        close_idle_connections(args.idle_close_s)
    print(f"fake server on 127.0.0.1:{args.port} (pid {os.getpid()})", flush=True)
    if args.fail_health:
        print("fake server: model failed to load (on purpose)", flush=True)
    app = build_app(
        args.token_delay_s,
        args.die_after,
        args.fail_health,
        args.parallel,
        args.prompt_cache,
        args.fault,
        args.fault_at,
        args.prefill_s,
    )
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    sys.exit(main())
