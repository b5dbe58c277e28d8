"""Charts for the docs' performance page, drawn from the benches' own JSON (bench/last-run*.json).

The benches call ``write_all()`` after writing their figures, and ``python bench/charts.py`` redraws them from the
committed JSON; tests/release checks that the committed SVGs are what this module draws from that JSON, so a chart
cannot drift from its numbers. Plain SVG, standard library only, deterministic output (no timestamps, no random ids).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

HERE = Path(__file__).resolve().parent
IMG = HERE.parent / "docs" / "img"
FONT = "font-family='system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif'"
COLOURS = ("#3f6fd8", "#d8863f", "#8a8a8a")


def _fmt(value: float) -> str:
    if value == int(value) and value < 10**6:
        return "%d" % value
    if value >= 100:
        return "%.0f" % value
    if value >= 10:
        return "%.1f" % value
    return "%.2f" % value


def bar_panels(title: str, series: list[str], panels: list[tuple[str, str, list[float]]], note: str) -> str:
    """Horizontal bars: one panel per measure, one bar per series, each panel scaled to its own maximum."""
    width, label_w, bar_h, gap = 780, 200, 18, 6
    panel_h = len(series) * (bar_h + gap) + 34
    height = 70 + len(panels) * panel_h + 30
    out = [
        "<svg xmlns='http://www.w3.org/2000/svg' width='%d' height='%d' viewBox='0 0 %d %d' %s font-size='13'>"
        % (width, height, width, height, FONT),
        "<rect width='100%' height='100%' fill='white'/>",
        "<text x='16' y='28' font-size='17' font-weight='600'>%s</text>" % escape(title),
    ]
    for i, name in enumerate(series):  # legend
        x = 16 + i * 240
        out.append("<rect x='%d' y='42' width='12' height='12' fill='%s'/>" % (x, COLOURS[i % len(COLOURS)]))
        out.append("<text x='%d' y='53'>%s</text>" % (x + 18, escape(name)))
    y = 76
    for measure, unit, values in panels:
        out.append("<text x='16' y='%d' font-weight='600'>%s</text>" % (y + 12, escape(measure)))
        top = max(values) or 1.0
        span = width - label_w - 90
        for i, value in enumerate(values):
            by = y + 22 + i * (bar_h + gap)
            w = max(1.0, span * value / top)
            out.append(
                "<rect x='%d' y='%d' width='%.1f' height='%d' fill='%s'/>"
                % (label_w, by, w, bar_h, COLOURS[i % len(COLOURS)])
            )
            out.append("<text x='%d' y='%d' text-anchor='end'>%s</text>" % (label_w - 8, by + 14, escape(series[i])))
            out.append("<text x='%.1f' y='%d'>%s %s</text>" % (label_w + w + 6, by + 14, _fmt(value), escape(unit)))
        y += panel_h
    out.append("<text x='16' y='%d' fill='#555' font-size='12'>%s</text>" % (height - 12, escape(note)))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def triggerer_scale(fig: dict[str, Any]) -> str:
    ways = [
        ("", "shared watcher (this provider)"),
        ("_per_trigger", "one watch per trigger"),
        ("_sshremotejob", "SSHRemoteJob-style"),
    ]
    series = [name for _, name in ways]
    panels = [
        ("SSH connections at once (most)", "", [float(fig["triggerer_ssh_connections_max" + s]) for s, _ in ways]),
        (
            "memory of the watching processes on the host (most)",
            "MB",
            [fig["host_watch_rss_mb_max" + s] for s, _ in ways],
        ),
        ("job's end to the trigger's event, p95", "s", [fig["end_notice_p95_s" + s] for s, _ in ways]),
    ]
    note = (
        "%d deferred jobs on one host, one triggerer "
        "(bench/triggerer_scale.py; figures in bench/last-run-triggerer-scale.json)" % fig["triggerer_jobs"]
    )
    return bar_panels("Watching many deferred jobs on one host", series, panels, note)


def cli_cost(fig: dict[str, Any]) -> str:
    sizes = [("empty", "empty history"), ("100k", "100,000 jobs"), ("1m", "1,000,000 jobs")]
    sizes = [(k, name) for k, name in sizes if ("status_ratio_" + k) in fig]
    series = [name for _, name in sizes]
    panels = [
        ("status --run-key, times a bare interpreter's start-up", "x", [fig["status_ratio_" + k] for k, _ in sizes]),
        (
            "status --running, times a bare interpreter's start-up",
            "x",
            [fig["status_running_ratio_" + k] for k, _ in sizes],
        ),
    ]
    note = "bare start-up %.1f ms; Python %s (bench/run.py; figures in bench/last-run.json)" % (
        fig["baseline_startup_ms"],
        fig["python"],
    )
    return bar_panels("The CLI's cost does not grow with history", series, panels, note)


CHARTS = {
    "triggerer-scale.svg": ("last-run-triggerer-scale.json", triggerer_scale),
    "cli-cost.svg": ("last-run.json", cli_cost),
}


def render(name: str) -> str:
    source, draw = CHARTS[name]
    return draw(json.loads((HERE / source).read_text()))


def redraw_for(json_path: str) -> list[Path]:
    """Redraw the charts drawn from `json_path` (a bench that wrote one of the committed figure files)."""
    target = Path(json_path).resolve()
    return [write(name) for name, (source, _) in CHARTS.items() if (HERE / source).resolve() == target]


def write(name: str) -> Path:
    IMG.mkdir(parents=True, exist_ok=True)
    path = IMG / name
    path.write_text(render(name))
    return path


def write_all() -> list[Path]:
    return [write(name) for name in CHARTS]


if __name__ == "__main__":
    for p in write_all():
        print(p, file=sys.stderr)
