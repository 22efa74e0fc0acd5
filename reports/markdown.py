"""summary.md: the report as Markdown, readable on GitHub or in a terminal next to the figures."""

from __future__ import annotations

from reports.page import FIGURES, Page, Section
from reports.tables import markdown_table


def _section(section: Section) -> list[str]:
    return [f"## {section.heading}", "", *([section.text, ""] if section.text else []),
            markdown_table(section.table), ""]


def summary_markdown(page: Page) -> str:
    lines = [f"# {page.title}", "", *_section(page.summary), "## Notes", ""]
    lines += [f"- {note}" for note in page.notes] or ["None: every run is complete."]
    lines += ["", "## Figures", ""]
    for stem in page.figures:
        title, caption = FIGURES[stem]
        lines += [f"### {title}", "", f"![{title}]({stem}.png)", "", f"{caption} ([SVG]({stem}.svg))", ""]
    for section in page.details:
        lines += _section(section)
    return "\n".join(lines).rstrip() + "\n"
