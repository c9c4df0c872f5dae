"""Serving without llama.cpp: the server lifecycle, the streaming client and its steady-state
window, the serve workload end to end against a fake OpenAI server, and the refusals."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from runhelpers import FAST, PY, TESTS, harness, results_by_name

from harness.engines import client
from harness.engines.client import (
    completion_payload,
    percentile,
    poisson_schedule,
    run_closed_loop,
    run_open_loop,
)
from harness.engines.server import ServerProcess, check_port_free, free_port
from harness.errors import HarnessError
from harness.suite import SuiteError, expand, validate_data

FAKE = str(TESTS / "fakeopenai.py")
pytestmark = pytest.mark.timeout(300)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) is not a running server
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pid: int, timeout_s: float = 20) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def fake_server(tmp_path: Path, *args: str) -> ServerProcess:
    port = free_port()
    return ServerProcess(
        [PY, FAKE, "--port", str(port), *args],
        f"http://127.0.0.1:{port}/health",
        tmp_path / "server.log",
        name="fake server",
    )


# ------------------------------------------------------------------------------ lifecycle
def test_server_starts_in_its_own_group_on_localhost_and_stop_leaves_nothing(tmp_path):
    server = fake_server(tmp_path).start()
    try:
        assert server.wait_healthy(60) >= 0
        assert os.getpgid(server.pid) == server.pid != os.getpgid(0)
        port = int(server.health_url.rsplit(":", 1)[1].split("/")[0])
        with pytest.raises(HarnessError, match=f"port {port} on 127.0.0.1 is in use"):
            check_port_free(port)
        # it listens on 127.0.0.1 only: the port is free on the other addresses
        other = socket.gethostbyname(socket.gethostname())
        if other != "127.0.0.1":
            with socket.socket() as s:
                s.bind((other, port))
    finally:
        server.stop()
    assert wait_gone(server.pid)


def test_stop_ends_the_whole_group_also_what_the_server_started(tmp_path):
    # a "server" whose child outlives a TERM of the leader: killed with the group
    script = tmp_path / "srv.sh"
    script.write_text(
        f"#!/bin/sh\nsleep 300 &\necho $! > {tmp_path}/child.pid\nexec {PY} {FAKE} --port $1\n"
    )
    port = free_port()
    server = ServerProcess(
        ["sh", str(script), str(port)], f"http://127.0.0.1:{port}/health", tmp_path / "s.log"
    ).start()
    server.wait_healthy(60)
    child = int((tmp_path / "child.pid").read_text())
    assert alive(child)
    server.stop()
    assert wait_gone(server.pid) and wait_gone(child)


def test_a_server_that_never_becomes_healthy_fails_with_its_log(tmp_path):
    server = fake_server(tmp_path, "--fail-health").start()
    with pytest.raises(HarnessError) as e:
        server.wait_healthy(3)
    assert "did not become healthy within 3 s" in str(e.value)
    assert "model failed to load (on purpose)" in str(e.value)
    assert "\n" not in str(e.value)
    assert wait_gone(server.pid)


def test_a_server_that_exits_at_start_fails_with_its_status_and_log(tmp_path):
    server = ServerProcess(
        [PY, "-c", "import sys; print('cannot open model.gguf'); sys.exit(4)"],
        "http://127.0.0.1:9/health",
        tmp_path / "s.log",
    ).start()
    with pytest.raises(HarnessError, match=r"exited with status 4.*cannot open model\.gguf"):
        server.wait_healthy(30)


def test_the_server_dies_with_the_worker_that_started_it(tmp_path):
    """A worker killed outright (timeout, Ctrl-C: the launcher kills its group) leaves no server."""
    code = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(TESTS.parent)!r})
        from harness.engines.server import ServerProcess, free_port
        port = free_port()
        s = ServerProcess([{PY!r}, {FAKE!r}, "--port", str(port)],
                          f"http://127.0.0.1:{{port}}/health", {str(tmp_path / "w.log")!r}).start()
        s.wait_healthy(60)
        print(s.pid, flush=True)
        time.sleep(300)
        """
    )
    worker = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        server_pid = int(worker.stdout.readline())
        assert alive(server_pid)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
        assert wait_gone(server_pid)
    finally:
        if worker.poll() is None:
            worker.kill()


