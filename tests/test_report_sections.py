"""report.md's sections: one ordered list, one analysis per build, and a new section is one class
plus one line in SECTIONS."""

from __future__ import annotations

import pandas as pd
from fakeruns import standard_cases, write_run

from harness.report import build_report, sections, tables, techniques
from harness.report.figure import Figure


def test_a_build_computes_the_tables_and_the_techniques_once(tmp_path, monkeypatch):
    run = write_run(tmp_path, standard_cases())
    calls = {"tables": 0, "techniques": 0}
    real_tables, real_build = tables.build_tables, techniques.build

    def count_tables(r):
        calls["tables"] += 1
        return real_tables(r)

    def count_build(t):
        calls["techniques"] += 1
        return real_build(t)

    monkeypatch.setattr(tables, "build_tables", count_tables)
    monkeypatch.setattr(techniques, "build", count_build)
    report = build_report(run)
    # the techniques figure is drawn from the build's analysis, not from a second analysis
    assert (report / "figures" / "techniques.png").exists()
    assert calls == {"tables": 1, "techniques": 1}


def test_sections_have_unique_names_and_the_gallery_comes_last():
    names = [s.name for s in sections.SECTIONS]
    assert len(names) == len(set(names)) and all(names)
    assert names[0] == "header" and names[-1] == "figures"


def test_report_md_prints_the_sections_in_the_order_of_sections(tmp_path):
    run = write_run(tmp_path, standard_cases())
    md = (build_report(run, figures=False) / "report.md").read_text()
    headings = [line for line in md.split("\n") if line.startswith("## ")]
    expected = [
        "## Summary (headline shape)",
        "## Leaderboard",
        "## Carbon",
        "## Carbon beyond the plug",
        "## Lifetime",
        "## Repetitions and stopping",
        "## Techniques",
    ]
    assert [h for h in headings if h in expected] == expected
    assert headings[-1] == "## Figures"


class Extra(sections.Section):
    """What a contributor adds: its text, a CSV file and a figure with its caption."""

    name = "extra"

    def markdown(self, analysis) -> str:
        return f"## Extra\n\n{len(analysis.tables.cases)} cases.\n"

    def tables(self, analysis) -> dict[str, pd.DataFrame]:
        return {"extra.csv": analysis.tables.cases[["case_id"]]}

    def figures(self, analysis) -> list[Figure]:
        return [Figure("extra.png", _draw_extra, "The extra figure's caption.")]


def _draw_extra(analysis, path):
    import matplotlib.pyplot as plt

    from harness.report.png import save_png

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, len(analysis.tables.cases)])
    return save_png(fig, path)


class Nothing(sections.Section):
    name = "nothing"

    def applies(self, analysis) -> bool:
        return False

    def markdown(self, analysis) -> str:
        raise AssertionError("a section that does not apply is not asked for its text")


def test_a_new_section_is_one_class_and_one_line(tmp_path, monkeypatch):
    run = write_run(tmp_path, standard_cases())
    listed = list(sections.SECTIONS)
    at = [s.name for s in listed].index("leaderboard") + 1
    monkeypatch.setattr(sections, "SECTIONS", [*listed[:at], Extra(), Nothing(), *listed[at:]])
    report = build_report(run)
    md = (report / "report.md").read_text()
    assert md.index("## Leaderboard") < md.index("## Extra") < md.index("## Carbon")
    n = len(pd.read_csv(report / "cases.csv"))
    assert f"## Extra\n\n{n} cases." in md
    assert len(pd.read_csv(report / "extra.csv")) == n
    assert (report / "figures" / "extra.png").exists()
    figures = md[md.index("## Figures") :]
    assert "The extra figure's caption.\n\n![extra.png](figures/extra.png)" in figures


def test_text_that_looks_like_the_figures_heading_moves_nothing(tmp_path, monkeypatch):
    """The old build spliced the techniques sections in before the first "## Figures" it found."""
    run = write_run(tmp_path, standard_cases())

    class Early(sections.Section):
        name = "early"

        def markdown(self, analysis) -> str:
            return "## Figures of merit\n\nA section of its own.\n"

    listed = list(sections.SECTIONS)
    monkeypatch.setattr(sections, "SECTIONS", [listed[0], Early(), *listed[1:]])
    md = (build_report(run, figures=False) / "report.md").read_text()
    assert md.index("## Figures of merit") < md.index("## Summary")
    assert md.index("## Techniques") > md.index("## Summary")
