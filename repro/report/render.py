"""Render the report's tables to CSV, Markdown and a self-contained HTML page (jinja2 templates)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from typing import Any

import jinja2

from repro.report.tables import Table


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")


def _md(text: Any) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(str(text).split()).replace("\\", "\\\\").replace("|", "\\|")


def _md_headers(t: Table) -> list[str]:
    """Column headers, prefixed with their column group (Markdown tables have no spanning cells)."""
    labels = [_md(c) for c in t.columns]
    if not t.groups:
        return labels
    out, i = [], 0
    for group, span in t.groups:
        for _ in range(span):
            out.append(f"{_md(group)} {labels[i]}".strip() if group else labels[i])
            i += 1
    return out


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("repro.report", "templates"),
                             autoescape=lambda name: bool(name and name.endswith(".html.j2")),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters.update(slug=_slug, md=_md, md_headers=_md_headers)
    return env


def render_html(context: Mapping[str, Any]) -> str:
    return environment().get_template("index.html.j2").render(**context)


def render_markdown(context: Mapping[str, Any]) -> str:
    text = environment().get_template("index.md.j2").render(**context)
    return re.sub(r"\n{3,}", "\n\n", text)


def _csv_value(text: str, value: float | None, published: bool) -> str:
    if value is None or published or "±" in text:
        return "" if text == "-" else text
    return f"{value:.6g}"


def table_csv(t: Table) -> str:
    """One line per row: the section, the table's cells (our numbers to 6 significant digits), where it comes from.

    The Source / Labels column of the HTML becomes the ``source``, ``origin`` and ``flags`` columns.
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    has_source = t.kind in ("paper", "other", "leaderboard", "runtime")
    cols = list(t.columns[:-1] if has_source else t.columns)
    w.writerow(["section", *cols, "source", "origin", "flags", "note"])
    for s in t.sections:
        for r in s.rows:
            cells = r.cells[:len(cols)]
            w.writerow([s.label, *(_csv_value(c.text, c.value, r.source == "published") if t.numeric[i] else c.text
                                   for i, c in enumerate(cells)),
                        r.source, r.origin, "; ".join(r.flags), r.note])
    return buf.getvalue()