# ------------------------------------------------------------------ client and window
def test_steady_state_window_opens_with_all_first_tokens_and_closes_at_drain(tmp_path):
    server = fake_server(tmp_path, "--token-delay-s", "0.01").start()
    try:
        server.wait_healthy(60)
        url = server.health_url.replace("/health", "/v1/completions")
        payloads = [completion_payload("m", [5, 6, 7], 10) for _ in range(12)]
        marks = {}
        result = run_closed_loop(
            url,
            payloads,
            4,
            on_open=lambda: marks.setdefault("open", time.perf_counter()),
            on_close=lambda: marks.setdefault("close", time.perf_counter()),
        )
    finally:
        server.stop()
    assert len(result.requests) == 12
    assert all(len(r.token_s) == 10 and r.usage_tokens == 10 for r in result.requests)
    first_four = sorted(result.requests, key=lambda r: r.sent_s)[:4]
    # opened at the last of the first four first tokens, not before
    assert result.open_s >= max(r.token_s[0] for r in first_four)
    assert marks["open"] <= result.open_s
    # closed when the first request of the drain finished, before the last one did
    assert result.close_s < max(r.end_s for r in result.requests)
    inside = result.tokens_in_window()
    assert 0 < inside < 120
    assert result.steady_s > 0


def fake_metrics(server: ServerProcess) -> dict[str, float]:
    import urllib.request

    url = server.health_url.replace("/health", "/metrics")
    with urllib.request.urlopen(url, timeout=10) as f:
        lines = f.read().decode().split("\n")
    return {k: float(v) for k, v in (line.split() for line in lines if line)}


def count_connections(monkeypatch) -> list:
    """Every connection aiohttp's connector opens, spares included."""
    import aiohttp

    opened = []
    create = aiohttp.TCPConnector._create_connection

    async def counting(self, req, traces, timeout):
        proto = await create(self, req, traces, timeout)
        opened.append(proto)
        return proto

    monkeypatch.setattr(aiohttp.TCPConnector, "_create_connection", counting)
    return opened


def closed_loop_on_fake(tmp_path: Path, fake_args: list[str], requests: int, tokens: int):
    """``requests`` of ``tokens`` one at a time against a fake server started with
    ``fake_args``: the load's result, and the fake's metrics after it."""
    server = fake_server(tmp_path, *fake_args).start()
    try:
        server.wait_healthy(60)
        url = server.health_url.replace("/health", "/v1/completions")
        payloads = [completion_payload("m", [5], tokens) for _ in range(requests)]
        return run_closed_loop(url, payloads, 1), fake_metrics(server)
    finally:
        server.stop()


def test_each_request_goes_on_a_connection_opened_ahead_of_it(tmp_path, monkeypatch):
    opened = count_connections(monkeypatch)
    result, seen = closed_loop_on_fake(tmp_path, ["--token-delay-s", "0.005"], 10, 8)
    assert len(result.requests) == 10 and all(len(r.token_s) == 8 for r in result.requests)
    # a connection of its own for each request (the server may close it after the stream) ...
    assert seen["fake_request_connections_total"] == 10
    # ... opened while the one before was streaming: one spare more than requests, not two
    # connections a request, and the last spare closed with the session
    assert len(opened) == 11
    assert not any(p.is_connected() for p in opened)


def test_a_spare_the_server_closed_or_too_old_is_replaced_not_sent_on(tmp_path, monkeypatch):
    opened = count_connections(monkeypatch)
    # the server closes a connection idle for 20 ms; each request takes about 100 ms
    fake = ["--token-delay-s", "0.01", "--idle-close-s", "0.02"]
    result, _ = closed_loop_on_fake(tmp_path, fake, 6, 10)
    assert all(len(r.token_s) == 10 for r in result.requests)
    assert len(opened) == 12  # every spare was closed under it: a fresh one each time
    opened.clear()
    # too old to trust, though still open
    monkeypatch.setattr(client, "SPARE_MAX_AGE_S", 0.0)
    result, seen = closed_loop_on_fake(tmp_path, ["--token-delay-s", "0.01"], 6, 10)
    assert all(len(r.token_s) == 10 for r in result.requests)
    assert len(opened) == 12 and seen["fake_request_connections_total"] == 6


@pytest.mark.parametrize("aiohttp_close", ["waiters", "none"])
def test_a_spare_still_opening_when_the_load_ends_is_cancelled(monkeypatch, aiohttp_close):
    """Closing the connector while a spare is still being opened cancels that opening, whether
    aiohttp's own ``_close`` hands back the waiters close() awaits (3.13 and newer) or returns
    None (3.9 to 3.12, which pyproject admits): that gave AttributeError on close."""
    import asyncio

    import aiohttp

    async def never_connects(self, req, traces, timeout):
        await asyncio.sleep(60)

    monkeypatch.setattr(aiohttp.TCPConnector, "_create_connection", never_connects)
    if aiohttp_close == "none":
        real_close = aiohttp.TCPConnector._close

        def close_returning_none(self, *args, **kwargs):
            real_close(self, *args, **kwargs)

        monkeypatch.setattr(aiohttp.TCPConnector, "_close", close_returning_none)

    async def load_ends_while_a_spare_opens():
        connector = client._spare_connector(4)
        connector._open_ahead(None, None)
        opening = connector._opening
        await asyncio.sleep(0)  # the spare's connect is under way
        await connector.close()
        await asyncio.sleep(0)
        return opening

    opening = asyncio.run(asyncio.wait_for(load_ends_while_a_spare_opens(), 5))
    assert opening is not None and opening.cancelled()


