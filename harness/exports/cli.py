"""``harness export mlflow RUN_DIR`` and ``harness export github-benchmark RUN_DIR -o FILE``."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def export() -> None:
    """Send a run's results where you already look: MLflow, github-action-benchmark."""


@export.command("mlflow")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--tracking-uri",
    default=None,
    metavar="URI",
    help="MLflow tracking URI (default: MLflow's own, e.g. $MLFLOW_TRACKING_URI).",
)
def mlflow_command(run_dir: Path, tracking_uri: str | None) -> int:
    """One MLflow run per case of RUN_DIR: params, metrics, the method as a tag, figures."""
    from harness.exports.mlflow_export import export_run

    done = export_run(run_dir, tracking_uri=tracking_uri)
    click.echo(f"{len(done)} cases in MLflow ({tracking_uri or 'default tracking URI'})")
    return 0


@export.command("github-benchmark")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "-o", "--output", required=True, type=click.Path(path_type=Path), help="JSON file to write."
)
def github_benchmark_command(run_dir: Path, output: Path) -> int:
    """github-action-benchmark's customSmallerIsBetter JSON of RUN_DIR's figures."""
    from harness.exports.github_benchmark import export

    found = export(run_dir, output)
    click.echo(f"{len(found)} benchmark entries written to {output}")
    return 0
