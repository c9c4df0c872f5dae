"""``harness report``, ``leaderboard``, ``recommend`` and ``compare``.

Bad input raises HarnessError (one line, exit 2 from harness.cli.main); a command returns 0, or 1
where its table says something failed a target (no setup accurate enough, a regression).
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import click
import numpy as np
import pandas as pd

from harness.errors import HarnessError


def _cell(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def text_table(frame: pd.DataFrame) -> str:
    """A plain fixed-width table: numbers to 4 significant figures, blanks for missing values."""
    if frame.empty:
        return "(none)"
    cells = [[_cell(v) for v in row] for row in frame.itertuples(index=False)]
    head = [str(c) for c in frame.columns]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
def report(run_dir: Path) -> int:
    """Write RUN_DIR/report/: summary.csv, leaderboard.csv, cases.csv, report.md, figures/."""
    from harness.report import build_report

    click.echo(str(build_report(run_dir)))
    return 0


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="CSV file to write (default: stdout)."
)
@click.option(
    "--include-failed-checks",
    is_flag=True,
    help="Keep rows that failed harness check (marked in the check column).",
)
def leaderboard(
    run_dirs: tuple[Path, ...], output: Path | None, include_failed_checks: bool
) -> int:
    """One leaderboard CSV over RUN_DIRS (run folders, folders of runs, or leaderboard CSVs of
    this schema version): the latest result per model × variant × hardware × device × host ×
    headline shape, with its run_id. Rows that failed harness check are left out unless
    --include-failed-checks."""
    from harness.csvsafe import to_csv_text
    from harness.report.csvfiles import write_csv
    from harness.report.leaderboard import combine, read_board
    from harness.report.leaderboard import leaderboard as board_of
    from harness.report.load import open_runs
    from harness.report.tables import build_tables

    csvs = [p for p in run_dirs if p.suffix.lower() == ".csv"]
    boards = [read_board(p) for p in csvs]  # a board of another schema: refused, one line
    folders = [p for p in run_dirs if p not in csvs]
    runs = open_runs(folders) if folders else []
    from harness.report.check import keep_published

    board = combine(boards + [board_of(build_tables(r)) for r in runs])
    board, left_off = keep_published(board, include_failed_checks)
    note = f"; {left_off} failed harness check, left off (--include-failed-checks)"
    if output is None:
        sys.stdout.write(to_csv_text(board))
        if left_off:
            click.echo(f"leaderboard: {len(board)} rows{note}", err=True)
    else:
        if output.parent and not output.parent.is_dir():
            raise HarnessError(f"-o {output}: no such folder {output.parent}")
        write_csv(board, output)
        click.echo(f"{output} ({len(board)} rows from {len(runs)} runs{note if left_off else ''})")
    return 0


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--min-accuracy", type=float, required=True, help="Accuracy target (a fraction, e.g. 0.8)."
)
@click.option(
    "--task",
    default=None,
    help="Task the target applies to (default: the only task, or the mean over all tasks).",
)
@click.option(
    "--per",
    type=click.Choice(["query", "token"]),
    default="query",
    show_default=True,
    help="Energy per query or per generated token.",
)
@click.option(
    "--accuracy-by",
    "by",
    type=click.Choice(["lower", "point"]),
    default="lower",
    show_default=True,
    help="Judge accuracy by the lower bound of its 95% interval, or by the point estimate.",
)
@click.option(
    "--method",
    type=click.Choice(["measured", "estimated"]),
    default=None,
    help="Recommend among setups of this energy method (default: measured where any is).",
)
@click.option(
    "--batch-size",
    type=int,
    default=None,
    help="Compare every setup at this batch size (default: the largest one all measured).",
)
@click.option(
    "--max-latency",
    type=float,
    default=None,
    metavar="S",
    help="Latency target in seconds, at the batch size compared (see --latency).",
)
@click.option(
    "--latency",
    type=click.Choice(["p90", "ttft"]),
    default="p90",
    show_default=True,
    help="What --max-latency bounds: the p90 latency of a batch, or the time to first token.",
)
def recommend(
    run_dir: Path,
    min_accuracy: float,
    task: str | None,
    per: str,
    by: str,
    method: str | None,
    batch_size: int | None,
    max_latency: float | None,
    latency: str,
) -> int:
    """The setup with the least energy that meets --min-accuracy (and --max-latency), knobs
    included, the Pareto front, and the saving against the most accurate setup. Exit 1 when no
    setup meets the targets."""
    from harness.report.load import open_run
    from harness.report.recommend import recommend as pick
    from harness.report.tables import build_tables

    if not 0 <= min_accuracy <= 1:  # also refuses NaN
        raise HarnessError(f"--min-accuracy must be a fraction between 0 and 1, got {min_accuracy}")
    if max_latency is not None and not max_latency > 0:  # also refuses NaN
        raise HarnessError(f"--max-latency must be a positive number of seconds, got {max_latency}")
    r = pick(
        build_tables(open_run(run_dir)),
        min_accuracy,
        task,
        per,
        by=by,
        method=method,
        batch_size=batch_size,
        max_latency=max_latency,
        latency=latency,
    )
    unit = f"J/{per}"
    if r.candidates.empty:
        raise HarnessError(
            f"{run_dir}: no setup has both an accuracy and an energy per {per}"
            + (f" at batch size {batch_size}" if batch_size else "")
        )
    judged = "95% lower bound of " if by == "lower" else ""
    if r.chosen is None and max_latency is not None:
        return _none_within_latency(r, min_accuracy, latency, unit, judged)
    if r.chosen is None:
        m = r.most_accurate
        click.echo(
            f"no setup reaches {judged}{r.what} >= {min_accuracy:g}; the best seen is "
            f"{m['accuracy']:.4g} (lower bound {m['accuracy_ci_low']:.4g}; {m['setup']}, "
            f"{m[r.energy_column]:.4g} {unit})"
        )
        _unpriced_note(r, unit)
        return 1
    c, m = r.chosen, r.most_accurate
    click.echo(
        f"recommended: {c['setup']} at batch {_cell(c['batch_size'])}: {r.what} {c['accuracy']:.4g} "
        f"(95% interval {c['accuracy_ci_low']:.4g}–{c['accuracy_ci_high']:.4g}), "
        f"{c[r.energy_column]:.4g} {unit} ({c['energy_method']})" + _latency_text(r, c, latency)
    )
    if c["setup"] == m["setup"]:
        click.echo("it is also the most accurate setup: no saving against it")
    else:
        click.echo(
            f"saves {r.saved_j:.4g} {unit} ({r.saved_pct:.1f}%) against the most accurate setup, "
            f"{m['setup']} ({m['accuracy']:.4g}, {m[r.energy_column]:.4g} {unit})"
        )
    click.echo(
        f"judged by the {'lower bound of the 95% interval' if by == 'lower' else 'point estimate'}"
        " of accuracy (--accuracy-by)"
    )
    if not r.not_at_shape:
        click.echo(f"every setup compared at batch size {r.batch_size} (--batch-size)")
    else:
        why = "--batch-size" if batch_size else "the setups share no batch size"
        click.echo(
            f"note: compared at {r.shape} ({why}); not compared, having no figure at "
            f"{r.shape} (choose another with --batch-size): " + ", ".join(r.not_at_shape)
        )
    if len(r.left_out):
        click.echo(
            f"note: {len(r.left_out)} setups with {r.left_out['energy_method'].iloc[0]} energy "
            f"left out (never compared with {r.method} energy; see --method): "
            + ", ".join(r.left_out["setup"])
        )
    _unpriced_note(r, unit)
    click.echo(f"\nPareto front ({r.what} against {unit}, {r.method} energy):")
    click.echo(text_table(r.front))
    return 0


def _unpriced_note(r, unit: str) -> None:
    """The setups with an accuracy that were not weighed, named: nothing is left out silently."""
    if r.unpriced:
        click.echo(
            f"note: {len(r.unpriced)} setup{'' if len(r.unpriced) == 1 else 's'} with an accuracy "
            f"but no {unit} not weighed (a served "
            "setup's energy is per request: the report's Serving section): " + ", ".join(r.unpriced)
        )


def _latency_text(r, row, latency: str) -> str:
    """``, p90 latency 0.12 s, power_limit_w 250`` for the chosen setup (knobs as recorded)."""
    from harness.report.knob_sweeps import KNOB_COLUMNS, LATENCY_WHAT

    parts = []
    if r.max_latency is not None and pd.notna(row.get(r.latency_column)):
        parts.append(f"{LATENCY_WHAT[latency]} {row[r.latency_column]:.4g} s")
    parts += [f"{k} {row[k]:g}" for k in KNOB_COLUMNS if k in row and pd.notna(row[k])]
    return "".join(f", {p}" for p in parts)


def _none_within_latency(r, min_accuracy: float, latency: str, unit: str, judged: str) -> int:
    """Exit 1 with what came closest: the fastest of the setups accurate enough."""
    from harness.report.knob_sweeps import LATENCY_WHAT

    what = LATENCY_WHAT[latency]
    target = f"{judged}{r.what} >= {min_accuracy:g} within {what} <= {r.max_latency:g} s"
    judged = "judged_accuracy" if "judged_accuracy" in r.candidates else "accuracy"
    accurate = r.candidates[r.candidates[judged] >= min_accuracy]
    timed = accurate[accurate[r.latency_column].notna()]
    if accurate.empty:
        m = r.most_accurate
        click.echo(f"no setup reaches {target}; the best accuracy seen is {m['accuracy']:.4g}")
    elif timed.empty:
        click.echo(f"no setup reaches {target}: none of those accurate enough has a {what} figure")
    else:
        f = timed.sort_values(r.latency_column).iloc[0]
        click.echo(
            f"no setup reaches {target}; the fastest accurate enough is {f['setup']} "
            f"({what} {f[r.latency_column]:.4g} s, {f[r.energy_column]:.4g} {unit})"
        )
    return 1


@click.command()
@click.argument("runs", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--threshold",
    type=float,
    default=0.05,
    show_default=True,
    help="Relative change below which nothing is flagged.",
)
@click.option(
    "--baseline",
    type=click.Choice(["latest"]),
    default=None,
    help="latest: compare with the previous run of the same suite.",
)
@click.option("--changes-only", is_flag=True, help="Print only the changes beyond noise.")
@click.option(
    "--strict",
    is_flag=True,
    help='Exit 1 also on a worse change that cannot be told from noise ("cannot tell").',
)
def compare(
    runs: tuple[Path, ...],
    threshold: float,
    baseline: str | None,
    changes_only: bool,
    strict: bool,
) -> int:
    """Metric changes from BASE_RUN to NEW_RUN per case; exit 1 on a regression beyond noise.

    Usage: harness compare BASE_RUN NEW_RUN, or harness compare --baseline latest NEW_RUN.
    """
    from harness.report.compare import ADJUSTMENT, compare_runs, earlier_runs, has_regression
    from harness.report.load import open_run, previous_run

    if not (math.isfinite(threshold) and threshold >= 0):  # NaN compares false to everything
        raise HarnessError(f"--threshold must be a finite number >= 0, got {threshold}")
    env = os.environ.get("HARNESS_RESULTS")
    if baseline == "latest":
        if len(runs) != 1:
            raise HarnessError("with --baseline latest give exactly one run: NEW_RUN")
        new = open_run(runs[0])
        folder = new.path.resolve().parent
        try:
            base = previous_run(new, folder)
        except HarnessError:
            if not env or Path(env).resolve() == folder:
                raise
            base = previous_run(new, Path(env))
    else:
        if len(runs) != 2:
            raise HarnessError("give BASE_RUN and NEW_RUN (or --baseline latest NEW_RUN)")
        base, new = open_run(runs[0]), open_run(runs[1])
    folders = [base.path.resolve().parent] + ([Path(env)] if env else [])
    history = [r for r in earlier_runs(base, folders) if r.path.resolve() != new.path.resolve()]
    rows = compare_runs(base, new, threshold, history)
    click.echo(f"base: {base.run_id}\nnew:  {new.run_id}\nthreshold: {threshold:g} (relative)")
    shown = rows[rows["verdict"].isin(["regression", "improvement"])] if changes_only else rows
    table = shown.assign(
        change=shown["change_rel"].map(lambda v: "" if pd.isna(v) else f"{100 * v:+.1f}%"),
        machine=shown["machine_change_rel"].map(lambda v: "" if pd.isna(v) else f"{100 * v:+.1f}%"),
        p=shown["p_value"].map(_p_text),
        p_adj=shown["p_adj"].map(_p_text),
    )
    columns = ["case", "metric", "base", "new", "change", "machine", "p", "p_adj", "verdict"]
    click.echo(text_table(table[[*columns, "note"]]))
    counts = rows["verdict"].value_counts()
    n_tests = rows.attrs.get("tests", int(rows["p_value"].notna().sum()))
    click.echo(
        f"\n{len(rows)} comparisons: {counts.get('regression', 0)} regressions, "
        f"{counts.get('improvement', 0)} improvements beyond noise, "
        f"{counts.get('cannot tell', 0)} cannot tell (run-to-run noise unknown), "
        f"{counts.get('not comparable', 0)} not comparable, "
        f"{counts.get('missing', 0)} cases missing from the new run\n"
        f"p: the largest of the tests that apply (Welch's t on repetitions, the case's move "
        f"against the reference loop's, the suite's history of {len(history) + 1} earlier runs; "
        f"accuracy: McNemar on paired answers, else two proportions); p_adj: "
        f"{ADJUSTMENT.capitalize()} over {n_tests} tests; beyond noise: p_adj < 0.05 and past "
        f"the threshold"
    )
    return 1 if has_regression(rows, strict=strict) else 0


def _p_text(value) -> str:
    return "" if pd.isna(value) else f"{value:.2g}"


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder to write index.html (and labels/) into; made if absent.",
)
@click.option(
    "--threshold",
    type=float,
    default=0.05,
    show_default=True,
    help="Relative change the history marks as a regression (as in harness compare).",
)
@click.option(
    "--include-failed-checks",
    is_flag=True,
    help="Put rows that failed harness check on the board (marked); by default they are left "
    "off and counted, and the page's toggle shows them.",
)
def site(
    run_dirs: tuple[Path, ...], output: Path, threshold: float, include_failed_checks: bool
) -> int:
    """The web leaderboard over RUN_DIRS (run folders or folders of runs): one self-contained
    OUTPUT/index.html that opens from disk, with no server and no network."""
    from harness.report.site import build_site

    if threshold < 0:
        raise HarnessError(f"--threshold must be >= 0, got {threshold}")
    page = build_site(
        list(run_dirs), output, threshold, include_failed_checks=include_failed_checks
    )
    click.echo(f"{page} ({page.stat().st_size / 1e6:.1f} MB)")
    return 0


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of text.")
def check(run_dirs: tuple[Path, ...], as_json: bool) -> int:
    """Apply the publication rules to every row and case of RUN_DIRS (run folders or folders of
    runs) and print a verdict per case: pass, warn or fail, with the rule and the figures that
    decided it (docs/methodology.md, Checks). Exit 1 when any case fails."""
    import json

    from harness.report.check import FAIL, PASS, RULES, counts, summary_line
    from harness.report.load import open_runs
    from harness.report.tables import build_tables

    runs = open_runs(list(run_dirs))
    # the verdicts the report computes, so that check, report and board always agree
    verdicts = [v for run in runs for v in build_tables(run).verdicts]
    if as_json:
        out = {
            "counts": counts(verdicts),
            "cases": [v.to_dict() for v in verdicts],
            "rules": [{"rule": r.name, "source": r.source, "protects": r.protects} for r in RULES],
        }
        click.echo(json.dumps(out, indent=1))
    else:
        for run in runs:
            mine = [v for v in verdicts if v.run_id == run.run_id]
            click.echo(f"{run.run_id} ({run.path})")
            for v in mine:
                applied = len(v.findings)
                click.echo(f"  {v.check:<4}  {v.case}  ({applied} rules applied)")
                for f, n in v.findings:
                    if f.level != PASS:
                        where = f" [{n} of {v.rows} rows]" if v.rows > 1 else ""
                        click.echo(f"        {f.level} {f.rule}: {f.detail}{where}")
        click.echo(summary_line(verdicts).replace("`", ""))
    return 1 if any(v.check == FAIL for v in verdicts) else 0
