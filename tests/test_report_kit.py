"""The report kit: one stylesheet and page shell for every report, escaped figures and
sections, and no module outside the kit building a page of its own."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from matplotlib.figure import Figure

from fedfort.redteam.report import write_report
from fedfort.redteam.summary import summarize
from fedfort.report.document import Image, Section, Table, render_html, render_markdown
from fedfort.report.figures import data_uri, figure, png_bytes
from fedfort.report.html import _render
from fedfort.report.page import STYLESHEET, html_page, section

SRC = Path(__file__).resolve().parents[1] / "src" / "fedfort"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _style(page: str) -> str:
    match = re.search(r"<style>(.*?)</style>", page, re.DOTALL)
    assert match is not None, "the page has no <style> element"
    return match.group(1)


def test_compliance_and_red_team_pages_share_the_one_stylesheet(tmp_path: Path) -> None:
    compliance = _render({}, [], "2026-01-01T00:00:00+00:00")
    cells = [
        {
            "attack": "none",
            "attack_kind": "none",
            "defense": "fedavg",
            "seed": 0,
            "accuracy": 0.9,
            "backdoor_asr": None,
            "detection_precision": None,
            "detection_recall": None,
            "malicious_quarantined": None,
            "first_quarantine_round": None,
            "honest_quarantined_at_end": None,
            "duration_s": 1.0,
        }
    ]
    summary = summarize(cells, attacks=["none"], defenses=["fedavg"])
    red_team = write_report(summary, cells, tmp_path)["html"].read_text(encoding="utf-8")
    assert _style(compliance) == _style(red_team) == STYLESHEET
    # the red-team tables and figures use the compliance report's classes and elements
    assert 'class="badge' in compliance and "td.num" in STYLESHEET
    assert red_team.count("<section>") == red_team.count("</section>") > 0


def test_page_escapes_its_title_and_drops_empty_lines() -> None:
    page = html_page("a <b> & c", ["", "<p>x</p>", *section("h <2>", "<p>y</p>")])
    assert page.startswith("<!DOCTYPE html>\n") and page.endswith("</html>\n")
    assert "<title>a &lt;b&gt; &amp; c</title>" in page
    assert "<h1>a &lt;b&gt; &amp; c</h1>" in page
    assert "<h2>h &lt;2&gt;</h2>" in page
    assert "\n\n" not in page
    assert "<script" not in page and "http" not in page


def test_figures_escape_their_text_and_embed_deterministic_pngs() -> None:
    html = figure('x.png" onerror="alert(1)', "a <b>", caption="c & d")
    assert '<img src="x.png&quot; onerror=&quot;alert(1)" alt="a &lt;b&gt;">' in html
    assert "<figcaption>c &amp; d</figcaption>" in html
    assert "<figcaption>" not in figure("x.png", "x")

    def draw() -> bytes:
        fig = Figure(figsize=(2, 1))
        fig.subplots().plot([0, 1], [1, 0])
        return png_bytes(fig, dpi=50)

    first, second = draw(), draw()
    assert first.startswith(PNG_SIGNATURE) and first == second
    assert b"Software" not in first  # no matplotlib version in the bytes
    uri = data_uri(first)
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == first


def test_markdown_and_html_carry_the_same_sections_escaped_for_each() -> None:
    sections = [
        Section("Run", bullets=["name: a|b"]),
        Section(
            "Results <all>",
            paragraphs=["x < y & `z`"],
            table=Table(["attack", "acc"], [["sign|flip", "0.9"]]),
            image=Image("heat <map>", "heat.png"),
        ),
    ]
    markdown = render_markdown("T", sections)
    assert markdown.startswith("# T\n")
    assert "## Results \\<all\\>" in markdown
    assert "- name: a\\|b" in markdown
    assert "x \\< y & \\`z\\`" in markdown
    assert "| sign\\|flip | 0.9 |" in markdown
    assert "![heat \\<map\\>](heat.png)" in markdown
    page = render_html("T", sections)
    assert "<h2>Results &lt;all&gt;</h2>" in page
    assert "<li>name: a|b</li>" in page
    assert "<p>x &lt; y &amp; `z`</p>" in page
    assert "<td>sign|flip</td><td>0.9</td>" in page
    assert '<img src="heat.png" alt="heat &lt;map&gt;">' in page
    assert page.count("<h2>") == markdown.count("\n## ") == len(sections)


def test_only_the_kit_builds_pages_and_stylesheets() -> None:
    owners: dict[str, list[str]] = {"<!DOCTYPE html>": [], "<style>{": [], "b64encode": []}
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for needle, found in owners.items():
            if needle in text:
                found.append(str(path.relative_to(SRC)))
    assert owners["<!DOCTYPE html>"] == ["report/page.py"]
    assert owners["<style>{"] == ["report/page.py"]
    # figures reach a page as data URIs through the kit alone
    assert [p for p in owners["b64encode"] if p.startswith(("report/", "redteam/"))] == [
        "report/figures.py"
    ]
