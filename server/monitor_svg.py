"""Server-side SVG plots for the monitor: bars and lines, no external service.

A plot is a string of SVG built here from numbers and labels; every label goes
through ``html.escape`` (a site or task name is user input), numbers are
formatted by us, so the markup the page embeds holds nothing a user wrote
unescaped. Readable at a glance: one title, a y axis with 0 and the maximum,
x labels every few bins, a legend.
"""

from __future__ import annotations

from html import escape

WIDTH, HEIGHT = 560, 200
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 26, 34
COLORS = ("#2e7d32", "#c62828", "#1565c0", "#ef6c00", "#6a1b9a")


def _fmt(v: float) -> str:
    if v >= 10000:
        return f"{v / 1000:.0f}k"
    if v >= 100 or v == int(v):
        return f"{v:.0f}"
    return f"{v:.2f}"


def chart(title: str, labels: list[str], series: dict[str, list[float | None]], *,
          kind: str = "bar", unit: str = "") -> str:
    """An SVG chart of ``series`` (name -> one value per label; None: no data)."""
    if kind not in ("bar", "line"):
        raise ValueError("kind is bar or line")
    n = max(len(labels), 1)
    values = [v for vs in series.values() for v in vs if v is not None]
    top = max(values, default=0.0) or 1.0
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = pw / n

    def y(v: float) -> float:
        return TOP + ph - (v / top) * ph

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" role="img" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}">',
             f'<title>{escape(title)}</title>',
             f'<text x="{LEFT}" y="16" class="plot-title">{escape(title)}</text>',
             f'<line x1="{LEFT}" y1="{TOP + ph}" x2="{LEFT + pw}" y2="{TOP + ph}" '
             'stroke="#888"/>',
             f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + ph}" stroke="#888"/>',
             f'<text x="{LEFT - 4}" y="{TOP + ph}" text-anchor="end" class="tick">0</text>',
             f'<text x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end" class="tick">'
             f'{escape(_fmt(top) + unit)}</text>']
    every = max(1, n // 6)
    for i, label in enumerate(labels):
        if i % every == 0:
            parts.append(f'<text x="{LEFT + slot * i + slot / 2:.1f}" y="{HEIGHT - 18}" '
                         f'text-anchor="middle" class="tick">{escape(label)}</text>')
    names = list(series)
    for k, name in enumerate(names):
        color = COLORS[k % len(COLORS)]
        vals = series[name]
        if kind == "bar":
            bw = slot * 0.8 / max(len(names), 1)
            for i, v in enumerate(vals):
                if v:
                    x = LEFT + slot * i + slot * 0.1 + bw * k
                    parts.append(f'<rect x="{x:.1f}" y="{y(v):.1f}" width="{bw:.1f}" '
                                 f'height="{TOP + ph - y(v):.1f}" fill="{color}">'
                                 f'<title>{escape(f"{name} {labels[i]}: {_fmt(v)}{unit}")}'
                                 '</title></rect>')
        else:
            points = [f"{LEFT + slot * i + slot / 2:.1f},{y(v):.1f}"
                      for i, v in enumerate(vals) if v is not None]
            if points:
                parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" '
                             f'points="{" ".join(points)}"/>')
                for p in points:
                    px, py = p.split(",")
                    parts.append(f'<circle cx="{px}" cy="{py}" r="2.5" fill="{color}"/>')
        lx = LEFT + 8 + k * 120
        parts.append(f'<rect x="{lx}" y="{HEIGHT - 11}" width="10" height="8" fill="{color}"/>'
                     f'<text x="{lx + 14}" y="{HEIGHT - 3}" class="tick">{escape(name)}</text>')
    if not values:
        parts.append(f'<text x="{LEFT + pw / 2}" y="{TOP + ph / 2}" text-anchor="middle" '
                     'class="tick">no jobs ended in this window</text>')
    parts.append("</svg>")
    return "".join(parts)


def stats_plots(stats: dict[str, object]) -> list[str]:
    """The four plots of a ``monitor_stats.job_stats`` result."""
    bins = stats["bins"]
    assert isinstance(bins, list)
    hours = stats["bin_hours"]
    labels = [b["start"][5:13].replace("T", " ") + "h" for b in bins]
    return [
        chart(f"jobs ended per {hours} h", labels,
              {"finished": [b["finished"] for b in bins], "failed": [b["failed"] for b in bins]}),
        chart("mean wait (activated to running)", labels,
              {"wait": [b["mean_wait_s"] for b in bins]}, kind="line", unit=" s"),
        chart("mean run time", labels, {"run": [b["mean_run_s"] for b in bins]}, kind="line",
              unit=" s"),
        chart("CPU efficiency", labels, {"cpu/wall": [b["cpu_eff"] for b in bins]},
              kind="line"),
    ]
