"""The plots: learning curves of the core datasets (results/curves.png; Pendulum: curves-pendulum.png) and
performance profiles (results/profiles.png).  At most MAX_LINES lines a panel (variants split over rows by
family), one fixed color per variant in every plot (the peer's d3rlpy_<algo> dashed in the color of <algo>, a
longer-budget variant <algo>_<N>k dotted in it), legends outside the axes, fixed axes."""

from __future__ import annotations

import math
import re
import textwrap
import zlib
from pathlib import Path

import numpy as np

from .runs import CORE, RunRecord, dataset_key, kind, variant_key
from .stats import MIN_SEEDS, bootstrap_arrays, cell

MAX_LINES = 8
Y_RANGE = (-10.0, 125.0)  # normalized score, every curve panel
# One color per method (tab10 and tab20's light shades): the same in every plot and every run of make_results.
COLORS = {"bc": "#7f7f7f", "bc_10": "#bcbd22", "bc_filtered": "#c7c7c7", "awr": "#8c564b", "bcq": "#17becf",
          "td3_bc": "#1f77b4", "td3_nobc": "#d62728", "cql": "#2ca02c", "cql_mean_target": "#98df8a",
          "iql": "#ff7f0e", "dt": "#9467bd", "dt_init1": "#c5b0d5", "mopo": "#e377c2", "mopo_nopen": "#f7b6d2",
          "combo": "#393b79", "awac": "#ffbb78"}
FALLBACK = ["#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363"]
# Rows of the curve figure: families of variants (the peer's and longer budgets go with their method).
FAMILIES = [("BC, %BC and AWR", ["bc", "bc_10", "bc_filtered", "awr"]),
            ("TD3+BC, IQL and AWAC", ["td3_bc", "td3_nobc", "iql", "awac"]),
            ("BCQ and CQL", ["bcq", "cql", "cql_mean_target"]),
            ("DT and the model-based methods", ["dt", "dt_init1", "mopo", "mopo_nopen", "combo"])]
LONGER = re.compile(r"_(\d+)k$")
# A panel with a longer-budget variant whose curves end LOG_X_SPAN or more times apart (a 500k run beside 50k
# ones) gets a logarithmic x axis, so that the shorter curves keep their width; its ticks are these.
LOG_X_SPAN = 5
LOG_X_TICKS = [1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000]


def method_of(variant: str) -> str:
    """'d3rlpy_iql' -> 'iql', 'td3_bc_500k' -> 'td3_bc': the variant whose color it takes."""
    return LONGER.sub("", variant.removeprefix("d3rlpy_"))


def color_of(variant: str) -> str:
    method = method_of(variant)
    return COLORS.get(method) or FALLBACK[zlib.crc32(method.encode()) % len(FALLBACK)]


def style_of(variant: str) -> str:
    return "--" if variant.startswith("d3rlpy_") else ":" if LONGER.search(variant) else "-"


def label_of(variant: str) -> str:
    return f"{variant} (peer)" if variant.startswith("d3rlpy_") else variant


def panel_rows(variants: list[str]) -> list[tuple[str, list[str]]]:
    """(title, variants) per row: each family's variants (ours, then the peer's), at most MAX_LINES a row."""
    rows, placed = [], set()
    for title, members in [*FAMILIES, ("other variants", None)]:
        mine = [v for v in variants if v not in placed and (members is None or method_of(v) in members)]
        placed |= set(mine)
        mine.sort(key=lambda v: (v.startswith("d3rlpy_"), variant_key(method_of(v)), variant_key(v)))
        chunks = [mine[i:i + MAX_LINES] for i in range(0, len(mine), MAX_LINES)]
        rows += [(title if len(chunks) == 1 else f"{title} ({i}/{len(chunks)})", chunk)
                 for i, chunk in enumerate(chunks, 1)]
    return rows


def curve_datasets(runs: list[RunRecord], headline: bool) -> list[str]:
    """The datasets of the curve figure: the core datasets for MuJoCo; for another suite every dataset but the
    sanity runs' (expert, random: results/sanity.md)."""
    ran = {r.dataset for r in runs if r.evaluations}
    if headline:
        return [d for d in CORE if d in ran]
    return sorted((d for d in ran if kind(d) not in ("expert", "random")), key=dataset_key)


