"""What one run's report says, computed once: every report section, figure and page reads it.

``Analysis(run)`` holds the run and computes each part the first time a reader asks for it
(``tables``, ``board``, ``making``, ``served``), then keeps it: report.md's sections, the CSV
files, the figures and the site read the same objects, so nothing is computed twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from harness.report.load import Run
from harness.report.tables import Tables


@dataclass
class Analysis:
    """One run's analysis: its tables, leaderboard, techniques, serving table and check verdicts.

    ``drawn`` is what a report build adds: the figures it drew, by file name (empty when the
    build draws none), in the order report.md lists them.
    """

    run: Run
    drawn: dict[str, Path] = field(default_factory=dict)

    @cached_property
    def tables(self) -> Tables:
        from harness.report.tables import build_tables

        return build_tables(self.run)

    @cached_property
    def board(self) -> pd.DataFrame:
        """The leaderboard (report/leaderboard.py)."""
        from harness.report.leaderboard import leaderboard

        return leaderboard(self.tables)

    @cached_property
    def making(self):
        """What making each setup cost, the techniques and forecasts (report/techniques.py)."""
        from harness.report import techniques

        return techniques.build(self.tables)

    @cached_property
    def served(self) -> pd.DataFrame:
        """One row per serve case (report/serving.py); empty without any."""
        from harness.report.serving import serve_table

        return serve_table(self.run.frame)

    @property
    def verdicts(self) -> list:
        """``harness check``'s verdict per case (computed with the tables)."""
        return self.tables.verdicts
