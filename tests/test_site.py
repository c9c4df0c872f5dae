"""`harness site`: the page's data is leaderboard.csv's rows; stars, history, labels, one file."""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET

import pandas as pd
import pytest
from fakeruns import infer_case, standard_cases, write_run
from sitekit import add_serving, add_warning, nightly_runs

from harness.cli import main
from harness.report.compare import compare_runs
from harness.report.load import open_runs
from harness.report.site import (
    best_per_model,
    build_site,
    history,
    serving_rows,
    site_rows,
    size_class,
    star_ratings,
)
from harness.report.tables import build_tables

pytest.importorskip("plotly")


def page_data(page: str) -> dict:
    m = re.search(r'<script id="harness-data" type="application/json">(.*?)</script>', page, re.S)
    assert m, "the data travels inline"
    return json.loads(m.group(1))


def records(table: dict) -> pd.DataFrame:
    return pd.DataFrame(table["data"], columns=table["columns"])


def test_page_rows_are_the_leaderboard_csv_rows(tmp_path, capsys):
    runs = nightly_runs(tmp_path / "results")
    assert main(["leaderboard", str(tmp_path / "results"), "-o", str(tmp_path / "lb.csv")]) == 0
    assert main(["site", str(tmp_path / "results"), "-o", str(tmp_path / "site")]) == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert out.startswith(str(tmp_path / "site" / "index.html")) and "MB" in out
    board = pd.read_csv(tmp_path / "lb.csv")
    rows = records(page_data((tmp_path / "site" / "index.html").read_text())["rows"])
    key = ["model", "variant", "hardware", "batch_size"]
    assert len(rows) == len(board) == 4
    merged = board.merge(rows, on=key, suffixes=("_csv", "_page"))
    assert len(merged) == len(board)
    for col in ("run_id", "energy_method"):
        assert (merged[f"{col}_csv"] == merged[f"{col}_page"]).all(), col
    for col in ("energy_per_query_j", "energy_per_token_j", "accuracy", "ttft_s"):
        assert merged[f"{col}_csv"].to_numpy() == pytest.approx(merged[f"{col}_page"].to_numpy())
    # the latest run wins, as in leaderboard.csv
    assert set(rows["run_id"]) == {runs[-1].name}


def test_page_is_one_self_contained_file(tmp_path):
    run = write_run(tmp_path / "results", standard_cases())
    page_path = build_site([run], tmp_path / "site")
    page = page_path.read_text()
    assert page_path.stat().st_mode & 0o444 == 0o444, "readable by whoever it is shared with"
    # no external script, style, image or frame; nothing fetched
    assert not re.search(r"<(script|img|iframe|link)[^>]+(src|href)=", page, re.I)
    assert "default-src 'none'" in page and "connect-src 'none'" in page
    assert "Plotly" in page, "plotly's JavaScript is inlined"
    data = page_data(page)
    assert {"rows", "serving", "history", "labels", "runs", "star_rule"} <= set(data)
    assert len(page.encode()) < 6e6


def test_text_from_the_runs_cannot_open_a_tag(tmp_path):
    cases = [infer_case("</script><b>x", "fp32", "cpu", 1, 1.0)]
    run = write_run(tmp_path / "results", cases)
    page = build_site([run], tmp_path / "site").read_text()
    assert "</script><b>x" not in page
    assert page_data(page)["rows"]["data"][0][
        page_data(page)["rows"]["columns"].index("model")
    ] == ("</script><b>x")
    label = (tmp_path / "site" / "labels").glob("*.svg")
    for p in label:
        ET.parse(p)  # escaped: still well-formed XML


