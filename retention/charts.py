"""Tiny server-rendered SVG charts (no JavaScript, no CDN).

Every label goes through `escape`: partner names, notes and driver texts end up in
titles and axis labels, and some of that text comes from people or an LLM.
"""

import math
from collections.abc import Callable, Sequence

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 560, 180
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 58, 12, 12, 28  # room for "$12,000" at 11 px
COLOURS = ["#2456d3", "#c62828", "#2e7d32", "#d98a00", "#6b7280"]


def nice_top(value: float) -> float:
    """The axis top at or above `value` whose four gridline steps are round numbers
    (41 -> 60: 0 15 30 45 60, not 0 10 20 31 41)."""
    if value <= 0:
        return 1.0
    raw = value / 4
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 7.5, 10) if m * power >= raw)
    return step * 4


def _fmt(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 10 or value == int(value) else f"{value:.2f}"


def _frame(body: list[str], title: str, width: int, height: int) -> SafeString:
    return mark_safe(
        # Drawn at its own pixel size (never scaled down, so 11 px text stays 11 px); a card
        # narrower than the chart scrolls it sideways instead of shrinking it (site.css).
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'preserveAspectRatio="xMidYMid meet" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>{''.join(body)}</svg>"
    )


def _axes(
    labels: Sequence[str],
    y_max: float,
    y_format: Callable[[float], str],
    width: int,
    height: int,
    x_of: Callable[[int], float],
) -> list[str]:
    plot_h = height - PAD_TOP - PAD_BOTTOM
    out = []
    for i in range(5):
        value = y_max * i / 4
        y = PAD_TOP + plot_h - plot_h * i / 4
        out.append(
            f'<line x1="{PAD_LEFT}" x2="{width - PAD_RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e6eb"/>'
            f'<text x="{PAD_LEFT - 4}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="#6b7280">'
            f"{escape(y_format(value))}</text>"
        )
    # At most ~8 x labels, so they never overlap.
    step = max(1, (len(labels) + 7) // 8)
    for i, label in enumerate(labels):
        if i % step == 0 or i == len(labels) - 1:
            out.append(
                f'<text x="{x_of(i):.1f}" y="{height - 8}" font-size="11" text-anchor="middle" '
                f'fill="#6b7280">{escape(label)}</text>'
            )
    return out


def line_chart(
    labels: Sequence[str],
    series: dict[str, Sequence[float | None]],
    *,
    title: str,
    y_max: float | None = None,
    y_format: Callable[[float], str] = _fmt,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> SafeString:
    """One or more lines over the same x labels; None values leave a gap."""
    if not labels:
        return _frame([_empty(width, height)], title, width, height)
    values = [v for vs in series.values() for v in vs if v is not None]
    top = y_max if y_max is not None else nice_top(max(values) if values else 1)
    plot_w = width - PAD_LEFT - PAD_RIGHT
    plot_h = height - PAD_TOP - PAD_BOTTOM

    def x_of(i: int) -> float:
        return PAD_LEFT + (plot_w * i / (len(labels) - 1) if len(labels) > 1 else plot_w / 2)

    def y_of(v: float) -> float:
        return PAD_TOP + plot_h - plot_h * min(v, top) / top

    body = _axes(labels, top, y_format, width, height, x_of)
    for n, (name, vs) in enumerate(series.items()):
        colour = COLOURS[n % len(COLOURS)]
        points = [(x_of(i), y_of(v), v, labels[i]) for i, v in enumerate(vs) if v is not None]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in points)
            body.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        for x, y, v, label in points:
            body.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}">'
                f"<title>{escape(name)} {escape(label)}: {escape(y_format(v))}</title></circle>"
            )
    body.append(_legend(list(series), width))
    return _frame(body, title, width, height)


def bar_chart(
    labels: Sequence[str],
    series: dict[str, Sequence[float]],
    *,
    title: str,
    stacked: bool = True,
    y_format: Callable[[float], str] = _fmt,
    colours: Sequence[str] = COLOURS,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> SafeString:
    """Bars per label; several series stack (or sit side by side with stacked=False)."""
    if not labels:
        return _frame([_empty(width, height)], title, width, height)
    names = list(series)
    if stacked:
        totals = [sum(series[s][i] for s in names) for i in range(len(labels))]
    else:
        totals = [max(series[s][i] for s in names) for i in range(len(labels))]
    top = nice_top(max(totals))
    plot_w = width - PAD_LEFT - PAD_RIGHT
    plot_h = height - PAD_TOP - PAD_BOTTOM
    slot = plot_w / len(labels)
    bar_w = max(2.0, slot * 0.7)

    def x_of(i: int) -> float:
        return PAD_LEFT + slot * i + slot / 2

    body = _axes(labels, top, y_format, width, height, x_of)
    for i, label in enumerate(labels):
        base = 0.0
        for n, name in enumerate(names):
            value = series[name][i]
            if not value:
                continue
            h = plot_h * value / top
            if stacked:
                x, w = x_of(i) - bar_w / 2, bar_w
                y = PAD_TOP + plot_h - plot_h * base / top - h
                base += value
            else:
                w = bar_w / len(names)
                x = x_of(i) - bar_w / 2 + w * n
                y = PAD_TOP + plot_h - h
            body.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
                f'fill="{colours[n % len(colours)]}"><title>{escape(name)} {escape(label)}: '
                f"{escape(y_format(value))}</title></rect>"
            )
    if len(names) > 1:
        body.append(_legend(names, width, colours))
    return _frame(body, title, width, height)


def _legend(names: list[str], width: int, colours: Sequence[str] = COLOURS) -> str:
    out, x = [], PAD_LEFT
    for n, name in enumerate(names):
        out.append(
            f'<rect x="{x}" y="2" width="8" height="8" fill="{colours[n % len(colours)]}"/>'
            f'<text x="{x + 11}" y="10" font-size="11" fill="#374151">{escape(name)}</text>'
        )
        x += 16 + 6 * len(name)
    return "".join(out)


def _empty(width: int, height: int) -> str:
    return (
        f'<text x="{width / 2}" y="{height / 2}" font-size="12" text-anchor="middle" '
        f'fill="#6b7280">No data yet</text>'
    )
