#!/usr/bin/python3
"""The chart writer of the benchmarks in test/bench/ (python3-matplotlib from Debian).

    charts.py DIR        reads DIR/figures.tsv (and DIR/lat_*.txt), writes DIR/*.png

figures.tsv, tab-separated, one record a line (test/bench/lib.sh writes it):
    fig     GROUP  LABEL  RUN  VALUE  UNIT    a figure: one bar chart per GROUP, one bar per LABEL (in
                                            order of appearance): the median over RUNs, whiskers
                                            from the smallest to the largest round. GROUP
                                            "NAME/PANEL": the panels of one NAME.png; "_GROUP":
                                            not drawn (figures for the text only)
    title   GROUP  TEXT                     the chart's title (default: GROUP)
    target  NAME   MEASURED  GOAL  >=|<=    a target: all of them in targets.png, as the share of
                                            the goal reached (1 = met)
lat_SYSTEM_RATE_RUN.txt: one latency (ms) a line; latency_RATE.png draws their distributions
(one curve per SYSTEM, the rounds pooled) as CDFs on a logarithmic axis.
Charts are drawn only for what the file holds; an empty group draws nothing.
"""
import collections
import glob
import os
import re
import statistics
import sys
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402,F401

COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]


def highlight(label):
    return "pg_outbox" in label or label in ("outbox", "notify", "outbox_delay", "drain", "publish + drain")


def wrap(title):
    return "\n".join(textwrap.wrap(title, 90))


def read(path):
    figs = collections.OrderedDict()
    titles, units, targets = {}, {}, []
    for line in open(path, encoding="utf-8"):
        f = line.rstrip("\n").split("\t")
        if f[0] == "fig" and len(f) >= 5:
            try:
                v = float(f[4])
            except ValueError:
                continue
            if v != v or v < 0:  # nan, or bench_client's -1 (no sample)
                continue
            figs.setdefault(f[1], collections.OrderedDict()).setdefault(f[2], []).append(v)
            units[f[1]] = f[5] if len(f) > 5 else ""
        elif f[0] == "title" and len(f) >= 3:
            titles[f[1]] = f[2]
        elif f[0] == "target" and len(f) >= 5:
            targets.append((f[1], float(f[2]), float(f[3]), f[4]))
    return figs, titles, units, targets