def test_stars_equal_bands_within_method_workload_and_size_class():
    rows = pd.DataFrame(
        {
            "energy_method": ["measured"] * 6 + ["estimated"] * 2 + ["measured"],
            "workload_class": ["infer p32 n32"] * 8 + ["infer p32 n128"],
            "size_class": ["< 10M"] * 6 + ["< 10M"] * 2 + ["< 10M"],
            # range 1..11: bands of width 2
            "energy_per_query_j": [1.0, 2.9, 3.0, 6.9, 11.0, 9.5, 50.0, 60.0, 5.0],
        }
    )
    stars = star_ratings(rows).tolist()
    assert stars[:6] == [5, 5, 4, 3, 1, 1]
    # estimated setups are rated among themselves only
    assert stars[6:8] == [5, 1]
    # alone in its class: not rated
    assert pd.isna(stars[8])


def test_size_classes():
    assert size_class(5e6) == "< 10M"
    assert size_class(1e7) == "10M–100M"
    assert size_class(7e9) == "1B–10B"
    assert size_class(4e11) == "≥ 100B"
    assert size_class(None) is None


def test_best_setup_per_model_never_mixes_methods(tmp_path):
    cases = standard_cases() + [
        infer_case("tiny-s", "cheap", "cpu", 8, 0.01, params=1e6, method="estimated")
    ]
    run = write_run(tmp_path / "results", cases)
    rows = site_rows([build_tables(r) for r in open_runs([run])])
    best = best_per_model(rows).set_index("model")
    # the estimated setup is cheaper, but tiny-s has measured setups: the measured one is its best
    assert best.loc["tiny-s", "energy_method"] == "measured"
    assert best.loc["tiny-s", "variant"] == "int8"


def test_history_marks_what_harness_compare_flags(tmp_path):
    runs = nightly_runs(tmp_path / "results")
    opened = open_runs([tmp_path / "results"])
    points, regressions = history([build_tables(r) for r in opened])
    assert len(points) == 3 * 4 and set(points["run_id"]) == {r.name for r in runs}
    # only the third run, 50% more energy, is flagged: on each setup's headline case
    assert set(regressions["run_id"]) == {runs[2].name}
    assert set(regressions["base_run_id"]) == {runs[1].name}
    flagged = regressions[regressions["metric"] == "energy_per_token_j"]
    assert sorted(flagged["setup"]) == sorted(points["setup"].unique())
    assert all("b8" in c for c in flagged["case"]), "the headline shape (largest batch)"
    assert flagged["change_rel"].to_numpy() == pytest.approx([0.5] * 4)
    # the same verdicts as harness compare itself
    cmp = compare_runs(opened[1], opened[2], history=[opened[0]])
    expected = cmp[(cmp["verdict"] == "regression") & (cmp["metric"] == "energy_per_token_j")]
    assert set(flagged["case"]) == set(expected[expected["case"].str.contains("b8")]["case"])


def test_history_with_a_drop_in_accuracy(tmp_path):
    from fakeruns import accuracy_case

    root = tmp_path / "results"
    base = [
        infer_case("m", "fp32", "cpu", 8, 1.0),
        accuracy_case("m", "fp32", "cpu", "arith_mc", 0.8, stderr=0.01),
    ]
    worse = [
        infer_case("m", "fp32", "cpu", 8, 1.0),
        accuracy_case("m", "fp32", "cpu", "arith_mc", 0.6, stderr=0.01),
    ]
    write_run(root, base, suite="s", started="2025-02-01T00:00:00Z")
    write_run(root, worse, suite="s", started="2025-02-02T00:00:00Z")
    _, regressions = history([build_tables(r) for r in open_runs([root])])
    assert regressions[["setup", "metric"]].values.tolist() == [["m/fp32/cpu", "accuracy"]]


def test_serving_rows_where_serving_was_measured(tmp_path):
    run = write_run(tmp_path / "results", standard_cases())
    assert serving_rows(open_runs([run])).empty
    add_serving(run, "tiny-s", "fp32", {1: [3.0, 3.2, 2.8], 4: [1.5, 1.4, 1.6]})
    rows = serving_rows(open_runs([run]))
    assert rows[["concurrency", "energy_per_request_j"]].values.tolist() == [[1, 3.0], [4, 1.5]]
    data = page_data(build_site([run], tmp_path / "site").read_text())
    assert len(data["serving"]["data"]) == 2