def plot_curves(runs: list[RunRecord], path: Path, caption: str, datasets: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mine = [r for r in runs if r.evaluations and r.dataset in datasets]
    rows = panel_rows(sorted({r.variant for r in mine}, key=variant_key))
    cols = max(1, len(datasets))
    fig, axes = plt.subplots(max(1, len(rows)), cols, figsize=(4.6 * cols + 2.4, 3.0 * max(1, len(rows))),
                             squeeze=False)
    clipped, logarithmic, styles = [], [], set()
    for row, (title, variants) in enumerate(rows):
        row_finals = []  # (axes, [(first step, last step, longer budget)]) of every panel in the row
        for col, dataset in enumerate(datasets):
            ax = axes[row][col]
            drawn, finals = 0, []
            for variant in variants:
                by_step: dict[int, list[float]] = {}
                for run in mine:
                    if run.variant == variant and run.dataset == dataset:
                        for step, score in zip(run.steps, run.scores):
                            by_step.setdefault(step, []).append(score)
                if not by_step:
                    ax.plot([], [], style_of(variant), color=color_of(variant), label=label_of(variant))
                    continue
                steps = sorted(by_step)
                mean = np.array([np.mean(by_step[s]) for s in steps])
                std = np.array([np.std(by_step[s]) for s in steps])
                if (mean < Y_RANGE[0]).any() or (mean > Y_RANGE[1]).any():
                    clipped.append(f"{variant} on {dataset}")
                ax.plot(steps, mean, style_of(variant), color=color_of(variant), label=label_of(variant), lw=1.6)
                styles.add(style_of(variant))
                drawn += 1
                finals.append((steps[0], steps[-1], bool(LONGER.search(variant))))
                ax.fill_between(steps, np.clip(mean - std, *Y_RANGE), np.clip(mean + std, *Y_RANGE),
                                color=color_of(variant), alpha=0.15, lw=0)
            ax.set_ylim(*Y_RANGE)
            ax.grid(alpha=0.3)
            if not drawn:
                ax.text(0.5, 0.5, "no run of these variants", ha="center", va="center", transform=ax.transAxes,
                        fontsize=9, color="0.4")
                ax.set_xticks([])
            row_finals.append((ax, finals))
            if row == 0:
                ax.set_title(dataset, fontsize=10)
            if row == len(rows) - 1:
                ax.set_xlabel("updates")
            if col == 0:
                ax.set_ylabel(f"{title}\nnormalized score", fontsize=9)
        # One x scale a row: logarithmic in every panel of the row when one of its panels draws a longer budget
        # whose curves end LOG_X_SPAN or more times apart, so that the shorter curves keep their width.
        every = [f for _, finals in row_finals for f in finals]
        ends = [end for _, end, _ in every]
        if any(longer for *_, longer in every) and max(ends) >= LOG_X_SPAN * min(ends):
            logarithmic.append(title)
        for ax, finals in row_finals:
            if title in logarithmic and finals:
                first, last = min(start for start, *_ in finals), max(end for _, end, _ in finals)
                ax.set_xscale("log")
                ax.set_xticks([t for t in LOG_X_TICKS if first <= t <= last] or [first, last])
                ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(
                lambda x, _: f"{x / 1000:g}k" if x else "0"))
        handles, labels = axes[row][0].get_legend_handles_labels()
        axes[row][-1].legend(handles, labels, loc="center left", bbox_to_anchor=(1.03, 0.5), fontsize=8,
                             frameon=False)
    note = ("Lines: mean over seeds; bands: ± std over seeds (seeds and budget of every cell: results/scores.md)"
            + line_styles(styles) + ". "
            + (f"X axis logarithmic in every panel of the rows where a longer budget is drawn "
               f"({', '.join(logarithmic)}), linear in the others. " if logarithmic else "")
            + f"Y axis fixed at {Y_RANGE[0]:g} to {Y_RANGE[1]:g}"
            + (f"; out of range, clipped: {', '.join(clipped)}." if clipped else "."))
    finish_figure(fig, caption + "\n" + note, 4.6 * cols + 2.4, 3.0 * max(1, len(rows)), path)


def line_styles(drawn: set[str]) -> str:
    """The footnote's key to the line styles, only those drawn ('' when every line is solid)."""
    key = [text for style, text in (("-", "solid: ours"), ("--", "dashed: the peer d3rlpy"),
                                    (":", "dotted: a longer-budget variant")) if style in drawn]
    return "; " + ", ".join(key) if drawn - {"-"} else ""


