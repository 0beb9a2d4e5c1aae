"""Report tables and plots as a person reads them: shares as percentages, settings as set, "n/a" with a reason,
SKIM and base first, and plots whose sketch renders inline in the Dagster UI (Markdown under 1,000 characters)."""

import base64
import xml.etree.ElementTree as ET
from urllib.parse import unquote

import polars as pl
import pytest

from skim_assets.lib.plots import INLINE_MARKDOWN_LIMIT, bar_plot, histogram_plot, line_plot
from skim_assets.lib.report_tables import format_cell, methods_first, metrics_table_markdown, report_column
from skim_assets.resources.artifacts import column_schema, report_table, table_preview

SWEEP = pl.DataFrame({"tau": [0.7, 0.75], "click_neighbour_floor": [0.3, None], "pairs_added": [788, 512],
                      "repair_precision": [0.71453, 0.8], "R@100": [0.9079, 0.91]})


def test_each_kind_of_figure_reads_as_it_is_meant():
    assert metrics_table_markdown(SWEEP).splitlines() == [
        "| tau | click_neighbour_floor | pairs_added | repair_precision | R@100 |",
        "|---:|---:|---:|---:|---:|",
        "| 0.7 | 0.3 | 788 | 71.45 | 90.79 |",  # tau and floor as set, never 70.00 / 30.00
        "| 0.75 | n/a | 512 | 80.00 | 91.00 |",
    ]
    assert format_cell(0.41000000000000003, "number") == "0.41"  # float noise gone
    assert format_cell(0.1824196597353497, "number") == "0.1824"
    assert report_column("dual_encoder unbiased R@100").kind == "share"
    assert "recall at 100" in report_column("dual_encoder unbiased R@100").description
    assert report_column("my_float", pl.Float64).kind == "number"  # unknown floats are not taken for shares


def test_method_tables_put_skim_and_base_first_and_keep_the_rest_in_order():
    table = pl.DataFrame({"method": ["base", "oracle", "mar", "skim", "ips"], "R@10": [0.1, 0.9, 0.2, 0.5, 0.1]})
    assert methods_first(table)["method"].to_list() == ["skim", "base", "oracle", "mar", "ips"]


def test_the_ui_table_is_typed_described_and_says_n_a():
    value = report_table(SWEEP.with_columns(note=pl.Series([None, "no neighbour floor set"])))
    columns = {c.name: c for c in value.schema.columns}
    assert columns["repair_precision"].type == "percent" and columns["tau"].type == "setting"
    assert "mapping threshold" in columns["tau"].description and "(%)" in columns["R@100"].description
    rows = [r.data for r in value.records]
    assert rows[0] == {"tau": 0.7, "click_neighbour_floor": 0.3, "pairs_added": 788, "repair_precision": 71.45,
                       "R@100": 90.79, "note": ""}
    assert rows[1]["click_neighbour_floor"] == "n/a" and rows[1]["note"] == "no neighbour floor set"


def test_the_columns_tab_says_what_known_columns_mean():
    described = {c.name: c.description for c in column_schema(SWEEP.with_columns(x=pl.lit(1))).columns}
    assert "mapping threshold" in described["tau"] and "recall at 100" in described["R@100"]
    assert described["x"] is None


def test_small_tables_are_previewed_whole_and_big_ones_by_their_head():
    assert len(table_preview(pl.DataFrame({"x": range(20)})).records) == 20
    assert len(table_preview(pl.DataFrame({"x": range(2000)})).records) == 5
    assert table_preview(pl.DataFrame({"x": [0.41000000000000003]})).records[0].data["x"] == 0.41


def _svg(markdown: str) -> ET.Element:
    uri = markdown[markdown.index("(") + 1:-1]
    header, _, payload = uri.partition(",")
    text = base64.b64decode(payload).decode() if header.endswith(";base64") else unquote(payload)
    return ET.fromstring(text)


def test_every_plot_has_a_png_and_an_inline_sketch_of_the_same_data(tmp_path):
    taus = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    series = {name: (taus, [i / 10 + t / 3 for t in taus]) for i, name in
              enumerate(["unbiased R@100", "unbiased R@10", "pairs added / max", "repair precision", "repair recall"])}
    plots = [
        line_plot(series, "tau sweep", "tau", "share", tmp_path / "tau.png"),
        line_plot({"loss": (list(range(500)), [1 / (i + 1) for i in range(500)])}, "loss", "step", "loss",
                  tmp_path / "loss.png"),
        bar_plot([f"method{i}" for i in range(15)], {"dual_encoder": [i / 15 for i in range(15)],
                                                    "ova_head": [None] + [i / 20 for i in range(14)]},
                 "R@100 by method", "R@100", tmp_path / "bars.png"),
        histogram_plot([i / 997 for i in range(997)], "scores", "(1 + cos) / 2", tmp_path / "hist.png", marker=0.8),
    ]
    for plot in plots:
        assert plot.path.read_bytes().startswith(b"\x89PNG")
        assert plot.sketch is not None and len(plot.sketch) < INLINE_MARKDOWN_LIMIT
        svg = _svg(plot.sketch)
        assert svg.tag.endswith("svg")
    shapes = [e for e in _svg(plots[0].sketch) if e.tag.endswith("path")]
    assert len(shapes) == 1 + len(series)  # the axes and one line per series
    legend = [e.text for e in _svg(plots[2].sketch) if e.tag.endswith("text")]
    assert legend == ["dual_encod", "ova_head"]


def test_a_plot_of_nothing_has_no_sketch(tmp_path):
    assert line_plot({"loss": ([], [])}, "loss", "step", "loss", tmp_path / "empty.png").sketch is None


@pytest.mark.parametrize("kind, value, text", [("share", None, "n/a"), ("count", 3.0, "3"), ("setting", 0.7, "0.7"),
                                               ("label", "a|b", "a\\|b"), ("flag", True, "True")])
def test_cells(kind, value, text):
    assert format_cell(value, kind) == text


def test_the_html_report_is_one_self_contained_page(tmp_path):
    from skim_assets.lib.html_report import REPORT_SECTIONS, ReportContent, render_report

    comparison = pl.DataFrame({"method": ["base", "skim"], "dual_encoder unbiased R@10": [0.1095, 0.1613],
                               "ova_head unbiased R@10": [0.1095, 0.786]})
    plot = line_plot({"loss": ([1, 2, 3], [3.0, 2.0, 1.5])}, "loss", "step", "loss", tmp_path / "loss.png")
    tables = {s: (comparison if s.asset == "comparison_report" else SWEEP if s.asset == "tau_sweep_report"
                  and s.table == "data" else None) for s in REPORT_SECTIONS}
    page = render_report(ReportContent("demo", tables, [plot.path]))
    assert page.startswith("<!doctype html>") and "http" not in page.replace("http://www.w3.org", "")
    # per base model, SKIM first, shares as percentages; tau as set; a column's meaning in its header's tooltip
    assert page.index("<h3>dual_encoder</h3>") < page.index("<h3>ova_head</h3>")
    dual = page[page.index("<h3>dual_encoder</h3>"):page.index("<h3>ova_head</h3>")]
    assert dual.index(">skim<") < dual.index(">base<") and ">16.13<" in dual and ">10.95<" in dual
    assert '<td class="setting">0.7</td>' in page and 'title="mapping threshold' in page
    assert page.count('<img alt="loss" src="data:image/png;base64,') == 1
    assert "Not materialized for this dataset: label_repair_report" in page
