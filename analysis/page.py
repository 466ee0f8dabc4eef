"""One self-contained HTML page of headed sections, each a paragraph, a table and plotly figures: plotly.js is
inlined once, with the first figure, so the page opens offline."""

from __future__ import annotations

import html
import numbers
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

HEIGHT = 400  # px, every figure but the participation timeline, which grows with its rows
# Fixed qualitative colours: run i (or class i) gets PALETTE[i % len(PALETTE)] in every figure.
PALETTE = qualitative.Plotly + qualitative.Dark24

Section = tuple[str, str, pd.DataFrame | None, list[go.Figure]]  # heading, paragraph, table, figures

STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1200px}div.table{overflow-x:auto;margin:1em 0}"
         "table{border-collapse:collapse;font-size:14px}th,td{padding:3px 8px;border-bottom:1px solid #ddd;"
         "text-align:right}td{white-space:nowrap}"
         "th:first-child,td:first-child{text-align:left}p{max-width:60em}")


def fmt(v) -> str:
    """Numbers as a person reads them: thousands separated, four significant digits below 10,000."""
    if isinstance(v, bool) or not isinstance(v, numbers.Number):
        return str(v)
    if isinstance(v, numbers.Integral):
        return f"{v:,}"
    return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"


def in_units(n: float) -> str:
    """Bytes in the largest unit that fits: '13.2 MB'."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:,.0f} B"


def table_html(table: pd.DataFrame, na_rep: str = "not reached") -> str:
    shown = table.astype(object).map(lambda v: na_rep if pd.isna(v) else fmt(v))
    return f"<div class='table'>{shown.to_html(index=False)}</div>"


def write_page(path: Path, title: str, sections: list[Section], intro: str = "") -> Path:
    """A section with neither table nor figures is left out; so is an empty paragraph."""
    body, first = [], True
    for heading, text, table, figures in sections:
        if (table is None or table.empty) and not figures:
            continue
        body.append(f"<h2>{html.escape(heading)}</h2>")
        if text:
            body.append(f"<p>{html.escape(text)}</p>")
        if table is not None and not table.empty:
            body.append(table_html(table))
        for fig in figures:
            body.append(fig.to_html(full_html=False, include_plotlyjs=first))
            first = False
    intro_html = f"<p>{html.escape(intro)}</p>" if intro else ""
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{intro_html}"
            + "".join(body) + "</body></html>")
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path