def test_requests_fewer_than_concurrency_are_refused():
    with pytest.raises(HarnessError, match="requests must be at least the concurrency"):
        run_closed_loop("http://127.0.0.1:9/v1/completions", [{}] * 2, 4)


class _Content:
    def __init__(self, chunks):
        self.chunks = chunks

    async def iter_any(self):
        for c in self.chunks:
            yield c


class _Response:
    status = 200

    def __init__(self, chunks):
        self.content = _Content(chunks)


def read(chunks: list[bytes], on_first=None) -> client.RequestTiming:
    import asyncio

    timing = client.RequestTiming(sent_s=time.perf_counter())
    asyncio.run(client._read_stream(_Response(chunks), timing, on_first))
    return timing


def test_the_stream_reader_counts_tokens_across_reads_crlf_spacing_and_a_missing_blank_line():
    tok = b'data: {"choices":[{"text":" a","index":0,"finish_reason":null}]}'
    spaced = b'data: {"choices": [{"text": " b", "finish_reason": null}]}'
    final = (
        b'data: {"choices":[{"text":"","finish_reason":"length"}],'
        b'"usage":{"completion_tokens":4},"timings":{"predicted_per_second":250.0,'
        b'"prompt_ms":2.0,"predicted_ms":12.0}}'
    )
    stream = tok + b"\r\n\r\n" + tok + b"\n\n" + spaced + b"\n\n" + tok + b"\n\n" + final
    # split everywhere, the CRLF pair and the JSON included
    chunks = [stream[:30], stream[30 : len(tok) + 1], stream[len(tok) + 1 : len(tok) + 3]]
    chunks += [stream[len(tok) + 3 : 150], stream[150:]]
    firsts = []
    t = read(chunks, lambda: firsts.append(1))
    assert len(t.token_s) == 4 and firsts == [1]
    assert t.usage_tokens == 4 and t.server_tokens_per_s == 250.0 and t.server_busy_ms == 14.0
    assert t.end_s >= t.token_s[-1]
    # [DONE] ends the read, whatever follows
    t = read([tok + b"\n\ndata: [DONE]\n\n" + tok + b"\n\n"])
    assert len(t.token_s) == 1


def test_the_stream_reader_refuses_garbage_and_errors_in_one_line():
    with pytest.raises(HarnessError, match="not JSON: b'{nope'"):
        read([b"data: {nope\n\n"])
    with pytest.raises(HarnessError, match="server streamed an error: .*overloaded"):
        read([b'data: {"error":{"message":"overloaded"}}\n\n'])
    with pytest.raises(HarnessError, match="not an object"):
        read([b"data: [1, 2]\n\n"])


def test_poisson_arrivals_are_seeded_with_the_rate_as_their_mean():
    a = poisson_schedule(4000, 50.0, 7)
    assert a == poisson_schedule(4000, 50.0, 7) and a != poisson_schedule(4000, 50.0, 8)
    gaps = [y - x for x, y in zip(a, a[1:], strict=False)]
    assert a[0] == 0.0 and min(gaps) > 0
    mean = sum(gaps) / len(gaps)
    assert mean == pytest.approx(1 / 50.0, rel=0.05)
    # exponential gaps: the standard deviation equals the mean (a fixed pace would give 0)
    sd = (sum((g - mean) ** 2 for g in gaps) / len(gaps)) ** 0.5
    assert sd == pytest.approx(mean, rel=0.1)


def test_an_open_loop_sends_at_its_arrivals_whatever_is_in_flight(tmp_path):
    # each request takes 8 x 25 ms = 0.2 s; arrivals at 40 rps overlap many of them
    server = fake_server(tmp_path, "--token-delay-s", "0.025").start()
    try:
        server.wait_healthy(60)
        url = server.health_url.replace("/health", "/v1/completions")
        payloads = [completion_payload("m", [5, 6], 8) for _ in range(30)]
        result = run_open_loop(url, payloads, 40.0, 3)
    finally:
        server.stop()
    rs = sorted(result.requests, key=lambda r: r.sent_s)
    assert len(rs) == 30 and all(len(r.token_s) == 8 for r in rs)
    schedule = poisson_schedule(30, 40.0, 3)
    start = rs[0].scheduled_s
    assert [r.scheduled_s - start for r in rs] == pytest.approx(schedule, abs=1e-9)
    assert max(r.lag_s for r in rs) < 0.1
    # a closed loop would wait for an answer first: here requests overlap
    overlap = max(sum(1 for o in rs if o.sent_s <= r.sent_s < o.end_s) for r in rs)
    assert overlap >= 4
    # the window spans the arrivals after the first tenth (3 of 30) up to the last one
    assert result.open_s == pytest.approx(rs[3].sent_s, abs=0.02)
    assert result.close_s == pytest.approx(rs[-1].sent_s, abs=0.02)
    assert result.close_s < max(r.end_s for r in rs)


