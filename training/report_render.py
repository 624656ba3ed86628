"""Document blocks of the report and their rendering to HTML, Markdown and CSV.

Section content is a list of blocks (headings, paragraphs, notices, tables and
figures). The HTML file embeds every figure as a base64 PNG, so it opens
without network access or neighbouring files. The Markdown file links the PNG
files written beside it, and each table is also written as a CSV file.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape

TEMPLATES = Path(__file__).with_name("templates")
MISSING_VALUE = "—"
# Formats whose cells are right-aligned in HTML tables.
NUMERIC_FORMATS = ("count", "percent", "hours", "number")


@dataclass(frozen=True)
class Paragraph:
    text: str
    kind: str = "paragraph"


@dataclass(frozen=True)
class Notice:
    """A statement that data needed by a figure is missing, and why."""

    text: str
    kind: str = "notice"


@dataclass(frozen=True)
class Subheading:
    text: str
    kind: str = "subheading"


@dataclass(frozen=True)
class Table:
    """A table of raw values, with ``formats`` naming how each column is shown.

    Formats are ``count``, ``percent``, ``hours``, ``number``, ``datetime`` and
    ``text`` (the default). ``name`` is the CSV file stem. HTML and Markdown
    show at most ``shown_rows`` rows, while the CSV file keeps them all.
    """

    name: str
    caption: str
    frame: pd.DataFrame
    formats: dict[str, str] = field(default_factory=dict)
    shown_rows: int | None = None
    kind: str = "table"

    @property
    def truncated(self) -> bool:
        return self.shown_rows is not None and len(self.frame) > self.shown_rows

    @property
    def overflow_note(self) -> str:
        return (
            f"表中仅列出前 {self.shown_rows} 行，共 {len(self.frame)} 行，"
            f"完整数据见 {self.name}.csv。"
        )


@dataclass(frozen=True)
class Figure:
    name: str
    caption: str
    png: bytes
    kind: str = "figure"

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


Block = Paragraph | Notice | Subheading | Table | Figure


@dataclass
class Section:
    key: str
    title: str
    blocks: list[Block] = field(default_factory=list)


def number_captions(sections: list[Section]) -> list[Section]:
    """Prefix captions with 表 and 图 numbers: the section's position, then a counter.

    The first section (the introduction) is position 0 and is expected to have
    no tables or figures.
    """
    numbered = []
    for position, section in enumerate(sections):
        counters = {"table": 0, "figure": 0}
        blocks = []
        for block in section.blocks:
            if block.kind in counters:
                counters[block.kind] += 1
                word = "表" if block.kind == "table" else "图"
                caption = f"{word} {position}-{counters[block.kind]} {block.caption}"
                block = replace(block, caption=caption)
            blocks.append(block)
        numbered.append(Section(section.key, section.title, blocks))
    return numbered


def format_value(value: object, style: str) -> str:
    """Format one table cell for display, with a dash for a missing value."""
    if (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or value is pd.NaT
    ):
        return MISSING_VALUE
    if style == "count":
        return str(int(value))
    if style == "percent":
        return f"{float(value):.1%}"
    if style == "hours":
        return f"{float(value):.2f}"
    if style == "number":
        return f"{float(value):.2f}"
    if style == "datetime":
        return pd.Timestamp(value).strftime("%Y-%m-%d %H:%M")
    return str(value)


def table_cells(table: Table) -> list[list[str]]:
    frame = table.frame.head(table.shown_rows) if table.truncated else table.frame
    return [
        [
            format_value(value, table.formats.get(column, "text"))
            for column, value in row.items()
        ]
        for _, row in frame.iterrows()
    ]


def render_html(title: str, subtitle: str, sections: list[Section]) -> str:
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    template = environment.get_template("report.html.j2")
    return template.render(
        title=title,
        subtitle=subtitle,
        sections=sections,
        cells=table_cells,
        numeric=NUMERIC_FORMATS,
        generated=datetime.now().strftime("%Y-%m-%d %H:%M"),
    )


def _markdown_cell(text: str) -> str:
    """Make text safe for a Markdown table cell: no HTML, pipes or line breaks.

    Markdown passes HTML through, so ticket text such as ``<script>`` is
    written as entities and shows as typed wherever the report is pasted.
    """
    text = html.escape(text, quote=False)
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def markdown_table(table: Table) -> list[str]:
    header = [_markdown_cell(str(c)) for c in table.frame.columns]
    lines = [f"**{table.caption}**", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join(" --- " for _ in header) + "|")
    for row in table_cells(table):
        lines.append("| " + " | ".join(_markdown_cell(cell) for cell in row) + " |")
    if table.truncated:
        lines += ["", table.overflow_note]
    return lines


def render_markdown(
    title: str, subtitle: str, sections: list[Section], figure_folder: str
) -> str:
    lines = [f"# {title}", "", subtitle, ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if block.kind == "paragraph":
                lines.append(block.text)
            elif block.kind == "notice":
                lines.append(f"> 说明：{block.text}")
            elif block.kind == "subheading":
                lines.append(f"### {block.text}")
            elif block.kind == "table":
                lines += markdown_table(block)
            elif block.kind == "figure":
                lines.append(f"![{block.caption}]({figure_folder}/{block.name}.png)")
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def write_tables(sections: list[Section], folder: Path) -> list[Path]:
    """Write every table as UTF-8 CSV with a byte-order mark, so Excel reads Chinese."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for section in sections:
        for block in section.blocks:
            if block.kind == "table":
                path = folder / f"{block.name}.csv"
                block.frame.to_csv(path, index=False, encoding="utf-8-sig")
                paths.append(path)
    return paths


def write_figures(sections: list[Section], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for section in sections:
        for block in section.blocks:
            if block.kind == "figure":
                path = folder / f"{block.name}.png"
                path.write_bytes(block.png)
                paths.append(path)
    return paths


__all__ = [
    "Block",
    "Figure",
    "Notice",
    "Paragraph",
    "Section",
    "Subheading",
    "Table",
    "format_value",
    "number_captions",
    "render_html",
    "render_markdown",
    "write_figures",
    "write_tables",
]
