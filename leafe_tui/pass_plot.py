"""The Pass@k curve of one or more evaluations: drawn in the terminal, and written as an SVG file.

The SVG is plain text written here (no plotting library): axes, a line per evaluation, a legend, so
that a person can drop it into a report.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from rich.table import Table
from rich.text import Text

BARS = "▁▂▃▄▅▆▇█"
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
Curve = tuple[str, dict[int, float]]  # a label and mean pass@k by k


def curve_table(curves: list[Curve]) -> Table:
    """One row per evaluation: pass@k for k = 1 … n as a bar and a percentage."""
    ks = sorted({k for _, values in curves for k in values})
    table = Table(title="mean pass@k", title_justify="left")
    table.add_column("evaluation")
    table.add_column("curve")
    for k in ks:
        table.add_column(f"@{k}", justify="right")
    for label, values in curves:
        bars = "".join(
            BARS[min(len(BARS) - 1, int(values[k] * len(BARS)))] if k in values else " " for k in ks
        )
        cells = [f"{100 * values[k]:.0f}%" if k in values else "" for k in ks]
        table.add_row(label, Text(bars, style="cyan"), *cells)
    return table


def curve_svg(curves: list[Curve], title: str = "pass@k") -> str:
    """An SVG line chart of the curves (k on x, pass@k in % on y)."""
    width, height, left, right, top, bottom = 640, 400, 60, 170, 40, 50
    ks = sorted({k for _, values in curves for k in values}) or [1]
    k_max = max(ks)

    def x(k: int) -> float:
        return left + (width - left - right) * ((k - 1) / (k_max - 1) if k_max > 1 else 0.5)

    def y(value: float) -> float:
        return top + (height - top - bottom) * (1 - value)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{left}" y="24" font-size="15">{escape(title)}</text>',
    ]
    for tick in range(0, 101, 20):
        ty = y(tick / 100)
        parts.append(f'<line x1="{left}" y1="{ty:.1f}" x2="{width - right}" y2="{ty:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 8}" y="{ty + 4:.1f}" text-anchor="end">{tick}%</text>')
    for k in ks:
        parts.append(f'<text x="{x(k):.1f}" y="{height - bottom + 18}" text-anchor="middle">{k}</text>')
    parts.append(
        f'<text x="{(left + width - right) / 2:.1f}" y="{height - 12}" text-anchor="middle">k</text>'
    )
    parts.append(
        f'<line x1="{left}" y1="{y(0):.1f}" x2="{width - right}" y2="{y(0):.1f}" stroke="#333"/>'
        f'<line x1="{left}" y1="{y(1):.1f}" x2="{left}" y2="{y(0):.1f}" stroke="#333"/>'
    )
    for index, (label, values) in enumerate(curves):
        colour = COLOURS[index % len(COLOURS)]
        points = " ".join(f"{x(k):.1f},{y(values[k]):.1f}" for k in sorted(values))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>')
        for k in sorted(values):
            parts.append(f'<circle cx="{x(k):.1f}" cy="{y(values[k]):.1f}" r="3" fill="{colour}"/>')
        ly = top + 18 * index
        parts.append(
            f'<line x1="{width - right + 15}" y1="{ly}" x2="{width - right + 35}" y2="{ly}" '
            f'stroke="{colour}" stroke-width="2"/>'
            f'<text x="{width - right + 40}" y="{ly + 4}">{escape(label)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_svg(curves: list[Curve], path: Path, title: str = "pass@k") -> Path:
    path = path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(curve_svg(curves, title), encoding="utf-8")
    return path
