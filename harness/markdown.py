"""Markdown table lines, for what the harness prints and writes into the docs."""

from __future__ import annotations

from collections.abc import Iterable


def markdown_row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown_head(head: list[str]) -> str:
    """The header row and the line under it."""
    return markdown_row(head) + "\n|" + "---|" * len(head)


def markdown_table(head: list[str], rows: Iterable[Iterable[str]]) -> str:
    return "\n".join([markdown_head(head), *map(markdown_row, rows)])
