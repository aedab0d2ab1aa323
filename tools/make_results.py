"""Tables, learning curves and the chapter's claims from the run directories of tools/sweep.py.

  python tools/make_results.py --root runs/bench --command "python tools/sweep.py ..."

Reads ROOT/<variant>/<dataset_id>/seed<S>/log.jsonl (and command.txt, machine.txt, checkpoint.pt)
and writes, in --out (results/):
  scores.md, scores.csv  D4RL normalized score per (variant, dataset): final (last evaluation) and
                         best (max over evaluations), mean +- std over seeds, and each variant's average
  curves.png             normalized score against updates, one subplot per dataset, one line per
                         variant with a band of +- one std over seeds
  claims.md              the chapter's claims, each PASS / FAIL / NOT RUN with the numbers behind it
Every file names the command that made the runs, the budget, the device and the date.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import shlex
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep import machine_description  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]
SCORE = "eval/normalized_score"
# Variants in the chapter's order; any other variant follows, alphabetically.
ORDER = ["bc", "bc_10", "bc_filtered", "awr", "bcq", "td3_bc", "cql", "iql", "dt", "mopo", "combo"]
KIND_ORDER = ["random", "medium", "medium-replay", "medium-expert", "expert"]
TD_METHODS = ["td3_bc", "iql", "cql", "bcq", "combo", "mopo"]
CLOSE = 10.0  # normalized-score points within which two scores are "close" / "near"


@dataclass
class RunRecord:
    variant: str
    dataset: str
    seed: int
    evaluations: list[dict]  # log records with an evaluation, by step (a resumed run's repeats: the last wins)
    config: dict = field(default_factory=dict)  # the checkpoint's TrainConfig, or the command's flags
    machine: str = ""

    @property
    def steps(self) -> list[int]:
        return [r["step"] for r in self.evaluations]

    @property
    def scores(self) -> list[float]:
        return [r[SCORE] for r in self.evaluations]


@dataclass
class Stat:
    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        return float(np.std(self.values))  # population std (ddof 0), so that one seed gives 0

    def text(self) -> str:
        return f"{self.mean:.1f} ± {self.std:.1f} ({plural(self.n, 'seed')})"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def kind(dataset: str) -> str:
    """'local/pendulum/medium-replay-v0' -> 'medium-replay'."""
    return dataset.rsplit("/", 1)[-1].rsplit("-v", 1)[0]


def variant_key(variant: str) -> tuple:
    return (ORDER.index(variant), "") if variant in ORDER else (len(ORDER), variant)


def dataset_key(dataset: str) -> tuple:
    k = kind(dataset)
    return (dataset.rsplit("/", 1)[0], KIND_ORDER.index(k) if k in KIND_ORDER else len(KIND_ORDER), k)


def command_flags(text: str) -> dict:
    """The --field value pairs of a command line (the last of each wins, as in pyrallis)."""
    words = shlex.split(text.split("&&")[-1])
    return {w[2:]: v for w, v in zip(words, words[1:]) if w.startswith("--") and not v.startswith("--")}


def read_run(run_dir: Path, root: Path) -> Optional[RunRecord]:
    parts = run_dir.relative_to(root).parts
    if len(parts) < 3 or not parts[-1].startswith("seed") or not parts[-1][4:].isdigit():
        return None
    by_step = {}
    for line in (run_dir / "log.jsonl").read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a crash
            continue
        if SCORE in record:
            by_step[record["step"]] = record
    run = RunRecord(parts[0], "/".join(parts[1:-1]), int(parts[-1][4:]), [by_step[s] for s in sorted(by_step)])
    if (run_dir / "command.txt").exists():
        run.config = command_flags((run_dir / "command.txt").read_text())
    if (run_dir / "checkpoint.pt").exists():
        import torch

        try:
            run.config = {**run.config, **torch.load(run_dir / "checkpoint.pt", map_location="cpu",
                                                     weights_only=False)["config"]}
        except Exception:  # noqa: BLE001 - a corrupt checkpoint still has its log
            pass
    if (run_dir / "machine.txt").exists():
        run.machine = (run_dir / "machine.txt").read_text().strip()
    return run


def load_runs(root: Path) -> list[RunRecord]:
    runs = [read_run(path.parent, root) for path in sorted(root.rglob("log.jsonl"))]
    return sorted([r for r in runs if r is not None],
                  key=lambda r: (variant_key(r.variant), dataset_key(r.dataset), r.seed))


def score_table(runs: list[RunRecord]) -> dict[tuple[str, str], dict[str, Stat]]:
    """(variant, dataset) -> {"final": Stat, "best": Stat} over the seeds that evaluated at least once."""
    table: dict[tuple[str, str], dict[str, Stat]] = {}
    for run in runs:
        if run.evaluations:
            cell = table.setdefault((run.variant, run.dataset), {"final": Stat([]), "best": Stat([])})
            cell["final"].values.append(run.scores[-1])
            cell["best"].values.append(max(run.scores))
    return table


def axes(table) -> tuple[list[str], list[str]]:
    variants = sorted({v for v, _ in table}, key=variant_key)
    datasets = sorted({d for _, d in table}, key=dataset_key)
    return variants, datasets


def variant_average(table, variant: str, which: str) -> tuple[float, int]:
    """Mean over the datasets the variant ran on of its mean score, and how many datasets."""
    means = [cell[which].mean for (v, _), cell in table.items() if v == variant]
    return float(np.mean(means)), len(means)


def header(runs: list[RunRecord], command: str, root: Path) -> list[str]:
    def values(name):
        found = sorted({str(r.config[name]) for r in runs if name in r.config}, key=lambda x: (len(x), x))
        return ", ".join(found) or "unknown"

    seeds = sorted({r.seed for r in runs})
    reached = sorted({r.steps[-1] for r in runs if r.evaluations})
    devices = set()
    for r in runs:
        device = str(r.config.get("device", "auto"))
        if device == "auto" and r.machine:
            device = "cuda" if "no GPU" not in r.machine else "cpu"
        devices.add(f"{device} on {r.machine}" if r.machine else device)
    device = "; ".join(sorted(devices)) if devices else "unknown"
    if all(not r.machine for r in runs):
        device += f" (runs did not record their machine; this machine: {machine_description()})"
    return [
        f"Runs: `{command}` (run directories in `{root}`).",
        f"Budget: {values('max_steps')} updates per run (last evaluation at {', '.join(map(str, reached)) or '-'}); "
        f"evaluation every {values('eval_every')} updates, {values('eval_episodes')} episode(s); "
        f"seeds {', '.join(map(str, seeds))}.",
        f"Device: {device}.",
        f"Made by `python tools/make_results.py` on {datetime.date.today().isoformat()}.",
    ]


def problems(runs: list[RunRecord], root: Path) -> list[str]:
    """Failed runs (their error.txt's last line) and runs whose last evaluation is before max_steps."""
    found, failed = [], set()
    for error in sorted(root.rglob("error.txt")):
        failed.add(error.parent)
        last = error.read_text().strip().splitlines()[-1:] or ["?"]
        found.append(f"{error.parent.relative_to(root)}: failed: {last[0]}")
    for r in runs:
        target = r.config.get("max_steps")
        if root / r.variant / r.dataset / f"seed{r.seed}" in failed:
            continue
        if not r.evaluations:
            found.append(f"{r.variant}/{r.dataset}/seed{r.seed}: no evaluation in its log")
        elif target is not None and r.steps[-1] < int(target):
            found.append(f"{r.variant}/{r.dataset}/seed{r.seed}: unfinished, last evaluation at update "
                         f"{r.steps[-1]} of {target} (its final score is that evaluation's)")
    return found


def write_scores(table, head: list[str], notes: list[str], out: Path) -> list[str]:
    variants, datasets = axes(table)
    with open(out / "scores.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["variant", "dataset", "n_seeds", "final_mean", "final_std", "best_mean", "best_std"])
        for variant in variants:
            for dataset in datasets:
                if (variant, dataset) in table:
                    final, best = table[variant, dataset]["final"], table[variant, dataset]["best"]
                    writer.writerow([variant, dataset, final.n, f"{final.mean:.4f}", f"{final.std:.4f}",
                                     f"{best.mean:.4f}", f"{best.std:.4f}"])
            final_avg, n = variant_average(table, variant, "final")
            writer.writerow([variant, f"average of {plural(n, 'dataset')}", "", f"{final_avg:.4f}", "",
                             f"{variant_average(table, variant, 'best')[0]:.4f}", ""])

    lines = ["# Normalized scores", "", *[f"{line}  " for line in head], "",
             "D4RL normalized score: 0 = the random policy, 100 = the expert policy of the dataset. "
             "Each cell: mean ± std over seeds (population std), number of seeds in parentheses. "
             "The average row is the mean over the datasets each variant ran on."]
    for which, title in (("final", "Final score (last evaluation)"), ("best", "Best score (max over evaluations)")):
        lines += ["", f"## {title}", "", "| dataset | " + " | ".join(variants) + " |",
                  "|---|" + "---|" * len(variants)]
        for dataset in datasets:
            cells = [table[v, dataset][which].text() if (v, dataset) in table else "-" for v in variants]
            lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
        averages = [f"{mean:.1f} ({plural(n, 'dataset')})" for mean, n in
                    (variant_average(table, v, which) for v in variants)]
        lines.append("| average | " + " | ".join(averages) + " |")
    if notes:
        lines += ["", "## Failed or unfinished runs", "", *[f"- {note}" for note in notes]]
    (out / "scores.md").write_text("\n".join(lines) + "\n")
    return lines[lines.index("## Final score (last evaluation)") + 2:lines.index("## Best score (max over evaluations)") - 1]


def update_readme(readme: Path, head: list[str], final_table: list[str]) -> None:
    """Rewrites the README's results summary (between its two marker lines) from the same table."""
    begin, end = "<!-- results: begin -->", "<!-- results: end -->"
    text = readme.read_text()
    if begin not in text or end not in text:
        return
    summary = [begin, "", *[f"{line}  " for line in head], "", "Final normalized score, mean ± std over seeds "
               "(full tables: [results/scores.md](results/scores.md), claims: [results/claims.md](results/claims.md)):",
               "", *final_table, "", "![learning curves](results/curves.png)", "", end]
    readme.write_text(text[:text.index(begin)] + "\n".join(summary) + text[text.index(end) + len(end):])


def plot_curves(runs: list[RunRecord], path: Path, caption: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r.dataset for r in runs if r.evaluations}, key=dataset_key)
    variants = sorted({r.variant for r in runs if r.evaluations}, key=variant_key)
    colors = {v: plt.get_cmap("tab10")(i % 10) for i, v in enumerate(variants)}
    cols = min(3, max(1, len(datasets)))
    rows = max(1, math.ceil(len(datasets) / cols))
    fig, grid = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, dataset in zip(grid.flat, datasets):
        for variant in variants:
            by_step: dict[int, list[float]] = {}
            for run in runs:
                if run.variant == variant and run.dataset == dataset:
                    for step, score in zip(run.steps, run.scores):
                        by_step.setdefault(step, []).append(score)
            if not by_step:
                continue
            steps = sorted(by_step)
            mean = np.array([np.mean(by_step[s]) for s in steps])
            std = np.array([np.std(by_step[s]) for s in steps])
            seeds = max(len(v) for v in by_step.values())
            ax.plot(steps, mean, color=colors[variant], label=f"{variant} ({seeds} seeds)")
            ax.fill_between(steps, mean - std, mean + std, color=colors[variant], alpha=0.2)
        ax.set_title(dataset, fontsize=10)
        ax.set_xlabel("updates")
        ax.set_ylabel("normalized score")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(grid.flat)[len(datasets):]:
        ax.axis("off")
    # How the runs were made, as a caption under the plots: about 13 characters an inch at 8 points.
    caption = "\n".join(textwrap.fill(line, int(12 * 5 * cols)) for line in caption.splitlines())
    bottom = 0.1 + 0.14 * (caption.count("\n") + 1)
    fig.set_size_inches(5 * cols, 3.6 * rows + bottom)
    fig.text(0.01, 0.01, caption, fontsize=8, ha="left", va="bottom")
    fig.tight_layout(rect=(0, bottom / (3.6 * rows + bottom), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- claims: each returns (verdict, lines of numbers)


def cell(table, variant: str, dataset: str) -> Optional[Stat]:
    return table[variant, dataset]["final"] if (variant, dataset) in table else None


def verdict(results: list[bool]) -> str:
    return "NOT RUN" if not results else "PASS" if all(results) else "FAIL"


def claim_td_beats_bc(table, runs) -> tuple[str, list[str]]:
    results, lines = [], []
    for dataset in sorted({d for _, d in table if kind(d) == "medium-replay"}, key=dataset_key):
        bc = cell(table, "bc", dataset)
        if bc is None:
            lines.append(f"{dataset}: bc not run.")
            continue
        ran = [m for m in TD_METHODS if cell(table, m, dataset)]
        for method in ran:
            td = cell(table, method, dataset)
            results.append(td.mean > bc.mean)
            lines.append(f"{dataset}: {method} {td.text()} {'>' if td.mean > bc.mean else '<='} bc {bc.text()}.")
        missing = [m for m in TD_METHODS if m not in ran]
        if missing:
            lines.append(f"{dataset}: not run: {', '.join(missing)}.")
    return verdict(results), lines or ["no medium-replay dataset was run."]


def claim_filtering_helps(table, runs) -> tuple[str, list[str]]:
    results, lines = [], []
    for dataset in sorted({d for _, d in table if kind(d) == "medium-replay"}, key=dataset_key):
        bc, bc_10 = cell(table, "bc", dataset), cell(table, "bc_10", dataset)
        if bc is None or bc_10 is None:
            lines.append(f"{dataset}: {'bc' if bc is None else 'bc_10'} not run.")
            continue
        results.append(bc_10.mean > bc.mean)
        lines.append(f"{dataset}: bc_10 {bc_10.text()} {'>' if bc_10.mean > bc.mean else '<='} bc {bc.text()}.")
    return verdict(results), lines or ["no medium-replay dataset was run."]


def claim_bc_expert(table, runs) -> tuple[str, list[str]]:
    results, lines = [], []
    for dataset in sorted({d for v, d in table if v == "bc" and kind(d) == "expert"}, key=dataset_key):
        bc = cell(table, "bc", dataset)
        results.append(abs(bc.mean - 100.0) <= CLOSE)
        lines.append(f"{dataset}: bc {bc.text()}, {abs(bc.mean - 100.0):.1f} points from 100 "
                     f"({'within' if results[-1] else 'more than'} {CLOSE:g}).")
    return verdict(results), lines or ["bc was not run on an expert dataset."]


def claim_dt(table, runs) -> tuple[str, list[str]]:
    close, below, lines = [], [], []
    for dataset in sorted({d for v, d in table if v == "dt"}, key=dataset_key):
        dt, bc_10 = cell(table, "dt", dataset), cell(table, "bc_10", dataset)
        if bc_10 is not None:
            close.append(abs(dt.mean - bc_10.mean) <= CLOSE)
            lines.append(f"{dataset}: dt {dt.text()} vs bc_10 {bc_10.text()}: {abs(dt.mean - bc_10.mean):.1f} "
                         f"points apart ({'within' if close[-1] else 'more than'} {CLOSE:g}).")
        if kind(dataset) == "medium-replay":
            for method in [m for m in TD_METHODS if cell(table, m, dataset)]:
                td = cell(table, method, dataset)
                below.append(dt.mean < td.mean)
                lines.append(f"{dataset}: dt {dt.text()} {'<' if below[-1] else '>='} {method} {td.text()}.")
    if not close:
        lines.append("dt close to bc_10: not run (no dataset with both dt and bc_10).")
    if not below:
        lines.append("dt below the TD methods on medium-replay: not run (no medium-replay dataset with dt and a TD method).")
    if (close and not all(close)) or (below and not all(below)):
        return "FAIL", lines
    return ("PASS" if close and below else "NOT RUN"), lines or ["dt was not run."]


def claim_cql_lower_bound(table, runs) -> tuple[str, list[str]]:
    results, lines = [], []
    for run in runs:
        if run.variant != "cql" or not run.evaluations:
            continue
        last = [r for r in run.evaluations if "eval/q_initial" in r and "eval/mc_return_initial" in r]
        if not last:
            lines.append(f"{run.dataset} seed {run.seed}: the log has no eval/q_initial and eval/mc_return_initial.")
            continue
        q, mc, step = last[-1]["eval/q_initial"], last[-1]["eval/mc_return_initial"], last[-1]["step"]
        results.append(q < mc)
        lines.append(f"{run.dataset} seed {run.seed} (update {step}): Q(s_0, pi(s_0)) = {q:.2f} "
                     f"{'<' if q < mc else '>='} Monte Carlo return {mc:.2f}.")
    return verdict(results), lines or ["cql was not run."]


CLAIMS = [
    ("On medium-replay, the TD methods (td3_bc, iql, cql, bcq, combo, mopo) beat plain BC (bc).", claim_td_beats_bc),
    ("Filtering helps BC on mixed-quality data: bc_10 > bc on medium-replay.", claim_filtering_helps),
    (f"On expert data, BC is already near 100 (within {CLOSE:g} points).", claim_bc_expert),
    (f"dt is close to %BC (bc_10, within {CLOSE:g} points), and below the TD methods where stitching is needed "
     "(medium-replay).", claim_dt),
    ("CQL's Q-values are a lower bound: Q(s_0, pi(s_0)) < the policy's Monte Carlo return at the final evaluation, "
     "for every seed.", claim_cql_lower_bound),
]


def check_claims(table, runs) -> list[tuple[str, str, list[str]]]:
    return [(text, *check(table, runs)) for text, check in CLAIMS]


def write_claims(claims, head: list[str], path: Path) -> None:
    lines = ["# The chapter's claims, checked against these runs", "", *[f"{line}  " for line in head], "",
             "Each claim compares the means of the final normalized scores (last evaluation), shown as "
             "mean ± std over seeds (population std) with the number of seeds.", "",
             "| # | claim | verdict |", "|---|---|---|"]
    lines += [f"| {i} | {text} | {result} |" for i, (text, result, _) in enumerate(claims, 1)]
    for i, (text, result, details) in enumerate(claims, 1):
        lines += ["", f"## {i}. {result}: {text}", "", *[f"- {d}" for d in details]]
    path.write_text("\n".join(lines) + "\n")


def make_results(root: str | Path, out: str | Path = PROJECT / "results", command: Optional[str] = None) -> list:
    """Writes scores.md, scores.csv, curves.png and claims.md; returns the claims (text, verdict, numbers)."""
    root, out = Path(root), Path(out)
    runs = load_runs(root)
    if not any(r.evaluations for r in runs):
        raise SystemExit(f"error: no run with an evaluation under {root} (looked for */<dataset_id>/seed*/log.jsonl).")
    if command is None:
        sweeps = root / "sweeps.txt"
        command = " ; ".join(line.split("  ", 1)[-1] for line in sweeps.read_text().splitlines()) \
            if sweeps.exists() else "unknown (pass --command)"
    out.mkdir(parents=True, exist_ok=True)
    head = header(runs, command, root)
    table = score_table(runs)
    final_table = write_scores(table, head, problems(runs, root), out)
    if out.resolve() == (PROJECT / "results").resolve():
        update_readme(PROJECT / "README.md", head, final_table)
    plot_curves(runs, out / "curves.png", "\n".join(head).replace("`", ""))
    claims = check_claims(table, runs)
    write_claims(claims, head, out / "claims.md")
    return claims


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="runs/bench", help="the --root of tools/sweep.py")
    parser.add_argument("--out", default=str(PROJECT / "results"), help="where the tables and the plot go")
    parser.add_argument("--command", default=None,
                        help="the sweep command that made the runs (default: ROOT/sweeps.txt, written by the sweep)")
    args = parser.parse_args(argv)
    claims = make_results(args.root, args.out, args.command)
    for i, (text, result, _) in enumerate(claims, 1):
        print(f"claim {i}: {result:7s} {text}")
    print(f"wrote {Path(args.out) / 'scores.md'}, scores.csv, curves.png, claims.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