def test_an_open_loop_refuses_a_bad_rate_and_too_few_requests():
    with pytest.raises(HarnessError, match="rate_rps must be a positive number"):
        run_open_loop("http://127.0.0.1:9/v1/completions", [{}] * 20, 0.0, 1)
    with pytest.raises(HarnessError, match="at least 10 requests"):
        run_open_loop("http://127.0.0.1:9/v1/completions", [{}] * 3, 5.0, 1)


def test_a_server_that_stops_answering_fails_its_requests_in_one_line_each(tmp_path):
    # a stall is a failed request, counted (issue 23: it used to end the whole load)
    server = fake_server(tmp_path, "--token-delay-s", "60").start()
    try:
        server.wait_healthy(60)
        url = server.health_url.replace("/health", "/v1/completions")
        t0 = time.monotonic()
        result = run_closed_loop(url, [completion_payload("m", [5], 4)] * 2, 2, timeout_s=1.0)
        assert time.monotonic() - t0 < 15
    finally:
        server.stop()
    assert len(result.failed) == 2 and not result.ok
    for r in result.failed:
        assert r.error == (
            "the stream stalled: no token for 1 s (request_timeout_s) after 1 tokens"
        )


def test_percentile_is_numpy_linear():
    import numpy as np

    xs = [0.3, 0.1, 0.9, 0.5, 0.7]
    for q in (50, 90, 99):
        assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))
    assert percentile([], 50) is None


# ------------------------------------------------------------------------ suite refusals
def serve_suite(variant: dict, workload: dict | None = None, device: str = "cpu", model=None):
    return {
        "name": "s",
        "carbon": {"intensity_g_per_kwh": 100},
        "measurement": FAST,
        "hardware": [{"name": "h", "device": device}],
        "models": [model or {"name": "tiny-s", "source": "builtin:tiny-s"}],
        "variants": [variant],
        "workloads": [
            workload
            or {"type": "serve", "concurrency": [1, 4], "requests": 8, "prompt_tokens": 8,
                "new_tokens": 8}
        ],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("variant", "kw", "message"),
    [
        ({"name": "v", "engine": "tgi"}, {}, "unknown engine 'tgi' (known: transformers, llamacpp"),
        (
            {"name": "v", "quantization": "gguf-q4_0"},
            {},
            "gguf-q4_0 is served by engine llamacpp, not transformers",
        ),
        (
            {"name": "v", "engine": "llamacpp", "quantization": "int8-dynamic"},
            {},
            "engine llamacpp runs GGUF types",
        ),
        (
            {"name": "v", "engine": "llamacpp"},
            {"device": "cuda:0"},
            "engine llamacpp is built for the cpu, not cuda:0",
        ),
        (
            {"name": "v", "engine": "llamacpp", "quantization": "gguf-q4_k_m"},
            {},
            "gguf-q4_k_m needs rows that are a multiple of 256; tiny-s has hidden_size 96",
        ),
        ({"name": "v", "engine": "openai"}, {}, "engine openai needs either command"),
        ({"name": "v", "url": "http://x"}, {}, "url: only engine openai takes it"),
    ],
)
def test_validate_refuses_what_an_engine_cannot_run(variant, kw, message):
    with pytest.raises(SuiteError) as e:
        validate_data(serve_suite(variant, **kw))
    assert message in str(e.value)


def test_validate_refuses_too_few_requests_for_the_concurrency():
    w = {"type": "serve", "concurrency": [16], "requests": 8, "prompt_tokens": 8, "new_tokens": 8}
    with pytest.raises(SuiteError, match="requests: 8 cannot keep 16 in flight"):
        validate_data(serve_suite({"name": "v", "engine": "llamacpp"}, w))


def test_the_matrix_serves_server_variants_and_runs_infer_in_process():
    data = serve_suite({"name": "q4", "engine": "llamacpp", "quantization": "gguf-q4_0"})
    data["variants"].append({"name": "fp32"})
    data["workloads"] += [
        {"type": "infer", "batch_sizes": [1], "prompt_tokens": 8, "new_tokens": 8},
        {"type": "accuracy", "tasks": ["arith_mc"], "limit": 10},
    ]
    names = sorted(c["case"] for c in expand(validate_data(data)))
    assert names == [
        "tiny-s/fp32/h/accuracy-arith_mc",
        "tiny-s/fp32/h/infer-b1",
        "tiny-s/q4/h/accuracy-arith_mc",
        "tiny-s/q4/h/serve-c1",
        "tiny-s/q4/h/serve-c4",
    ]


