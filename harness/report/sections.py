"""report.md's sections, in order: each says whether it applies to a run, its markdown, the CSV
files it writes and the figures it draws, all read from the run's one :class:`Analysis`.

Adding a section is one class here (or beside its figures, as serving and techniques are) and one
line in :data:`SECTIONS`; build_report, report.md and the figures follow from that list.
"""

from __future__ import annotations

import pandas as pd

from harness.report import markdown as md
from harness.report import serving, techniques
from harness.report.analysis import Analysis
from harness.report.figure import Figure


class Section:
    """One part of report.md. Subclasses override what they have; the defaults give nothing."""

    name: str = ""

    def applies(self, analysis: Analysis) -> bool:
        """Whether the run has anything for this section (its markdown, tables, figures)."""
        return True

    def markdown(self, analysis: Analysis) -> str:
        """The section's report.md text ("" for none)."""
        return ""

    def tables(self, analysis: Analysis) -> dict[str, pd.DataFrame]:
        """The files it writes beside report.md: file name -> table."""
        return {}

    def figures(self, analysis: Analysis) -> list[Figure]:
        """The figures it draws under report/figures/."""
        return []


class Header(Section):
    """Title, what was run and where; the techniques' answer under the title, then the checks'
    counts with each failed case's rules."""

    name = "header"

    def markdown(self, analysis: Analysis) -> str:
        lines = md.header(analysis.tables).split("\n")
        sentence = analysis.making.sentence
        if sentence:
            lines[1:1] = ["", sentence]
        opening, _ = md.checks_lines(analysis.verdicts)
        at = 3 if sentence else 1  # under the title and its answer
        lines[at:at] = opening
        return "\n".join(lines)


class Summary(Section):
    name = "summary"

    def markdown(self, analysis: Analysis) -> str:
        return md.summary_section(analysis.tables)

    def tables(self, analysis: Analysis) -> dict[str, pd.DataFrame]:
        return {
            "summary.csv": techniques.summary_with_produce(analysis.tables, analysis.making),
            "cases.csv": analysis.tables.cases,
        }


class Serving(Section):
    name = "serving"

    def applies(self, analysis: Analysis) -> bool:
        return not analysis.served.empty

    def markdown(self, analysis: Analysis) -> str:
        return serving.section(analysis.run.frame, md.table, md.fmt, analysis.served)

    def tables(self, analysis: Analysis) -> dict[str, pd.DataFrame]:
        return {"serving.csv": analysis.served}


class Leaderboard(Section):
    name = "leaderboard"

    def markdown(self, analysis: Analysis) -> str:
        return md.leaderboard_section(analysis.board)

    def tables(self, analysis: Analysis) -> dict[str, pd.DataFrame]:
        return {"leaderboard.csv": analysis.board}


class Markdown(Section):
    """A section that is only text: ``render(tables)`` from report/markdown.py."""

    def __init__(self, name: str, render):
        self.name, self._render = name, render

    def markdown(self, analysis: Analysis) -> str:
        return self._render(analysis.tables)


class Techniques(Section):
    name = "techniques"

    def markdown(self, analysis: Analysis) -> str:
        m = analysis.making
        return techniques.techniques_section(m.techniques, m.comparisons)

    def tables(self, analysis: Analysis) -> dict[str, pd.DataFrame]:
        t = analysis.making.techniques
        return {} if t.empty else {"techniques.csv": t}


class Making(Section):
    name = "making"

    def markdown(self, analysis: Analysis) -> str:
        queries = analysis.tables.run.queries_lifetime
        return techniques.making_section(analysis.making.produced, queries)


class Forecasts(Section):
    name = "forecasts"

    def markdown(self, analysis: Analysis) -> str:
        return techniques.forecast_section(analysis.making.forecasts)

    def tables(self, analysis: Analysis) -> dict[str, pd.DataFrame]:
        f = analysis.making.forecasts
        return {} if f.empty else {"forecasts.csv": f}


class Checks(Section):
    name = "checks"

    def markdown(self, analysis: Analysis) -> str:
        return md.checks_lines(analysis.verdicts)[1]


class Figures(Section):
    """The gallery: every figure drawn (its own, plots.GALLERY, and any other section's, first),
    each under its caption."""

    name = "figures"

    def figures(self, analysis: Analysis) -> list[Figure]:
        from harness.report.plots import GALLERY

        return GALLERY

    def markdown(self, analysis: Analysis) -> str:
        if not analysis.drawn:
            return "## Figures\n\n_No figures: the run has no data to draw._\n"
        captions = {f.name: f.caption for s in applying(analysis) for f in s.figures(analysis)}
        parts = ["## Figures\n"]
        for name in analysis.drawn:
            parts.append(f"{captions.get(name, name)}\n\n![{name}](figures/{name})\n")
        return "\n".join(parts)


#: report.md's sections, in the order it prints them
SECTIONS: list[Section] = [
    Header(),
    Summary(),
    Serving(),
    Leaderboard(),
    Markdown("carbon", md.carbon_section),
    Markdown("boundary", md.boundary_section),
    Markdown("lifetime", md.lifetime_section),
    Markdown("commands", md.commands_section),
    Markdown("repetitions", md.repetitions_section),
    Markdown("failed", md.failed_section),
    Markdown("warnings", md.warnings_section),
    Techniques(),
    Making(),
    Forecasts(),
    Checks(),
    Figures(),
]


def applying(analysis: Analysis, sections: list[Section] | None = None) -> list[Section]:
    return [s for s in (SECTIONS if sections is None else sections) if s.applies(analysis)]


def draw(analysis: Analysis, folder) -> dict:
    """Draw every applying section's figures into ``folder``; ``analysis.drawn`` gets them."""
    folder.mkdir(parents=True, exist_ok=True)
    for section in applying(analysis):
        for figure in section.figures(analysis):
            path = figure.draw(analysis, folder / figure.name)
            if path is not None:
                analysis.drawn[figure.name] = path
    return analysis.drawn


def render(analysis: Analysis) -> str:
    """report.md: the applying sections' markdown, in order, blank ones left out."""
    texts = (s.markdown(analysis) for s in applying(analysis))
    return "\n".join(t for t in texts if t)
