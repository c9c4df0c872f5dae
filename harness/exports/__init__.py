"""Results where users already look: MLflow runs, github-action-benchmark charts, Prometheus.

Each exporter reads a run folder the way the report does (``harness.report.load.open_run``) and
imports its own library only when called; each library is an optional extra (``mlflow``,
``prometheus``); the github-benchmark JSON needs none.
"""