def test_harness_validate_names_an_unknown_engine_in_one_line(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(serve_suite({"name": "v", "engine": "tgi"})))
    proc = harness(["validate", str(path)], tmp_path)
    assert proc.returncode == 2
    assert "unknown engine 'tgi'" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_engine_not_installed_is_one_line_naming_the_script(tmp_path, monkeypatch):
    from harness.engines import create_engine

    monkeypatch.setenv("HARNESS_LLAMACPP_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(HarnessError) as e:
        create_engine("llamacpp").load(
            {"name": "tiny-s", "source": "builtin:tiny-s"}, None, {"device": "cpu"}, tmp_path
        )
    assert "engine llamacpp is not installed" in str(e.value)
    assert "scripts/install-llamacpp.sh" in str(e.value) and ".[serve]" in str(e.value)


# -------------------------------------------------------------- serve workload, end to end
def fake_variant(*args: str) -> dict:
    return {
        "name": "fake",
        "engine": "openai",
        "command": [PY, FAKE, "--port", "{port}", *args],
        "health_url": "http://127.0.0.1:{port}/health",
    }


def run_suite(tmp_path: Path, data: dict, timeout: float = 240):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    proc = harness(["run", str(path), "--out", str(tmp_path / "out")], tmp_path, timeout=timeout)
    run_dir = Path(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else None
    return proc, run_dir


def test_serve_cases_measure_the_steady_state_and_leave_no_server(tmp_path):
    data = serve_suite(fake_variant("--token-delay-s", "0.004"))
    proc, run_dir = run_suite(tmp_path, data)
    assert proc.returncode == 0, proc.stderr
    results = results_by_name(run_dir)
    assert set(results) == {"tiny-s/fake/h/serve-c1", "tiny-s/fake/h/serve-c4"}
    for name, result in results.items():
        assert result["status"] == "ok"
        rec = result["repetitions"][0]
        assert rec["concurrency"] == int(name[-1])
        assert rec["requests"] == 8 and rec["tokens_out"] < 8 * 8
        assert rec["steady_s"] == pytest.approx(rec["duration_s"])
        assert rec["energy_per_token_j"] == pytest.approx(rec["energy_j"] / rec["tokens_out"])
        assert rec["energy_per_request_j"] == pytest.approx(rec["energy_per_token_j"] * 8)
        for col in ("ttft_p50_s", "ttft_p99_s", "itl_p50_s", "itl_p90_s", "itl_p99_s"):
            assert rec[col] > 0
        assert rec["itl_p50_s"] <= rec["itl_p90_s"] <= rec["itl_p99_s"]
        case_dir = run_dir / "cases" / result["case_id"]
        assert "fake_requests_total" in (case_dir / "server-metrics.txt").read_text()
        pid = result["summary"]["server_pid"]
        assert not alive(pid)


def test_a_load_generator_that_takes_a_core_is_a_warning(tmp_path):
    # against an instant server the client (or the server beside it) is the bottleneck: the
    # client's share of the window is far above a tenth of one core
    w = {"type": "serve", "concurrency": [4], "requests": 64, "prompt_tokens": 4,
         "new_tokens": 32}  # fmt: skip
    proc, run_dir = run_suite(tmp_path, serve_suite(fake_variant(), w))
    assert proc.returncode == 0, proc.stderr
    (result,) = results_by_name(run_dir).values()
    rec = result["repetitions"][0]
    assert rec["client_cpu_s"] > 0.1 * rec["steady_s"]
    assert "the load generator used" in json.dumps(rec["warnings"])
    # its share of the CPU energy, by CPU time, is taken out of the figure and kept beside it
    assert rec["client_energy_method"].startswith("cpu-time share of the CPU energy")
    assert rec["client_energy_method"].endswith("subtracted")
    assert 0 < rec["client_energy_j"] < rec["energy_j"] + rec["client_energy_j"]
    assert rec["energy_per_token_j"] == pytest.approx(rec["energy_j"] / rec["tokens_out"])
    assert "is subtracted from the figure (client_energy_j)" in json.dumps(rec["warnings"])
    # an instant server's tokens come many to a read: their ITL is the client's, and says so
    assert rec["itl_coalesced_share"] > 0.1
    assert "in one read with the one before" in json.dumps(rec["warnings"])


def test_a_server_dying_mid_window_fails_the_case_with_the_reason(tmp_path):
    data = serve_suite(fake_variant("--die-after", "5"))
    data["workloads"][0]["concurrency"] = [1]
    proc, run_dir = run_suite(tmp_path, data)
    assert proc.returncode == 1
    (result,) = results_by_name(run_dir).values()
    assert result["status"] == "failed"
    assert "exited with status 3" in result["error"]
    assert "dying on purpose" in result["error"]


def test_a_port_in_use_fails_the_case_in_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        w = {"type": "serve", "concurrency": [1], "requests": 2, "prompt_tokens": 4,
             "new_tokens": 4, "port": port}  # fmt: skip
        proc, run_dir = run_suite(tmp_path, serve_suite(fake_variant(), w))
    assert proc.returncode == 1
    (result,) = results_by_name(run_dir).values()
    assert result["error"] == f"port {port} on 127.0.0.1 is in use; choose another port"


def test_a_server_already_running_at_a_url_is_measured_with_a_warning(tmp_path):
    # tokens 10 ms apart: two requests stream at once, so the steady window opens
    server = fake_server(tmp_path, "--token-delay-s", "0.01").start()
    try:
        server.wait_healthy(60)
        base = server.health_url.removesuffix("/health")
        variant = {"name": "fake", "engine": "openai", "url": base, "health_url": server.health_url}
        w = {"type": "serve", "concurrency": [2], "requests": 4, "prompt_tokens": 4,
             "new_tokens": 4}  # fmt: skip
        proc, run_dir = run_suite(tmp_path, serve_suite(variant, w))
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr
    (result,) = results_by_name(run_dir).values()
    warnings = json.dumps(result["repetitions"][0]["warnings"])
    assert "only this machine's energy was measured" in warnings


def test_open_loop_cases_are_their_own_with_the_servers_slots():
    w = {"type": "serve", "concurrency": [1, 4], "rate_rps": [2, 0.5], "requests": 16,
         "prompt_tokens": 8, "new_tokens": 8}  # fmt: skip
    cases = expand(validate_data(serve_suite(fake_variant(), w)))
    names_ = [c["case"] for c in cases]
    names = sorted(c["workload"].get("rate_rps") or 0 for c in cases)
    assert names == [0, 0, 0.5, 2]
    open_loop = [c for c in cases if c["workload"].get("rate_rps")]
    assert {c["workload"]["concurrency"] for c in open_loop} == {4}
    assert "tiny-s/fake/h/serve-rps0.5" in names_ and "tiny-s/fake/h/serve-c4" in names_
    w2 = {**w, "concurrency": [], "slots": 3}
    cases = expand(validate_data(serve_suite(fake_variant(), w2)))
    assert [c["workload"]["concurrency"] for c in cases] == [3, 3]


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"concurrency": [], "rate_rps": []}, "serve needs a concurrency list, a rate_rps list"),
        ({"rate_rps": [2], "requests": 5}, "rate_rps needs at least 10"),
        ({"rate_rps": [2, 2]}, "a rate_rps is listed twice"),
        ({"rate_rps": [-1]}, r"rate_rps.0: must be > 0"),
    ],
)
def test_validate_refuses_a_bad_open_loop(patch, message):
    w = {"type": "serve", "concurrency": [1], "requests": 16, "prompt_tokens": 8,
         "new_tokens": 8, **patch}  # fmt: skip
    with pytest.raises(SuiteError, match=message):
        validate_data(serve_suite(fake_variant(), w))


