"""index.html: one self-contained page with every figure and table, to open in a browser."""

from __future__ import annotations

from html import escape

from reports.page import FIGURES, Page, Section

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; }
figcaption, p.explain { color: #555; font-size: 0.9em; max-width: 60em; }
ul.notes li { color: #8a4b00; }
"""


def _section(section: Section) -> str:
    text = f'<p class="explain">{escape(section.text)}</p>' if section.text else ""
    table = section.table.to_html(index=False, border=0, escape=True)
    return f"<h2>{escape(section.heading)}</h2>{text}{table}"


def index_html(page: Page) -> str:
    notes = "".join(f"<li>{escape(n)}</li>" for n in page.notes) or "<li>None: every run is complete.</li>"
    figures = "".join(
        f'<figure id="{stem}"><h3>{escape(FIGURES[stem][0])}</h3>'
        f'<a href="{stem}.svg"><img src="{stem}.png" alt="{escape(FIGURES[stem][0])}"></a>'
        f"<figcaption>{escape(FIGURES[stem][1])}</figcaption></figure>"
        for stem in page.figures
    )
    details = "".join(_section(s) for s in page.details)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(page.title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{escape(page.title)}</h1>{_section(page.summary)}"
        f'<h2>Notes</h2><ul class="notes">{notes}</ul><h2>Figures</h2>{figures}{details}</body></html>\n'
    )