def fmt(v):
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def axis_fmt(v, _pos=None):
    if abs(v) >= 1e6:
        return f"{v / 1e6:g}M"
    if abs(v) >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def bars(out, group, series, title, unit, ax=None):
    """One horizontal bar chart; into ax when given (a subplot), else its own PNG."""
    labels = list(series)
    meds = [statistics.median(series[k]) for k in labels]
    lo = [m - min(series[k]) for m, k in zip(meds, labels)]
    hi = [max(series[k]) - m for m, k in zip(meds, labels)]
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(8, 0.9 + 0.55 * len(labels)))
    y = range(len(labels))
    colors = [COLORS[3] if highlight(k) else COLORS[0] for k in labels]
    ax.barh(y, meds, xerr=[lo, hi], color=colors, capsize=3, error_kw={"elinewidth": 1})
    ax.set_yticks(list(y))
    ax.set_yticklabels(labels)
    ax.invert_yaxis()
    for i, m in enumerate(meds):
        ax.text(m + hi[i], i, "  " + fmt(m), va="center", fontsize=9)
    ax.set_xlim(0, max(m + h for m, h in zip(meds, hi)) * 1.3 or 1)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(6))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(axis_fmt))
    ax.set_xlabel(unit)
    runs = max(len(v) for v in series.values())
    ax.grid(axis="x", alpha=0.3)
    if not own:
        ax.set_title(title, fontsize=9)
        return None
    ax.set_title(wrap(title) + (f"\nmedian of {runs} rounds, whiskers min..max" if runs > 1 else ""), fontsize=10)
    fig.tight_layout()
    path = os.path.join(out, re.sub(r"[^A-Za-z0-9_.-]", "_", group) + ".png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def target_chart(out, targets):
    fig, ax = plt.subplots(figsize=(9, 0.9 + 0.5 * len(targets)))
    share = [(m / g if d == ">=" else (g / m if m > 0 else 10)) for _, m, g, d in targets]
    y = range(len(targets))
    ax.barh(y, share, color=[COLORS[2] if s >= 1 else COLORS[3] for s in share])
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks(list(y))
    ax.set_yticklabels([n if len(n) < 70 else n[:67] + "..." for n, _, _, _ in targets], fontsize=8)
    ax.invert_yaxis()
    for i, (_, m, g, d) in enumerate(targets):
        ax.text(share[i], i, f"  {m:.2f} (goal {d} {g:g})", va="center", fontsize=8)
    ax.set_xlim(0, max(max(share) * 1.35, 1.5))
    ax.set_xlabel("share of the goal reached (1 = met)")
    ax.set_title("Issue #15's targets, one run", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = os.path.join(out, "targets.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def latency_charts(out):
    by_rate = collections.defaultdict(lambda: collections.defaultdict(list))
    for p in sorted(glob.glob(os.path.join(out, "lat_*_*_*.txt"))):
        m = re.match(r"lat_(.+)_(\d+)_(\d+)\.txt$", os.path.basename(p))
        if not m:
            continue
        by_rate[int(m.group(2))][m.group(1)] += [float(x) for x in open(p) if x.strip()]
    names = {"notify": "raw NOTIFY (not durable)", "outbox": "pg_outbox", "python": "external Python worker"}
    paths = []
    for rate, systems in sorted(by_rate.items()):
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for i, (system, v) in enumerate(sorted(systems.items(), key=lambda kv: list(names).index(kv[0]) if kv[0] in names else 9)):
            if not v:
                continue
            v.sort()
            n = len(v)
            ys = [(k + 1) / n for k in range(n)]
            p50, p99 = v[int(0.5 * (n - 1))], v[int(0.99 * (n - 1))]
            ax.plot(v, ys, color=COLORS[i], label=f"{names.get(system, system)}: p50 {p50:.2f}, p99 {p99:.2f} ms")
        ax.set_xscale("log")
        ax.set_xlabel("ms from COMMIT sent until the listener has the event (log scale)")
        ax.set_ylabel("share of events")
        ax.axhline(0.5, color="grey", linewidth=0.5)
        ax.axhline(0.99, color="grey", linewidth=0.5)
        ax.set_title(f"End-to-end latency at {rate} events/s (one event per transaction)", fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(alpha=0.3, which="both")
        fig.tight_layout()
        path = os.path.join(out, f"latency_{rate}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def main():
    out = sys.argv[1]
    figs, titles, units, targets = read(os.path.join(out, "figures.tsv"))
    made, panels = [], collections.OrderedDict()
    for g, s in figs.items():
        if g.startswith("_") or not s:  # "_GROUP": in the text only
            continue
        if "/" in g:  # "NAME/PANEL": the panels of NAME.png
            panels.setdefault(g.split("/", 1)[0], []).append(g)
        else:
            made.append(bars(out, g, s, titles.get(g, g), units.get(g, "")))
    for name, groups in panels.items():
        rows = max(len(figs[g]) for g in groups)
        fig, axes = plt.subplots(len(groups), 1, figsize=(8, len(groups) * (0.8 + 0.45 * rows)), squeeze=False)
        for ax, g in zip(axes[:, 0], groups):
            bars(out, g, figs[g], titles.get(g, g.split("/", 1)[1]), units.get(g, ""), ax)
        runs = max(len(v) for g in groups for v in figs[g].values())
        fig.suptitle(wrap(titles.get(name, name) + (f"; whiskers min..max of {runs} rounds" if runs > 1 else "")), fontsize=10)
        fig.tight_layout()
        path = os.path.join(out, name + ".png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        made.append(path)
    if targets:
        made.append(target_chart(out, targets))
    made += latency_charts(out)
    print("charts: " + " ".join(os.path.basename(p) for p in made))


main()
