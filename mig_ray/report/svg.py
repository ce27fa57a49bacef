"""Hand-written inline SVG charts: no plotting dependency, no script, nothing fetched by the page."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

POOL = "#9aa5b1"
SELECTED = "#2563eb"
INK = "#1f2937"
GRID = "#e5e7eb"

Series = tuple[str, str, Sequence[float]]


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else [0.0]
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def fmt(v: float) -> str:
    """Short tick label."""
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6 or a < 1e-3:
        return f"{v:.2g}"
    if a >= 100 or float(v).is_integer():
        return f"{v:,.0f}"
    return f"{v:.3g}"


@dataclass
class Frame:
    """A chart area with linear axes; maps data to pixels and draws the axes, grid and labels."""

    xmin: float
    xmax: float
    ymin: float
    ymax: float
    width: int = 640
    height: int = 300
    left: int = 64
    right: int = 16
    top: int = 16
    bottom: int = 44

    def __post_init__(self) -> None:
        if self.xmax <= self.xmin:
            self.xmax = self.xmin + 1
        if self.ymax <= self.ymin:
            self.ymax = self.ymin + 1

    def x(self, v: float) -> float:
        return self.left + (v - self.xmin) / (self.xmax - self.xmin) * (self.width - self.left - self.right)

    def y(self, v: float) -> float:
        return self.height - self.bottom - (v - self.ymin) / (self.ymax - self.ymin) * (
            self.height - self.top - self.bottom)

    def axes(self, xlabel: str, ylabel: str, xticks: Sequence[float] | None = None,
             yticks: Sequence[float] | None = None, xtick_text: Sequence[str] | None = None,
             ytick_text: Sequence[str] | None = None) -> list[str]:
        xt = list(xticks) if xticks is not None else nice_ticks(self.xmin, self.xmax)
        yt = list(yticks) if yticks is not None else nice_ticks(self.ymin, self.ymax)
        x0, x1, y0, y1 = self.left, self.width - self.right, self.height - self.bottom, self.top
        out = []
        for v, t in zip(yt, ytick_text if ytick_text is not None else [fmt(v) for v in yt], strict=True):
            py = self.y(v)
            out.append(f'<line x1="{x0}" y1="{py:.1f}" x2="{x1}" y2="{py:.1f}" stroke="{GRID}"/>')
            out.append(f'<text x="{x0 - 6}" y="{py + 4:.1f}" text-anchor="end" class="tick">'
                       f'{escape(t)}</text>')
        labels = list(xtick_text) if xtick_text is not None else [fmt(v) for v in xt]
        for v, t in zip(xt, labels, strict=True):
            px = self.x(v)
            out.append(f'<line x1="{px:.1f}" y1="{y0}" x2="{px:.1f}" y2="{y0 + 4}" stroke="{INK}"/>')
            out.append(f'<text x="{px:.1f}" y="{y0 + 17}" text-anchor="middle" class="tick">'
                       f'{escape(t)}</text>')
        out.append(f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="{INK}"/>')
        out.append(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="{INK}"/>')
        out.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{self.height - 6}" text-anchor="middle" '
                   f'class="axis">{escape(xlabel)}</text>')
        out.append(f'<text transform="translate(14,{(y0 + y1) / 2:.1f}) rotate(-90)" text-anchor="middle" '
                   f'class="axis">{escape(ylabel)}</text>')
        return out

    def svg(self, ident: str, title: str, body: list[str]) -> str:
        return (f'<svg id="{ident}" class="plot" role="img" aria-label="{escape(title)}" '
                f'viewBox="0 0 {self.width} {self.height}" width="{self.width}" height="{self.height}">'
                f'<title>{escape(title)}</title>' + "".join(body) + "</svg>")


def legend(frame: Frame, items: Sequence[tuple[str, str]]) -> list[str]:
    """Colour keys in the top right corner."""
    out, x = [], frame.width - frame.right - 8
    for i, (name, colour) in enumerate(items):
        y = frame.top + 6 + 16 * i
        out.append(f'<rect x="{x - 10}" y="{y}" width="10" height="10" fill="{colour}"/>')
        out.append(f'<text x="{x - 14}" y="{y + 9}" text-anchor="end" class="tick">{escape(name)}</text>')
    return out


def line_chart(ident: str, title: str, xs: Sequence[float], ys: Sequence[float], xlabel: str,
               ylabel: str) -> str:
    """A polyline through (xs, ys), with a marker on each point when there are few."""
    f = Frame(min(xs, default=0), max(xs, default=1), min(0.0, min(ys, default=0)), max(ys, default=1) * 1.05)
    pts = " ".join(f"{f.x(a):.1f},{f.y(b):.1f}" for a, b in zip(xs, ys, strict=True))
    body = f.axes(xlabel, ylabel)
    body.append(f'<polyline class="series" points="{pts}" fill="none" stroke="{SELECTED}" stroke-width="2"/>')
    if len(xs) <= 60:
        body += [f'<circle cx="{f.x(a):.1f}" cy="{f.y(b):.1f}" r="2.5" fill="{SELECTED}"/>'
                 for a, b in zip(xs, ys, strict=True)]
    return f.svg(ident, title, body)


def histogram(ident: str, title: str, edges: Sequence[float], series: Sequence[Series],
              xlabel: str, ylabel: str) -> str:
    """Side-by-side bars per bin for each (name, colour, heights) series."""
    top = max((max(h, default=0) for _, _, h in series), default=1) or 1
    f = Frame(edges[0], edges[-1], 0, top * 1.08, top=30)
    body = f.axes(xlabel, ylabel)
    k = len(series)
    for j, (name, colour, heights) in enumerate(series):
        for i, h in enumerate(heights):
            x0, x1 = f.x(edges[i]), f.x(edges[i + 1])
            w = (x1 - x0) / k
            if h > 0:
                body.append(f'<rect class="bar" data-series="{escape(name)}" x="{x0 + j * w:.2f}" '
                            f'y="{f.y(h):.2f}" width="{max(w - 0.5, 0.5):.2f}" '
                            f'height="{f.y(0) - f.y(h):.2f}" '
                            f'fill="{colour}"><title>{escape(name)}: {h:.3g}</title></rect>')
    body += legend(Frame(0, 1, 0, 1, width=f.width, top=2), [(name, colour) for name, colour, _ in series])
    return f.svg(ident, title, body)


def paired_bars(ident: str, title: str, names: Sequence[str], series: Sequence[Series],
                xlabel: str) -> str:
    """Horizontal bars, one row per name, one bar per series (values as fractions, shown in %)."""
    row, k, left = 22, len(series), 200
    height = 40 + row * max(1, len(names)) + 28
    top = max((max(v, default=0) for _, _, v in series), default=1) or 1
    f = Frame(0, top * 100 * 1.1, 0, 1, width=640, height=height, left=left, top=30, bottom=36)
    xt = nice_ticks(0, f.xmax)
    y0, y1 = f.height - f.bottom, f.top
    body = []
    for v in xt:
        px = f.x(v)
        body.append(f'<line x1="{px:.1f}" y1="{y1}" x2="{px:.1f}" y2="{y0}" stroke="{GRID}"/>')
        body.append(f'<text x="{px:.1f}" y="{y0 + 15}" text-anchor="middle" class="tick">{fmt(v)}%</text>')
    body.append(f'<text x="{(left + f.width) / 2:.1f}" y="{f.height - 6}" text-anchor="middle" '
                f'class="axis">{escape(xlabel)}</text>')
    h = (row - 6) / k
    for i, name in enumerate(names):
        ry = y1 + 4 + i * row
        label = name if len(name) <= 30 else name[:29] + "…"
        body.append(f'<text x="{left - 6}" y="{ry + row / 2:.1f}" text-anchor="end" class="tick">'
                    f'<title>{escape(name)}</title>{escape(label)}</text>')
        for j, (sname, colour, values) in enumerate(series):
            v = 100 * values[i]
            body.append(f'<rect class="bar" data-series="{escape(sname)}" x="{left}" y="{ry + j * h:.1f}" '
                        f'width="{max(f.x(v) - left, 0):.1f}" height="{h - 1:.1f}" fill="{colour}">'
                        f'<title>{escape(name)} — {escape(sname)}: {v:.2f}%</title></rect>')
    body.append(f'<line x1="{left}" y1="{y0}" x2="{left}" y2="{y1}" stroke="{INK}"/>')
    body += legend(Frame(0, 1, 0, 1, width=f.width, top=4), [(s, c) for s, c, _ in series])
    return f.svg(ident, title, body)


def log_scatter(ident: str, title: str, xs: Sequence[int], ys: Sequence[int], names: Sequence[str],
                xlabel: str, ylabel: str, ratio: float) -> str:
    """Counts on log1p axes (so zero stays on the chart): one dot per label, and the dashed line
    y = ratio * x (what a uniform random subset of the same size would carry on average)."""
    lx = [math.log10(1 + v) for v in xs]
    ly = [math.log10(1 + v) for v in ys]
    hi = max(max(lx, default=1), max(ly, default=1), 1.0)
    f = Frame(0, hi * 1.02, 0, hi * 1.02, width=640, height=360)
    decades = [v for v in (0, 1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000)
               if math.log10(1 + v) <= f.xmax]
    ticks = [math.log10(1 + v) for v in decades]
    text = [fmt(v) for v in decades]
    body = f.axes(xlabel, ylabel, ticks, ticks, text, text)
    top = 10 ** f.xmax - 1
    ref = [(math.log10(1 + v), math.log10(1 + ratio * v)) for v in (top * i / 80 for i in range(81))]
    ref += [(math.log10(1 + v), math.log10(1 + ratio * v)) for v in (10 ** (i / 10) - 1 for i in range(40))
            if v < top]
    ref.sort()
    pts = " ".join(f"{f.x(a):.1f},{f.y(b):.1f}" for a, b in ref)
    body.append(f'<polyline class="reference" points="{pts}" fill="none" stroke="#6b7280" '
                f'stroke-dasharray="4 3"/>')
    for a, b, n, ca, cb in zip(lx, ly, names, xs, ys, strict=True):
        colour = SELECTED if cb else "#dc2626"
        body.append(f'<circle class="dot" cx="{f.x(a):.1f}" cy="{f.y(b):.1f}" r="2.6" fill="{colour}" '
                    f'fill-opacity="0.55"><title>{escape(n)}: pool {ca}, selected {cb}</title></circle>')
    return f.svg(ident, title, body)


METHOD_COLOURS = ("#2563eb", "#9aa5b1", "#d97706", "#059669", "#7c3aed", "#dc2626", "#0891b2", "#be185d")


Line = tuple[str, str, Sequence[float], Sequence[float]]


def multi_line_chart(ident: str, title: str, series: Sequence[Line], xlabel: str, ylabel: str) -> str:
    """One polyline per (name, colour, xs, ys) series on shared axes, with a legend."""
    xs_all = [v for _, _, xs, _ in series for v in xs]
    ys_all = [v for _, _, _, ys in series for v in ys]
    f = Frame(min(xs_all, default=0), max(xs_all, default=1), min(0.0, min(ys_all, default=0)),
              max(ys_all, default=1) * 1.05, top=24 + 16 * len(series))
    body = f.axes(xlabel, ylabel)
    for name, colour, xs, ys in series:
        pts = " ".join(f"{f.x(a):.1f},{f.y(b):.1f}" for a, b in zip(xs, ys, strict=True))
        body.append(f'<polyline class="series" data-series="{escape(name)}" points="{pts}" fill="none" '
                    f'stroke="{colour}" stroke-width="2"><title>{escape(name)}</title></polyline>')
    body += legend(Frame(0, 1, 0, 1, width=f.width, top=2), [(name, colour) for name, colour, _, _ in series])
    return f.svg(ident, title, body)


def mini_bar(value: float, top: float, colour: str = SELECTED, width: int = 90) -> str:
    """A small horizontal bar (value / top of `width` px) to sit in a table cell."""
    w = 0.0 if not top or not math.isfinite(value) else max(0.0, min(1.0, value / top)) * width
    return (f'<svg class="mini" width="{width}" height="10" viewBox="0 0 {width} 10">'
            f'<rect width="{width}" height="10" fill="{GRID}"/>'
            f'<rect class="minibar" width="{w:.1f}" height="10" fill="{colour}"/></svg>')