def finish_figure(fig, caption: str, width: float, height: float, path: Path) -> None:
    """How the runs were made, as a caption under the plots (about 13 characters an inch at 8 points)."""
    import matplotlib.pyplot as plt

    caption = "\n".join(textwrap.fill(line, int(12.5 * width)) for line in caption.splitlines())
    bottom = 0.15 + 0.14 * (caption.count("\n") + 1)
    fig.set_size_inches(width, height + bottom)
    fig.text(0.01, 0.01, caption, fontsize=8, ha="left", va="bottom")
    fig.tight_layout(rect=(0, bottom / (height + bottom), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def profile_panels(table, variants: list[str]) -> list[tuple[str, list[str]]]:
    """Ours at the largest budget, ours at smaller budgets, the peer: at most MAX_LINES lines a panel."""
    complete = [v for v in variants if all(cell(table, v, d) for d in CORE)]
    top = lambda v: max(b for d in CORE for b in cell(table, v, d).budgets)  # noqa: E731
    ours = [v for v in complete if not v.startswith("d3rlpy_")]
    peer = [v for v in complete if v.startswith("d3rlpy_")]
    largest = max(map(top, ours), default=0)
    panels = [(f"ours, {largest // 1000}k updates", [v for v in ours if top(v) == largest]),
              ("ours, smaller budgets (updates in the legend)", [v for v in ours if top(v) != largest]),
              ("peer (d3rlpy), updates in the legend", peer)]
    out = []
    for title, members in panels:
        chunks = [members[i:i + MAX_LINES] for i in range(0, len(members), MAX_LINES)]
        out += [(title if len(chunks) == 1 else f"{title} ({i}/{len(chunks)})", c) for i, c in enumerate(chunks, 1)]
    return out


def plot_profiles(table, variants: list[str], path: Path, caption: str) -> list[str]:
    """Performance profiles on the core datasets: the fraction of (dataset, seed) runs whose score
    exceeds tau, with stratified bootstrap 95% bands (given 2 seeds on each), for the variants with runs on all
    of them; ours and the peer in separate panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(t, m) for t, m in profile_panels(table, variants) if m]
    complete = [v for _, members in panels for v in members]
    high = max([110.0, *[max(cell(table, v, d).values) for v in complete for d in CORE]])
    taus = np.linspace(0.0, high, int(2 * high) + 1)
    n = max(1, len(panels))
    fig, axes = plt.subplots(1, n, figsize=(5.0 * n, 4.2), squeeze=False, sharey=True)
    for ax, (title, members) in zip(axes[0], panels):
        for variant in members:
            samples = [cell(table, variant, d).values for d in CORE]
            budgets = sorted({b for d in CORE for b in cell(table, variant, d).budgets})
            fractions, low, up = bootstrap_arrays(
                samples, lambda *xs: (np.concatenate(xs)[:, None] > taus[None, :]).mean(0))
            banded = min(len(s) for s in samples) >= MIN_SEEDS  # one seed on a dataset: no band, as no IQM CI
            budget = "" if title.startswith("ours, ") and "smaller" not in title else \
                f", {'/'.join(f'{b // 1000}k' for b in budgets)}"
            label = f"{variant}{budget}{'' if banded else ', no band: 1 seed'}"
            ax.plot(taus, fractions, style_of(variant), color=color_of(variant), label=label, lw=1.6)
            if banded:
                ax.fill_between(taus, low, up, color=color_of(variant), alpha=0.12, lw=0)
        ax.set_xlim(0, high)
        ax.set_ylim(0, 1.02)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(r"normalized score $\tau$")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8, frameon=False)
    axes[0][0].set_ylabel(r"fraction of runs with score $> \tau$")
    if not panels:
        axes[0][0].text(0.5, 0.5, "no variant has runs on all core datasets yet", ha="center",
                        transform=axes[0][0].transAxes)
    legend_rows = math.ceil(max((len(m) for _, m in panels), default=1) / 2)
    note = (f"Performance profiles over the core datasets ({', '.join(CORE)}): every (dataset, seed) score (the "
            "mean of the run's last 3 evaluations); "
            "bands: stratified bootstrap 95% CI.")
    finish_figure(fig, note + "\n" + caption, 5.0 * n, 4.2 + 0.2 * legend_rows, path)
    return complete