def test_an_open_loop_case_runs_end_to_end_and_warns_when_the_server_falls_behind(tmp_path):
    # 8 tokens x 20 ms = 0.16 s a request on 2 slots: about 12 requests/s at most
    w = {"type": "serve", "rate_rps": [4, 60], "slots": 2, "requests": 24, "prompt_tokens": 4,
         "new_tokens": 8}  # fmt: skip
    proc, run_dir = run_suite(
        tmp_path,
        serve_suite(fake_variant("--token-delay-s", "0.02", "--parallel", "{parallel}"), w),
    )
    assert proc.returncode == 0, proc.stderr
    results = results_by_name(run_dir)
    assert set(results) == {"tiny-s/fake/h/serve-rps4", "tiny-s/fake/h/serve-rps60"}
    for name, result in results.items():
        rec = result["repetitions"][0]
        assert rec["arrivals"] == "poisson" and rec["rate_rps"] == float(name.split("rps")[-1])
        assert rec["concurrency"] == 2 and rec["client_cpu_s"] >= 0
        assert rec["arrival_lag_p99_s"] < 0.2
        assert "arrivals after the first tenth" in result["summary"]["window"]
    slow = json.dumps(results["tiny-s/fake/h/serve-rps60"]["repetitions"][0]["warnings"])
    assert "did not keep up" in slow
    easy = json.dumps(results["tiny-s/fake/h/serve-rps4"]["repetitions"][0]["warnings"])
    assert "did not keep up" not in easy
    assert "the load generator used" not in easy  # 32 tokens/s cost the client next to nothing
    assert "in one read with the one before" not in easy  # 20 ms apart: each read on its own
    report = (run_dir / "report" / "report.md").read_text()
    assert re.search(r"Poisson 60 rps \(offered [0-9.]+\), 2 slots", report)
    for result in results.values():
        rec = result["repetitions"][0]
        # the arrivals inside the window, per second: 20 gaps after the 3 of the ramp-up
        assert rec["offered_rps"] == pytest.approx(20 / rec["steady_s"], rel=0.01)
    # the kept-up check names the rate the window saw beside the one asked
    assert re.search(r"of the [0-9.]+ offered in the window \(asked: 60\)", slow)