def test_warnings_reach_the_page(tmp_path):
    run = write_run(tmp_path / "results", standard_cases())
    add_warning(
        run, "tiny-l", "int8", "cpu:0: counter reset inside the window; energy after it only"
    )
    rows = records(page_data(build_site([run], tmp_path / "site").read_text())["rows"])
    by_setup = dict(zip(rows["setup"], rows["warnings"], strict=True))
    assert by_setup["tiny-l/int8/cpu"] == [
        "cpu:0: counter reset inside the window; energy after it only"
    ]
    assert by_setup["tiny-s/fp32/cpu"] == []


def test_labels_are_svg_files_with_the_best_setup(tmp_path):
    run = write_run(tmp_path / "results", standard_cases())
    build_site([run], tmp_path / "site")
    labels = sorted(p.name for p in (tmp_path / "site" / "labels").glob("*.svg"))
    assert labels == ["tiny-l.svg", "tiny-s.svg"]
    tree = ET.parse(io.StringIO((tmp_path / "site" / "labels" / "tiny-s.svg").read_text()))
    text = " ".join(t.text or "" for t in tree.iter("{http://www.w3.org/2000/svg}text"))
    # tiny-s int8 b8: 0.3 × 0.6 J per query, the cheaper of its two rated setups
    assert "tiny-s" in text and "int8 on cpu" in text and "0.18 J" in text
    assert "★★★★★" in text and "measured" in text


@pytest.mark.parametrize(
    "args, needle",
    [
        (["site", "MISSING", "-o", "OUT"], "MISSING"),
        (["site", "RUN", "-o", "FILE"], "FILE"),
        (["site", "RUN", "-o", "NOPARENT/site"], "NOPARENT"),
        (["site", "RUN"], "-o"),
        (["site", "RUN", "-o", "OUT", "--threshold", "-1"], "threshold"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, args, needle):
    run = write_run(tmp_path / "results", standard_cases())
    (tmp_path / "FILE").write_text("x")
    subst = {
        "MISSING": str(tmp_path / "MISSING"),
        "RUN": str(run),
        "OUT": str(tmp_path / "OUT"),
        "FILE": str(tmp_path / "FILE"),
        "NOPARENT/site": str(tmp_path / "NOPARENT" / "site"),
    }
    assert main([subst.get(a, a) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert not (tmp_path / "OUT").exists()


@pytest.mark.parametrize(
    "value, texts",
    [
        (None, []),
        (float("nan"), []),
        ("", []),
        ("dram: lost; energy before it only", ["dram: lost; energy before it only"]),
        ('["a: reset", "b: frozen"]', ["a: reset", "b: frozen"]),
        (["a: reset", "b: frozen"], ["a: reset", "b: frozen"]),
    ],
)
def test_warning_cells_as_writers_store_them(value, texts):
    import numpy as np

    from harness.report.site import _warning_texts

    assert _warning_texts(value) == texts
    if isinstance(value, list):
        assert _warning_texts(np.array(value, dtype=object)) == texts


def test_columns_the_leaderboard_already_carries_are_kept(tmp_path, monkeypatch):
    """Later leaderboards may carry engine or warnings themselves: theirs win, warnings merge."""
    import harness.report.site as site

    original = site.leaderboard_of

    def with_columns(tables):
        board = original(tables)
        return board.assign(engine="llamacpp", warnings="cpu:0: frozen")

    monkeypatch.setattr(site, "leaderboard_of", with_columns)
    run = write_run(tmp_path / "results", standard_cases())
    add_warning(run, "tiny-l", "int8", "dram: lost")
    rows = site_rows([build_tables(r) for r in open_runs([run])]).set_index("setup")
    assert set(rows["engine"]) == {"llamacpp"}
    assert rows.loc["tiny-l/int8/cpu", "warnings"] == ["cpu:0: frozen", "dram: lost"]
    assert rows.loc["tiny-s/fp32/cpu", "warnings"] == ["cpu:0: frozen"]
