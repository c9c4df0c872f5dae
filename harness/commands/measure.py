"""``harness sensors`` and ``harness measure``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import click

from harness.errors import HarnessError


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--check",
    is_flag=True,
    help="Watch each usable domain for a few seconds: update period, resolution, verdict.",
)
@click.option(
    "--check-s",
    type=float,
    default=None,
    help="Seconds to watch each source with --check (default 5, the least for NVML's check).",
)
@click.option("--tdp-w", type=float, default=None, help="CPU TDP in watts for the estimate source.")
def sensors(as_json: bool, check: bool, check_s: float | None, tdp_w: float | None) -> int:
    """List every energy source and domain with its kind, status and why.

    With --check, test each usable domain instead; exit status 1 when one fails its check.
    """
    if check:
        return _check(as_json, check_s)
    from harness.sensors import probe_all

    rows = probe_all(tdp_w=tdp_w)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Energy sources on this machine")
    for col in ("source", "domain", "kind", "status", "reason"):
        table.add_column(col, overflow="fold")
    style = {"ok": "green", "no-permission": "yellow", "unavailable": "dim"}
    for r in rows:
        table.add_row(
            r.source, r.domain, r.kind, f"[{style.get(r.status, '')}]{r.status}[/]", r.reason
        )
    Console().print(table)
    return 0


def _check(as_json: bool, check_s: float | None) -> int:
    from harness.sensors.check import DEFAULT_WATCH_S, check_all

    watch_s = DEFAULT_WATCH_S if check_s is None else check_s
    if not watch_s > 0:
        raise HarnessError(f"--check-s must be positive, not {watch_s:g}")
    results = check_all(watch_s=watch_s)
    failed = any(r.verdict == "fail" for r in results)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], indent=2))
        return 1 if failed else 0
    for r in results:
        click.echo(r.line())
    return 1 if failed else 0


def _fmt_j(j: float) -> str:
    return f"{j / 3600:.4f} Wh" if abs(j) >= 3600 else f"{j:.3f} J"


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--sensors",
    "sensor_names",
    default="auto",
    show_default=True,
    help="auto, or a comma-separated list of sources (rapl,nvml,hwmon,estimate,codecarbon).",
)
@click.option(
    "--sample-hz",
    type=float,
    default=10.0,
    show_default=True,
    help="Sampling rate for power-only sensors and the trace; 0 reads counters only.",
)
@click.option("--tdp-w", type=float, default=None, help="CPU TDP in watts for the estimate source.")
@click.option(
    "--no-lock",
    is_flag=True,
    help="Do not take the machine's measurement lock (another run may then measure meanwhile).",
)
@click.option(
    "--lock-timeout",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Wait at most this long for a run measuring on this machine.",
)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    metavar="PORT",
    help="Serve live power and energy for Prometheus on 127.0.0.1:PORT while CMD runs.",
)
@click.argument("command", nargs=-1, type=click.UNPROCESSED, required=True)
def measure(
    as_json: bool,
    sensor_names: str,
    sample_hz: float,
    tdp_w: float | None,
    no_lock: bool,
    lock_timeout: float | None,
    metrics_port: int | None,
    command: tuple,
) -> int:
    """Run COMMAND and print its time and energy per domain, with how it was obtained.

    Exits with COMMAND's exit status. Example: harness measure -- python train.py
    """
    if sample_hz < 0:
        raise HarnessError(f"--sample-hz must be >= 0, not {sample_hz:g}")
    from harness.exports.prometheus import serving
    from harness.lock import machine_lock

    with machine_lock("measure", enabled=not no_lock, timeout_s=lock_timeout):
        with serving(metrics_port, sensors=sensor_names, tdp_w=tdp_w):
            return _measure(as_json, sensor_names, sample_hz, tdp_w, command)


def _measure(as_json: bool, sensor_names: str, sample_hz: float, tdp_w, command: tuple) -> int:
    from harness.meter import Meter

    meter = Meter(sensors=sensor_names, sample_hz=sample_hz or None, tdp_w=tdp_w)
    m = None
    failure = None
    try:
        meter.begin("command")
        t_cmd = time.perf_counter()
        try:
            proc = subprocess.Popen(list(command))
        except FileNotFoundError:
            meter.end("command")
            raise HarnessError(f"command not found: {command[0]}") from None
        except PermissionError:
            meter.end("command")
            raise HarnessError(f"command is not executable: {command[0]}") from None
        # Ctrl-C goes to the child (same process group); wait for it and still report.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            status = proc.wait()
        finally:
            signal.signal(signal.SIGINT, previous)
        cmd_s = time.perf_counter() - t_cmd
        try:
            m = meter.end("command")
        except Exception as e:  # noqa: BLE001 - CMD ran: its status and time are never lost
            failure = f"meter: the window could not be closed ({type(e).__name__}: {e})"
    finally:
        try:
            meter.close()
        except Exception as e:  # noqa: BLE001
            failure = failure or f"meter: closing failed ({e})"
    exit_status = status if status >= 0 else 128 - status
    if m is None:
        m = _empty_measurement(cmd_s, failure or "meter: no measurement")
    elif failure:
        m.warnings.append(failure)
    if as_json:
        out = {
            "duration_s": m.duration_s,
            "energy_j": m.energy_j,
            "total_j": m.total_j,
            "method": m.method,
            "sources": m.sources,
            "exit_status": exit_status,
            "warnings": m.warnings,
            "total_domains": m.total_domains,
            "domain_methods": m.domain_methods,
            "avg_power_w": m.avg_power_w,
            "peak_power_w": m.peak_power_w,
            "crosscheck_j": m.crosscheck_j,
            "temp_start_c": m.temp_start_c,
            "temp_end_c": m.temp_end_c,
            "clock_mhz": m.clock_mhz,
            "power_limit_w": m.power_limit_w,
            "cpu_max_mhz": m.cpu_max_mhz,
            "command": list(command),
        }
        click.echo(json.dumps(out, indent=2))
        return exit_status
    _print_measurement(m, command, exit_status)
    return exit_status


def _empty_measurement(duration_s: float, warning: str):
    """What is printed when the meter failed outright: CMD's time, no energy, and why."""
    from harness.meter import Measurement

    return Measurement("command", duration_s, {}, 0.0, "estimated", [], warnings=[warning])


