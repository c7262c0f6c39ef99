"""The Markdown and HTML renderers: the same sections give the same content in both."""

import json

from matplotlib.figure import Figure

from analysis.document import Section, Table, VerdictBadge, markdown, save_figures, to_html, write
from analysis.rules import NOT_SUPPORTED, SUPPORTED


def _sections(image):
    return [
        Section("Results", ["Some **bold**, `code` and a [link](other/report.html).",
                            Table(["arm", "value"], [["a|b", "1"], ["c", "2"]])]),
        Section("Claims", ["### claim-one", VerdictBadge(SUPPORTED), VerdictBadge(NOT_SUPPORTED), image]),
        Section("Runs", ["3 runs.", Table(["run"], [["x"], ["y"], ["z"]])], collapsed=True),
    ]


def _image(tmp_path):
    figure = Figure()
    figure.subplots().plot([0, 1], [0, 1])
    images, written = save_figures([("fig", figure, "A caption")], tmp_path)
    assert [p.name for p in written] == ["fig.png", "fig.svg"]
    return images[0]


def test_markdown_renders_every_block(tmp_path):
    text = markdown("Title", _sections(_image(tmp_path)), tmp_path)
    assert text.startswith("# Title\n\n## Results\n")
    assert "| a\\|b | 1 |" in text and "| --- | --- |" in text
    assert "**Verdict: supported**" in text and "**Verdict: not supported**" in text
    assert "![A caption](fig.png)" in text and "### claim-one" in text


def test_html_is_self_contained_and_marks_verdicts(tmp_path):
    page = to_html("Title", _sections(_image(tmp_path)))
    assert "<strong>bold</strong>" in page and "<code>code</code>" in page
    assert '<a href="other/report.html">link</a>' in page
    assert '<p class="verdict supported">supported</p>' in page
    assert '<p class="verdict refuted">not supported</p>' in page
    assert page.count('src="data:image/png;base64,') == 1 and "fig.png" not in page
    assert "<h3>claim-one</h3>" in page and "<details><summary>show 3 rows</summary>" in page


def test_write_names_files_by_stem_and_writes_a_summary_only_when_given(tmp_path):
    paths = write(tmp_path, "Title", [Section("S", ["text"])], summary={"verdicts": []})
    assert {p.name for p in paths.values()} == {"report.md", "report.html", "summary.json"}
    assert json.loads(paths["summary"].read_text()) == {"verdicts": []}
    (tmp_path / "sub").mkdir()
    index = write(tmp_path / "sub", "Index", [Section("S", ["text"])], stem="index")
    assert set(index) == {"markdown", "html"} and index["html"].name == "index.html"
