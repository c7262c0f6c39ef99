"""A report as a list of sections, written as ``report.md``, ``report.html`` and ``summary.json``.

The Markdown and the HTML come from the same sections, so they always agree. A section
holds blocks: a paragraph (a string with Markdown's inline marks: code, bold, italics,
links; ``### `` starts a heading), a :class:`Table`, an :class:`Image` or a
:class:`VerdictBadge`. The HTML is self-contained (figures embedded as base64 PNG), so it
can be mailed or opened from an MLflow artifact view.
"""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

from analysis.figures import save_figure
from analysis.rules import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    path: Path
    caption: str


@dataclass
class VerdictBadge:
    verdict: str


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)
    collapsed: bool = False
    """Fold the section (a long table of runs) behind a "show N rows" toggle in HTML."""


def save_figures(drawn: list[tuple[str, Figure, str]], out: Path) -> tuple[list[Image], list[Path]]:
    """Save each ``(file name, figure, caption)`` as ``out/NAME.png`` and ``.svg``.

    Returns:
        The images to place in a section and every file written.
    """
    images, written = [], []
    for name, figure, caption in drawn:
        paths = save_figure(figure, out / name)
        written += paths
        images.append(Image(paths[0], caption))
    return images, written


def write(out: Path, title: str, sections: list[Section], *, stem: str = "report",
          summary: dict | None = None) -> dict[str, Path]:
    """Write ``STEM.md`` and ``STEM.html`` into ``out`` and, when given, ``summary`` as ``summary.json``.

    Returns:
        ``{"markdown": Path, "html": Path}``, plus ``"summary": Path`` with a summary.
    """
    paths = {"markdown": out / f"{stem}.md", "html": out / f"{stem}.html"}
    paths["markdown"].write_text(markdown(title, sections, out))
    paths["html"].write_text(to_html(title, sections))
    if summary is not None:
        paths["summary"] = out / "summary.json"
        paths["summary"].write_text(json.dumps(summary, indent=2, default=str))
    return paths


# -- Markdown ----------------------------------------------------------------------------

def _md_table(table: Table) -> str:
    cells = lambda row: "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"  # noqa: E731
    return "\n".join([cells(table.header), cells(["---"] * len(table.header)), *map(cells, table.rows)])


def markdown(title: str, sections: list[Section], folder: Path) -> str:
    """The sections as Markdown; images are linked relative to ``folder``."""
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Table):
                lines.append(_md_table(block))
            elif isinstance(block, Image):
                lines.append(f"![{block.caption}]({block.path.relative_to(folder)})")
            elif isinstance(block, VerdictBadge):
                lines.append(f"**Verdict: {block.verdict}**")
            else:
                lines.append(block)
            lines.append("")
    return "\n".join(lines)


# -- HTML -----------------------------------------------------------------------------------

_VERDICT_CLASS = {SUPPORTED: "supported", NOT_SUPPORTED: "refuted", INCONCLUSIVE: "inconclusive"}


def _inline(text: str) -> str:
    """Markdown's inline marks used in reports (code, bold, italics, links) as HTML."""
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"\*([^*]+)\*", r"<em>\1</em>", text)
    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', text)


def _html_block(block) -> str:
    if isinstance(block, Table):
        head = "".join(f"<th>{_inline(c)}</th>" for c in block.header)
        body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in block.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if isinstance(block, Image):
        data = base64.b64encode(block.path.read_bytes()).decode()
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block.caption)}">'
                f"<figcaption>{_inline(block.caption)}</figcaption></figure>")
    if isinstance(block, VerdictBadge):
        return f'<p class="verdict {_VERDICT_CLASS[block.verdict]}">{html.escape(block.verdict)}</p>'
    if block.startswith("### "):
        return f"<h3>{_inline(block[4:])}</h3>"
    return f"<p>{_inline(block)}</p>" if block else ""


_CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2330;
       max-width: 1100px; margin: 2em auto; padding: 0 1.5em; }
h1 { font-size: 1.7em; border-bottom: 2px solid #2b5b84; padding-bottom: .2em; }
h2 { font-size: 1.3em; margin-top: 1.8em; color: #2b5b84; }
h3 { font-size: 1.05em; margin: 1.4em 0 .3em; font-family: ui-monospace, monospace; }
table { border-collapse: collapse; margin: .6em 0 1em; font-size: .9em; }
th, td { border: 1px solid #d4d9e1; padding: .3em .7em; text-align: left; vertical-align: top; }
th { background: #eef2f7; } tbody tr:nth-child(even) { background: #f8f9fb; }
code { font: .9em ui-monospace, monospace; background: #eef2f7; padding: .05em .3em; border-radius: 3px; }
figure { margin: 1em 0; } img { max-width: 100%; border: 1px solid #e3e6eb; }
figcaption { font-size: .85em; color: #555; }
.verdict { display: inline-block; padding: .15em .8em; border-radius: 1em; font-weight: 600; margin: 0; }
.supported { background: #dff3e3; color: #1b6b2c; } .refuted { background: #fbe0e0; color: #9b1c1c; }
.inconclusive { background: #fff3d6; color: #7a5a00; }
details summary { cursor: pointer; color: #2b5b84; }
"""


def to_html(title: str, sections: list[Section]) -> str:
    """The sections as one self-contained HTML page (figures embedded, styles inline)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    for section in sections:
        body = "".join(_html_block(block) for block in section.blocks)
        if section.collapsed:
            body = f"<details><summary>show {len(section.blocks[-1].rows)} rows</summary>{body}</details>"
        parts.append(f"<section><h2>{_inline(section.title)}</h2>{body}</section>")
    return "".join(parts) + "</body></html>"
