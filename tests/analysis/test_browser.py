"""Reports opened in headless Chromium: the checker catches what it claims to, and real reports pass it."""

import struct

import plotly.graph_objects as go
import pytest

from analysis.browser import check_page, screenshot
from scenarios.loader import load_scenario
from scenarios.runner import RunOptions, run_scenario


def page(tmp_path, name, figures, extra=""):
    body = "".join(f.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, f in enumerate(figures))
    path = tmp_path / name
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'></head><body>{body}{extra}</body></html>")
    return path


@pytest.fixture(scope="module")
def systems_run(tmp_path_factory):
    scenario = load_scenario("quickstart", ["run.mode=systems", "run.rounds=3"])
    return run_scenario(scenario, RunOptions(out=tmp_path_factory.mktemp("runs") / "systems", progress=False))


def test_figures_with_data_pass(tmp_path, browser):
    result = check_page(page(tmp_path, "ok.html", [go.Figure(go.Scatter(x=[1, 2, 3], y=[3, 1, 2])),
                                                    go.Figure(go.Bar(x=["a", "b"], y=[1, 2]))]))
    assert result.problems() == []
    assert [f.points for f in result.figures] == [(3,), (2,)]


def test_an_empty_figure_is_reported(tmp_path, browser):
    empty = go.Figure(go.Scatter(x=[], y=[]))
    empty.update_layout(title="nothing here")
    result = check_page(page(tmp_path, "empty.html", [go.Figure(go.Scatter(x=[1], y=[1])), empty]))
    assert result.problems() == [f"{result.page}: figure 'nothing here' has no data"]


def test_script_errors_and_missing_files_are_reported(tmp_path, browser):
    broken = "<script>undefinedFunction();</script><img src='missing.png'>"
    result = check_page(page(tmp_path, "broken.html", [go.Figure(go.Scatter(x=[1], y=[1]))], broken))
    assert any("undefinedFunction" in e for e in result.errors)
    assert any("missing.png" in e for e in result.errors)


def test_a_page_without_plotly_is_reported(tmp_path, browser):
    path = tmp_path / "plain.html"
    path.write_text("<html><head></head><body><p>no figures</p></body></html>")
    problems = check_page(path).problems()
    assert any("plotly.js did not load" in p for p in problems) and any("no figure" in p for p in problems)


def test_systems_run_report_loads_with_data_in_every_figure(systems_run, browser):
    result = check_page(systems_run / "report.html")
    assert result.problems() == []
    assert len(result.figures) >= 5


def test_comparison_and_sweep_pages_load_with_data_in_every_figure(systems_run, tmp_path, browser, ray_local):
    from analysis.compare import write_comparison
    from scenarios.sweep import run_sweep

    other = run_scenario(load_scenario("quickstart", ["run.mode=systems", "run.rounds=3", "seed=1"]),
                         RunOptions(out=tmp_path / "other", progress=False))
    sweep = run_sweep("quickstart", ["network.uplink_mhz=5,20"], out=tmp_path / "sweep", progress=False,
                      fixed=["run.mode=systems", "run.rounds=2", "output.report=false"])
    for page in (write_comparison([systems_run, other], tmp_path / "compare.html"), sweep / "sweep.html"):
        result = check_page(page)
        assert result.problems() == [] and len(result.figures) >= 3, page


def test_screenshot_of_a_report(systems_run, tmp_path, browser):
    png = screenshot(systems_run / "report.html", tmp_path / "report.png", width=1000, height=1400)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1000, 1400)
    assert len(data) > 20_000  # a page with a table and figures, not a blank canvas
