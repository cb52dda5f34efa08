"""A timeline as text (the weight table) and as a picture (health and weights per name).

The table lists the rounds where something changed (a probe outcome, a verdict, a weight)
plus the first and the last. Health: `up`/`DOWN` is the hysteresis verdict, `*` marks a
round whose probe failed (a verdict the thresholds have not yet turned). Weights are each
name's default answer, of 100, cloud by cloud in the `clouds` order; `!` marks fail-open.
With two timelines (now, proposed) each cell shows both, `now -> proposed`, where they differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edgefabric.simulate.engine import Row, Timeline
from edgefabric.simulate.scenario import show_clock

# One colour per cloud, the same in every picture.
COLOURS = {"aws": "#ff9900", "azure": "#0078d4", "gcp": "#34a853"}
# The picture's size: width per timeline, height per panel (health + one per name), in inches at DPI.
DPI = 100
WIDTH_IN = 8.0
PANEL_IN = 2.0


def _health(row: Row, cloud: str) -> str:
    return ("up" if row.health[cloud] else "DOWN") + ("" if row.probes[cloud] else "*")


def _weights(row: Row, record: str, clouds: Sequence[str]) -> str:
    return "/".join(str(row.weights[record][c]) for c in clouds) + ("!" if row.fail_open[record] else "")


def _key(row: Row) -> tuple[object, ...]:
    return (row.probes, row.health, row.weights, row.fail_open)


def table(timelines: Sequence[Timeline]) -> str:
    """The weight table of one timeline, or of several side by side (same scenario)."""
    first = timelines[0]
    clouds, records = first.clouds, first.records
    head = ["time", *clouds, *(f"{r} ({first.strategies[r]}: {'/'.join(clouds)})" for r in records)]
    lines: list[list[str]] = [head]
    last: list[tuple[object, ...]] | None = None
    for i, row in enumerate(first.rows):
        rows = [t.rows[i] for t in timelines]
        keys = [_key(r) for r in rows]
        if keys == last and i != len(first.rows) - 1:
            continue
        last = keys

        def cell(text: list[str]) -> str:
            return text[0] if len(set(text)) == 1 else " -> ".join(text)

        lines.append([show_clock(row.t),
                      *(cell([_health(r, c) for r in rows]) for c in clouds),
                      *(cell([_weights(r, rec, clouds) for r in rows]) for rec in records)])  # fmt: skip
    widths = [max(len(line[k]) for line in lines) for k in range(len(head))]
    out = ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines]
    legend = "health: verdict, * = the probe failed this round; weights of 100, ! = fail-open"
    if len(timelines) > 1:
        legend += "; " + " -> ".join(t.label or f"#{n}" for n, t in enumerate(timelines))
    return "\n".join([*out, legend])


def picture_size(timelines: Sequence[Timeline]) -> tuple[int, int]:
    """The PNG's size in pixels: a column per timeline, a panel for health and one per name."""
    panels = 1 + len(timelines[0].records)
    return round(WIDTH_IN * len(timelines) * DPI), round(PANEL_IN * panels * DPI)


def picture(timelines: Sequence[Timeline], path: Path | str, title: str = "") -> Path:
    """Health (top) and each name's weights (stacked, of 100) over time, a column per timeline."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never a display
    from matplotlib import pyplot as plt

    first = timelines[0]
    clouds, records = first.clouds, first.records
    width, height = picture_size(timelines)
    fig, axes = plt.subplots(1 + len(records), len(timelines), figsize=(width / DPI, height / DPI), dpi=DPI,
                             sharex=True, squeeze=False)
    for col, tl in enumerate(timelines):
        minutes = [(r.t - tl.rows[0].t) / 60 for r in tl.rows]
        ax = axes[0][col]
        for k, cloud in enumerate(clouds):
            base = len(clouds) - 1 - k
            ax.step(minutes, [base + (0.8 if r.health[cloud] else 0.1) for r in tl.rows], where="post",
                    color=COLOURS.get(cloud, "grey"), label=cloud)
            failed = [m for m, r in zip(minutes, tl.rows, strict=True) if not r.probes[cloud]]
            ax.plot(failed, [base + 0.45] * len(failed), "x", color=COLOURS.get(cloud, "grey"), markersize=3)
        ax.set_yticks([len(clouds) - 1 - k + 0.45 for k in range(len(clouds))], list(clouds))
        ax.set_title(f"{tl.label + ': ' if tl.label else ''}health (line: verdict, x: failed probe)", fontsize=9)
        for n, record in enumerate(records, start=1):
            ax = axes[n][col]
            ax.stackplot(minutes, *[[r.weights[record][c] for r in tl.rows] for c in clouds],
                         colors=[COLOURS.get(c, "grey") for c in clouds], labels=list(clouds), step="post")
            opened = [m for m, r in zip(minutes, tl.rows, strict=True) if r.fail_open[record]]
            if opened:
                ax.plot(opened, [102] * len(opened), "v", color="red", markersize=3, label="fail-open")
            ax.set_ylim(0, 105)
            ax.set_ylabel("weight", fontsize=8)
            ax.set_title(f"{record} ({tl.strategies[record]})", fontsize=9)
        axes[-1][col].set_xlabel(f"minutes after {show_clock(tl.rows[0].t)}", fontsize=8)
    axes[0][-1].legend(loc="upper right", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)  # no bbox_inches="tight": the size stays picture_size
    plt.close(fig)
    return out