def _print_measurement(m, command: tuple, exit_status: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=False)
    table = Table(title=f"{' '.join(command)} ({m.duration_s:.3f} s, exit status {exit_status})")
    for col, justify in (("domain", "left"), ("energy", "right"), ("avg power", "right")):
        table.add_column(col, justify=justify)
    table.add_column("method")
    table.add_column("source")
    table.add_column("in total")
    for d in sorted(m.energy_j):
        j = m.energy_j[d]
        table.add_row(
            d,
            _fmt_j(j),
            f"{j / m.duration_s:.2f} W" if m.duration_s > 0 else "-",
            m.domain_methods.get(d, "?"),
            m.domain_sources.get(d, "?"),
            "yes" if d in m.total_domains else "no",
        )
    for name, j in m.crosscheck_j.items():
        table.add_row(name, _fmt_j(j), "", "cross-check", name, "no")
    console.print(table)
    avg = f", {m.avg_power_w:.2f} W average" if m.avg_power_w is not None else ""
    console.print(
        f"total: {_fmt_j(m.total_j)} {m.method.upper()}{avg} "
        f"(from {' + '.join(m.total_domains) or 'nothing'}; sources: {', '.join(m.sources)})"
    )
    for text in m.warnings:
        console.print(f"[yellow]warning: {text}[/]", highlight=False)
    if m.method == "estimated":
        console.print(
            "[yellow]estimated: no sensor measures this machine's "
            "energy; figures come from a model (see docs/sensors.md)[/]"
        )
    sys.stdout.flush()
