"""``harness validate`` and ``harness run``."""

from __future__ import annotations

import signal

import click

from harness.errors import HarnessError


def _problems(e: HarnessError) -> list[str]:
    from harness.suite import SuiteError

    if isinstance(e, SuiteError):
        return [f"{e.source}: {line}" for line in e.problems]
    return [str(e)]


@click.command()
@click.argument("suite")
def validate(suite: str) -> int:
    """Check a suite file (or a suite name from suites/) and print its case count."""
    from harness.suite import expand, load_suite

    try:
        loaded = load_suite(suite)
        cases = expand(loaded)
    except HarnessError as e:
        for line in _problems(e):
            click.echo(f"harness: {line}", err=True)
        return 2
    click.echo(f"{loaded.name}: {len(cases)} cases (valid)")
    return 0


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt


@click.command()
@click.argument("suite", required=False)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder of run folders (default $HARNESS_RESULTS or results).",
)
@click.option(
    "--resume",
    "resume",
    type=click.Path(file_okay=False),
    default=None,
    metavar="RUN_DIR",
    help="Run only the cases of RUN_DIR without an ok result.",
)
@click.option(
    "--only",
    default=None,
    metavar="GLOB",
    help="Run only the cases whose name matches (e.g. 'tiny-s/*/cpu/infer-*').",
)
@click.option("--dry-run", is_flag=True, help="List the cases and run nothing.")
@click.option(
    "--no-wait", is_flag=True, help="Fail at once if another run is measuring on this machine."
)
@click.option(
    "--lock-timeout",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Wait at most this long for another run measuring on this machine (default: as long "
    "as it takes).",
)
@click.option("--no-report", is_flag=True, help="Do not build the report at the end.")
@click.option(
    "--ray",
    "ray",
    is_flag=False,
    flag_value="auto",
    default=None,
    metavar="[ADDRESS]",
    help="Run the cases on a Ray cluster (default address: auto).",
)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    metavar="PORT",
    help="Serve live power, energy and cases done for Prometheus on 127.0.0.1:PORT.",
)
def run(
    suite, out, resume, only, dry_run, no_wait, lock_timeout, no_report, ray, metrics_port
) -> int:
    """Run a suite; the last line printed is the run folder. Exit 0 all ok, 1 some failed."""
    from harness import runner
    from harness.suite import SuiteError

    if suite is None and resume is None:
        raise HarnessError("give a suite (a file or a name from suites/) or --resume RUN_DIR")
    try:
        if dry_run:
            return _dry_run(suite, resume, only)
        if resume is not None and suite is not None:
            click.echo(
                f"note: --resume takes the suite from {resume}/manifest.json; {suite} unused"
            )
        from harness.exports.prometheus import serving

        previous = signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            with serving(metrics_port) as metrics:
                outcome = runner.orchestrate_run(
                    None if resume else suite,
                    out,
                    resume=resume,
                    only=only,
                    no_wait=no_wait,
                    lock_timeout_s=lock_timeout,
                    report=not no_report,
                    ray=ray,
                    on_result=metrics.case_finished if metrics else None,
                )
        finally:
            signal.signal(signal.SIGTERM, previous)
    except SuiteError as e:
        for line in _problems(e):
            click.echo(f"harness: {line}", err=True)
        return 2
    except runner.RunInterrupted as e:
        click.echo("harness: interrupted; what was done is saved", err=True)
        click.echo(str(e.run_dir))
        return 130
    n_failed = len(outcome.failed)
    if n_failed:
        click.echo(f"{n_failed} of {len(outcome.statuses)} cases failed")
    else:
        click.echo(f"all {len(outcome.statuses)} cases ok")
    click.echo(str(outcome.run_dir))
    return outcome.exit_status


def _dry_run(suite, resume, only) -> int:
    from harness import store
    from harness.resume import resumed_suite
    from harness.suite import expand, load_suite, select

    if resume is not None:
        loaded = resumed_suite(resume, store.read_manifest(resume))
    else:
        loaded = load_suite(suite)
    cases = select(expand(loaded), only)
    if not cases:
        raise HarnessError(f"--only {only}: no case matches")
    for case in cases:
        done = resume is not None and store.is_done(resume, case["case_id"])
        click.echo(f"{case['case_id']}  {case['case']}{'  (done)' if done else ''}")
    from harness.knobs import describe as knob_text

    for hw in dict.fromkeys(c["hardware"]["name"] for c in cases):
        hw_dict = next(c["hardware"] for c in cases if c["hardware"]["name"] == hw)
        if knob_text(hw_dict):  # what the run would change on this machine, and restore
            click.echo(f"knobs of {hw}: {knob_text(hw_dict)}")
    click.echo(f"{loaded.name}: {len(cases)} cases")
    return 0