def test_serving_suites_validate():
    for name in ("serving", "gpu-serving"):
        path = TESTS.parent / "suites" / f"{name}.yaml"
        proc = subprocess.run(
            [sys.executable, "-m", "harness", "validate", str(path)],
            capture_output=True,
            text=True,
            cwd=TESTS.parent,
        )
        assert proc.returncode == 0, proc.stderr


def test_vllm_is_refused_in_one_line_without_cuda(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from harness.engines import create_engine

    with pytest.raises(HarnessError) as e:
        create_engine("vllm").load(
            {"name": "tiny-s", "source": "builtin:tiny-s"}, None, {"device": "cuda:0"}, tmp_path
        )
    assert str(e.value) == "engine vllm needs an NVIDIA GPU with CUDA; none is usable here"


@pytest.mark.gpu
def test_vllm_serves_the_builtin_model_on_a_gpu(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("vllm")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA here")
    data = serve_suite({"name": "v", "engine": "vllm", "dtype": "float16"}, device="cuda:0")
    data["workloads"].insert(0, {"type": "train", "steps": 20, "batch_size": 4, "seq_len": 16})
    data["variants"].insert(0, {"name": "fp32"})
    proc, run_dir = run_suite(tmp_path, data, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name, result in results_by_name(run_dir).items():
        if "/serve-" in name:
            assert not alive(result["summary"]["server_pid"])


# ------------------------------------------------- issue 23: figures that hold up
def test_the_window_never_opens_before_concurrency_requests_have_their_first_token(tmp_path):
    """One slot, two clients: a request waits while the other streams, so two requests in flight
    never both have a first token. The old window counted a client that had had a first token
    for an earlier request, and opened with one request still queued."""
    fake = ["--token-delay-s", "0.005", "--prefill-s", "0.01", "--parallel", "1"]
    server = fake_server(tmp_path, *fake).start()
    try:
        server.wait_healthy(60)
        url = server.health_url.replace("/health", "/v1/completions")
        payloads = [completion_payload("m", [5], 6) for _ in range(6)]
        starved = run_closed_loop(url, payloads, 2)
        assert starved.open_s is None and starved.tokens_in_window() == 0
    finally:
        server.stop()
    server = fake_server(tmp_path, "--token-delay-s", "0.005", "--parallel", "3").start()
    try:
        server.wait_healthy(60)
        url = server.health_url.replace("/health", "/v1/completions")
        payloads = [completion_payload("m", [5], 10) for _ in range(12)]
        result = run_closed_loop(url, payloads, 3)
    finally:
        server.stop()
    # at the instant it opened, three requests were in flight, each past its first token
    t = result.open_s
    assert t is not None
    streaming = [r for r in result.requests if r.token_s[0] <= t and r.end_s >= t]
    assert len(streaming) == 3
    # ... and it closed at the first end after the queue emptied
    assert result.close_s <= sorted(r.end_s for r in result.requests)[-3] + 0.005
    assert 2.0 <= result.inflight_avg() <= 3.0


def test_tpot_is_per_request_and_every_request_is_kept_in_requests_parquet(tmp_path):
    import pandas as pd

    w = {"type": "serve", "concurrency": [2], "requests": 8, "prompt_tokens": 5,
         "new_tokens": 6}  # fmt: skip
    data = serve_suite(fake_variant("--token-delay-s", "0.01", "--prompt-cache"), w)
    data["measurement"] = {**FAST, "min_repeats": 2, "max_repeats": 2}
    proc, run_dir = run_suite(tmp_path, data)
    assert proc.returncode == 0, proc.stderr
    (result,) = results_by_name(run_dir).values()
    reqs = pd.read_parquet(run_dir / "cases" / result["case_id"] / "requests.parquet")
    assert len(reqs) == 16 and set(reqs["repetition"]) == {0, 1}
    assert (reqs["status"] == "ok").all() and reqs["error"].isna().all()
    for rep, rec in enumerate(result["repetitions"]):
        rows = reqs[reqs["repetition"] == rep]
        tpot = (rows["latency_s"] - rows["ttft_s"]) / (rows["tokens"] - 1)
        assert rec["tpot_s"] == pytest.approx(tpot.median(), rel=1e-9)
        assert rec["tpot_p50_s"] == rec["tpot_s"] > 0.005  # 10 ms a token, never 0
        assert rec["tpot_p50_s"] <= rec["tpot_p90_s"] <= rec["tpot_p99_s"]
        assert rec["tpot_p99_s"] == pytest.approx(float(tpot.quantile(0.99)))
        assert rec["requests_ok"] == 8 and rec["requests_failed"] == 0
        assert rec["first_error"] is None
        # the fake keeps a prompt cache: a prompt sent again would be prefilled as 1 token
        assert rec["server_prompt_tokens"] == rec["sent_prompt_tokens"] == 8 * 5
        assert rec["prefix_cache"] is False
        assert rec["min_steady_s"] == 1.0
    assert "prefilled" not in json.dumps(result["warnings"])


def test_prefix_cache_true_is_its_own_labelled_case_and_the_cache_hits_are_named(tmp_path):
    w = {"type": "serve", "concurrency": [2], "requests": 4, "prompt_tokens": 5,
         "new_tokens": 4, "prefix_cache": True}  # fmt: skip
    data = serve_suite(fake_variant("--token-delay-s", "0.01", "--prompt-cache"), w)
    data["measurement"] = {**FAST, "warmup": 1}
    proc, run_dir = run_suite(tmp_path, data)
    assert proc.returncode == 0, proc.stderr
    (name,) = results_by_name(run_dir)
    assert name == "tiny-s/fake/h/serve-c2-prefix-cache"
    rec = results_by_name(run_dir)[name]["repetitions"][0]
    assert rec["prefix_cache"] is True
    # the warmup sent the first two prompts: they are prefilled as one token each now
    assert rec["sent_prompt_tokens"] == 20 and rec["server_prompt_tokens"] == 2 + 2 * 5
    assert "the server prefilled 12 prompt tokens of the 20 sent" in json.dumps(rec["warnings"])


def test_a_short_steady_window_is_a_warning_on_its_row_and_in_serving_csv(tmp_path):
    import pandas as pd

    w = {"type": "serve", "concurrency": [1], "requests": 3, "prompt_tokens": 4,
         "new_tokens": 4, "min_steady_s": 5}  # fmt: skip
    proc, run_dir = run_suite(tmp_path, serve_suite(fake_variant("--token-delay-s", "0.01"), w))
    assert proc.returncode == 0, proc.stderr
    (result,) = results_by_name(run_dir).values()
    rec = result["repetitions"][0]
    assert rec["min_steady_s"] == 5 and rec["steady_s"] < 1
    assert "under min_steady_s 5 s" in rec["warnings"]
    serving = pd.read_csv(run_dir / "report" / "serving.csv")
    assert serving["min_steady_s"].iloc[0] == 5
    assert "under min_steady_s 5 s" in serving["warnings"].iloc[0]
    assert "under min_steady_s" in (run_dir / "report" / "report.md").read_text()


FAULT_ERRORS = {
    "http500": "server answered 500 to a completion: ",
    "cut": "the stream was cut before its end",
    "garbage": "server streamed a line that is not JSON: b'{this is not json'",
    "stall": "the stream stalled: no token for 1 s (request_timeout_s) after 3 tokens",
}


def test_each_server_fault_gives_a_failed_case_or_a_counted_warned_one(tmp_path):
    variants = [
        {**fake_variant("--token-delay-s", "0.002", "--fault", f, "--fault-at", "3"), "name": f}
        for f in (*FAULT_ERRORS, "exit")
    ]
    common = {"prompt_tokens": 4, "new_tokens": 6, "request_timeout_s": 1}
    data = serve_suite(variants[0])
    data["variants"] = variants
    data["measurement"] = {**FAST, "case_timeout_s": 60}
    data["workloads"] = [
        {"type": "serve", "concurrency": [2], "requests": 10, "max_failed_share": 0.1, **common},
        # the default: no request may fail
        {"type": "serve", "variants": ["http500", "stall"], "concurrency": [1], "requests": 8,
         **common},
    ]  # fmt: skip
    t0 = time.monotonic()
    proc, run_dir = run_suite(tmp_path, data, timeout=300)
    assert time.monotonic() - t0 < 240
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    results = results_by_name(run_dir)
    assert len(results) == 7
    for fault, text in FAULT_ERRORS.items():
        lenient = results[f"tiny-s/{fault}/h/serve-c2"]
        assert lenient["status"] == "ok", lenient.get("error")
        rec = lenient["repetitions"][0]
        assert rec["requests_failed"] == 1 and rec["requests_ok"] == 9
        assert rec["first_error"].startswith(text)
        assert "1 of 10 requests failed (figures over the 9 that succeeded)" in rec["warnings"]
    for fault in ("http500", "stall"):
        strict = results[f"tiny-s/{fault}/h/serve-c1"]
        assert strict["status"] == "failed"
        assert strict["error"].startswith(
            "serve: 1 of 3 requests sent failed (max_failed_share 0 allows 0); the first: "
            + FAULT_ERRORS[fault]
        ), strict["error"]
        assert "\n" not in strict["error"]
    died = results["tiny-s/exit/h/serve-c2"]
    assert died["status"] == "failed"
    assert "exited with status 3" in died["error"] and "dying on purpose" in died["error"]
    # every server this run started is gone
    for log in (run_dir / "cases").glob("*/server.log"):
        pid = int(log.read_text().split("(pid ")[1].split(")")[0])
        assert not alive(pid)
