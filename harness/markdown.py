"""Markdown table lines, for what the harness prints and writes into the docs."""

from __future__ import annotations

from collections.abc import Iterable


def markdown_row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown_head(head: list[str]) -> str:
    """The header row and the line under it."""
    return markdown_row(head) + "\n|" + "---|" * len(head)


def markdown_table(head: list[str], rows: Iterable[Iterable[str]]) -> str:
    """A Markdown table with its columns padded to one width, so it reads aligned in a terminal and
    renders the same in a Markdown file."""
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(head, *rows, strict=True)]
    def line(cells: list[str]) -> str:
        return markdown_row(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
    return "\n".join([line(head), "|" + "|".join("-" * (width + 2) for width in widths) + "|", *map(line, rows)])
