"""Charts drawn on the server as SVG: no script, no library. Each has a title and a description for screen
readers (the page also shows the numbers as a table). Pure: no I/O here."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

_ids = itertools.count(1)
_BAR = "#6366f1"
_AXIS = "#cfd4dd"
_TEXT = "#5b6478"


@dataclass(frozen=True)
class Point:
    label: str
    value: float
    text: str  # the value as people read it ("€12.50", "4.2 %")


def _frame(title: str, description: str, width: int, height: int, body: str) -> Markup:
    n = next(_ids)
    # Every text in it went through escape(); the rest is numbers we computed.
    return Markup(  # noqa: S704
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-labelledby="chart-t{n} chart-d{n}"'
        f' xmlns="http://www.w3.org/2000/svg"><title id="chart-t{n}">{escape(title)}</title>'
        f'<desc id="chart-d{n}">{escape(description)}</desc>{body}</svg>'
    )


def describe(points: list[Point]) -> str:
    return "; ".join(f"{p.label}: {p.text}" for p in points) or "no data in this period"


def columns(title: str, points: list[Point], *, width: int = 640, height: int = 220) -> Markup:
    """Vertical bars, one per point (e.g. per week), labelled below, value above the tallest ones."""
    left, bottom, top = 12, 34, 22
    plot_h = height - bottom - top
    top_value = max((p.value for p in points), default=0) or 1
    slot = (width - 2 * left) / max(len(points), 1)
    parts = [f'<line x1="{left}" y1="{height - bottom}" x2="{width - left}" y2="{height - bottom}" stroke="{_AXIS}"/>']
    every = max(1, -(-len(points) // 7))  # at most 7 labels, so they never overlap
    for i, point in enumerate(points):
        h = plot_h * point.value / top_value
        x = left + i * slot + slot * 0.18
        y = height - bottom - h
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.64:.1f}" height="{max(h, 0.5):.1f}" rx="3"'
            f' fill="{_BAR}"><title>{escape(point.label)}: {escape(point.text)}</title></rect>'
        )
        if point.value and point.value >= top_value * 0.5:
            parts.append(
                f'<text x="{x + slot * 0.32:.1f}" y="{y - 6:.1f}" font-size="11" text-anchor="middle"'
                f' fill="{_TEXT}">{escape(point.text)}</text>'
            )
        if i % every == 0:
            parts.append(
                f'<text x="{x + slot * 0.32:.1f}" y="{height - bottom + 18}" font-size="11" text-anchor="middle"'
                f' fill="{_TEXT}">{escape(point.label)}</text>'
            )
    return _frame(title, describe(points), width, height, "".join(parts))


def bars(title: str, points: list[Point], *, width: int = 640) -> Markup:
    """Horizontal bars with their labels and values: for categories (reasons, products)."""
    row, label_w, value_w = 30, 190, 110
    height = max(len(points), 1) * row + 8
    top_value = max((p.value for p in points), default=0) or 1
    plot_w = width - label_w - value_w
    parts = []
    for i, point in enumerate(points):
        y = 4 + i * row
        w = plot_w * point.value / top_value
        parts.append(
            f'<text x="{label_w - 10}" y="{y + 19}" font-size="13" text-anchor="end" fill="#1a1f36">'
            f"{escape(point.label[:28])}</text>"
            f'<rect x="{label_w}" y="{y + 6}" width="{max(w, 1):.1f}" height="18" rx="3" fill="{_BAR}"/>'
            f'<text x="{label_w + w + 8:.1f}" y="{y + 19}" font-size="12" fill="{_TEXT}">{escape(point.text)}</text>'
        )
    if not points:
        parts.append(f'<text x="10" y="22" font-size="13" fill="{_TEXT}">No data in this period</text>')
    return _frame(title, describe(points), width, height, "".join(parts))
