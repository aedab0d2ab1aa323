"""Reruns: a benchmark run made again on newer code (results/rerun/<variant>/<dataset>/seed<S>/, written by
python -m tools.sweep --commit-dir results/rerun with the same settings), beside the committed run of the same
variant, dataset and seed: does the newer code learn as the older did?  rerun.md and rerun.png."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .headers import display
from .reproduce import reproduce_sweeps
from .runs import SCORE, RunRecord, load_runs, steps_text
from .stats import mean_std
from .tables import markdown_table

RERUN_DIR = "rerun"  # beside the committed runs: results/rerun
NOISE = 2.0  # a rerun agrees when its score is within NOISE standard deviations of the older seeds' mean


def commit_of(run: RunRecord) -> str:
    commit = run.record.get("commit") or (run.commit if run.commit != "unknown" else "")
    commit = commit or (run.record.get("migrated") or {}).get("code_and_configs_at")
    return commit[:7] if commit else "not recorded"


def agreement(new: RunRecord, old: list[RunRecord]) -> list[str]:
    """One table row: the rerun's score (its last 3 evaluations' mean) against the same seed's and against all
    older seeds' (mean ± sample std)."""
    scores = np.array([r.score for r in old])
    same = next((r for r in old if r.seed == new.seed), None)
    mean, std = float(scores.mean()), float(scores.std(ddof=1)) if len(scores) > 1 else 0.0
    within = abs(new.score - mean) <= NOISE * std
    same_text = f"{same.score:.1f} ({commit_of(same)})" if same else "no run"
    return [new.variant, new.dataset, str(new.seed), steps_text(new.steps[-1]), same_text,
            f"{new.score:.1f} ({commit_of(new)})", f"{mean_std(list(scores))} (n={len(scores)})",
            "yes" if within else "NO"]


def write_rerun(rerun_root: Path, committed: list[RunRecord], out: Path, head: list[str]) -> bool:
    """rerun.md and rerun.png from the reruns under rerun_root; False when there is none."""
    pairs = []
    for new in [r for r in load_runs([rerun_root]) if r.evaluations]:
        old = [r for r in committed if (r.variant, r.dataset) == (new.variant, new.dataset)
               and r.evaluations and r.steps[-1] == new.steps[-1]]  # the same budget
        if old:
            pairs.append((new, old))
    if not pairs:
        return False
    rows = [agreement(new, old) for new, old in pairs]
    commands = [s.command(commit_dir=display(rerun_root)) for s in reproduce_sweeps([new for new, _ in pairs])]
    made = "; ".join(f"`{c}`" for c in commands) or "commands not recorded (no run.json)"
    lines = ["# Reruns on newer code", "", *[f"{line}  " for line in head], "",
             f"A committed benchmark run made again, same command, on newer code (made by {made}, from the reruns' "
             f"run.json; the logs in {display(rerun_root)}). It agrees when its score (the mean of its last 3 "
             f"evaluations) is within {NOISE:g} sample standard deviations of the older seeds' mean (the older code's "
             "seed noise at the same budget); the curves are in [rerun.png](rerun.png).", "",
             *markdown_table(["variant", "dataset", "seed", "updates", "older run, same seed (commit)",
                              "rerun (commit)", "older seeds: mean ± std", "within seed noise"], rows)]
    (out / "rerun.md").write_text("\n".join(lines) + "\n")
    plot_rerun(pairs, out / "rerun.png")
    return True


def plot_rerun(pairs: list[tuple[RunRecord, list[RunRecord]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(pairs), figsize=(5.5 * len(pairs), 3.8), squeeze=False)
    for ax, (new, old) in zip(axes[0], pairs):
        others = iter([(":", "0.45"), ("-.", "0.6"), ((0, (1, 3)), "0.7")] * len(old))
        for run in old:
            same = run.seed == new.seed
            style, color = ("--", "0.1") if same else next(others)
            ax.plot(run.steps, [e[SCORE] for e in run.evaluations], color=color, linestyle=style, linewidth=1.3,
                    label=f"older code, seed {run.seed}" + (" (same seed)" if same else ""))
        ax.plot(new.steps, [e[SCORE] for e in new.evaluations], color="tab:red", linewidth=2,
                label=f"rerun, seed {new.seed}")
        ax.set_title(f"{new.variant} on {new.dataset}", fontsize=9)
        ax.set_xlabel("updates")
        ax.set_ylabel("normalized score (local)")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
