"""Tables, plots and the chapter's claims from the run directories of tools/sweep.py.

  python tools/make_results.py                        # from results/runs, the committed runs
  python tools/make_results.py --root runs/bench      # or any sweep root (several: --root A B)

Reads ROOT/<variant>/<dataset_id>/seed<S>/log.jsonl (and finished.json, command.txt, machine.txt, and
checkpoint.pt when there is one), nothing else, and writes in --out (results/):
  scores.md, scores.csv  D4RL normalized score per (variant, dataset): final (last evaluation) and best
                         (max over evaluations), mean ± std over seeds with n and the budget (updates) of
                         every cell, "not run" for the cells of the planned grid that have no run; and the
                         aggregate: interquartile mean over (core dataset, seed) with a stratified bootstrap
                         95% CI (rliable), also in aggregate.csv
  profiles.png           performance profiles on the core datasets: fraction of runs scoring above tau
  curves.png             MuJoCo learning curves, one subplot per dataset (curves-pendulum.png: Pendulum)
  peer.md, peer.csv      ours beside the peer library (d3rlpy_<algo>): the difference of means with a 95%
                         bootstrap CI (seeds resampled within each side)
  claims.md              the chapter's claims on MuJoCo, each PASS / FAIL on 95% intervals (NOT RUN, naming
                         the missing runs, only when runs are absent)
  sanity.md              bc on each environment's expert data (about 100) and random data (about 0)
and, when --out is the project's results/, the README's results section (between its markers).
  reproduce.md           the sweep commands that make the runs again, derived from each run's command.txt (a few
                         sweeps of variants x datasets x seeds with one --set each), and the same sweeps
                         at each method's full budget on a GPU
Every file names the runs, the budget, the device and the date.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import re
import shlex
import sys
import textwrap
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep import machine_description  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = "results/runs"  # where tools/sweep.py --commit-dir puts the committed runs
SCORE = "eval/normalized_score"
Q_INITIAL = "eval/q_initial"  # Q(s0, pi(s0)) averaged over the evaluation's initial states
DISCOUNTED_RETURN = "eval/discounted_return"  # the same episodes' discounted Monte Carlo return
LEGACY_DISCOUNTED_RETURN = "eval/mc_return_initial"  # older cql logs
# DT's score per conditioning target R_hat_1, e.g. eval/target_3600/normalized_score (the older
# eval/normalized_score_3600 is read too).
TARGET_KEYS = (re.compile(r"^eval/target_(?P<target>[^/]+)/normalized_score$"),
               re.compile(r"^eval/normalized_score_(?P<target>[-+.0-9eE]+)$"))

# The benchmark grid (issue: the MuJoCo benchmark): cells of it without a run say "not run".
CORE = ["local/hopper/medium-replay-v0", "local/halfcheetah/medium-replay-v0", "local/hopper/medium-expert-v0"]
CORE_MEDIUM_REPLAY = [d for d in CORE if d.endswith("/medium-replay-v0")]
HOPPER_MEDIUM_REPLAY, HOPPER_MEDIUM_EXPERT = "local/hopper/medium-replay-v0", "local/hopper/medium-expert-v0"
PLANNED = ["bc", "bc_10", "awr", "bcq", "td3_bc", "cql", "iql", "dt", "mopo", "combo"]
# Ours, algorithm -> the peer library's variant of the same algorithm.
PEERS = {"bc": "d3rlpy_bc", "td3_bc": "d3rlpy_td3_bc", "iql": "d3rlpy_iql", "cql": "d3rlpy_cql",
         "bcq": "d3rlpy_bcq", "dt": "d3rlpy_dt"}
# Variants in the chapter's order, then the ablations and the peer; any other variant follows, alphabetically.
ORDER = ["bc", "bc_10", "bc_filtered", "awr", "bcq", "td3_bc", "cql", "iql", "dt", "mopo", "combo",
         "td3_nobc", "mopo_nopen", "dt_init1", *PEERS.values()]
KIND_ORDER = ["random", "medium", "medium-replay", "medium-expert", "expert"]
TD_METHODS = ["td3_bc", "iql", "cql", "bcq", "mopo", "combo"]
HEADLINE, PENDULUM = "MuJoCo", "Pendulum"
CLOSE = 10.0  # normalized-score points: "close" means the 95% CI of the difference lies within +- CLOSE
FAR = 0.5  # "far above": the CI of Q - G lies above FAR abs(G), i.e. Q at least 1.5 times a positive return
MIN_SEEDS = 2  # an interval needs two seeds a side; one seed decides nothing
REPS = 5000  # bootstrap resamples
BOOTSTRAP_SEED = 0  # the bootstrap is seeded: the same logs give the same intervals


@dataclass
class RunRecord:
    variant: str
    dataset: str
    seed: int
    evaluations: list[dict]  # log records with an evaluation, by step (a resumed run's repeats: the last wins)
    config: dict = field(default_factory=dict)  # the checkpoint's TrainConfig, or the command's flags and YAML
    flags: dict = field(default_factory=dict)  # the flags of command.txt, as written
    command: str = ""  # command.txt: the exact command of the run, as tools/sweep.py wrote it
    machine: str = ""
    dataset_build: str = ""  # dataset.txt: the size of the local dataset the run read ("" before it was recorded)
    finished_step: Optional[int] = None  # finished.json's step: all the run's updates are done

    @property
    def steps(self) -> list[int]:
        return [r["step"] for r in self.evaluations]

    @property
    def scores(self) -> list[float]:
        return [r[SCORE] for r in self.evaluations]

    @property
    def final(self) -> dict:
        return self.evaluations[-1]

    @property
    def budget(self) -> int:
        """The updates behind the final score (the last evaluation's step)."""
        return self.steps[-1]


@dataclass
class Stat:
    values: list[float]
    budgets: list[int] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        return float(np.std(self.values))  # population std (ddof 0), so that one seed gives 0

    def budget_text(self) -> str:
        low, high = min(self.budgets, default=0), max(self.budgets, default=0)
        return steps_text(low) if low == high else f"{steps_text(low)}-{steps_text(high)}"

    def text(self) -> str:
        return f"{self.mean:.1f} ± {self.std:.1f} (n={self.n}, {self.budget_text()})"


def cell_text(stat: Optional[Stat]) -> str:
    return stat.text() if stat is not None else "not run"


def steps_text(steps: int) -> str:
    """50000 -> '50k', 1000000 -> '1M', 2500 -> '2.5k', 20 -> '20'."""
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if steps >= size:
            return f"{steps / size:g}{unit}"
    return str(steps)


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def kind(dataset: str) -> str:
    """'local/pendulum/medium-replay-v0' -> 'medium-replay'."""
    return dataset.rsplit("/", 1)[-1].rsplit("-v", 1)[0]


def env_of(dataset: str) -> str:
    """'local/hopper/medium-v0' -> 'hopper'."""
    parts = dataset.split("/")
    return parts[-2] if len(parts) >= 2 else dataset


def suite(dataset: str) -> str:
    return PENDULUM if env_of(dataset) == "pendulum" else HEADLINE


def variant_key(variant: str) -> tuple:
    return (ORDER.index(variant), "") if variant in ORDER else (len(ORDER), variant)


def dataset_key(dataset: str) -> tuple:
    k = kind(dataset)
    core = CORE.index(dataset) if dataset in CORE else len(CORE)
    return (core, dataset.rsplit("/", 1)[0], KIND_ORDER.index(k) if k in KIND_ORDER else len(KIND_ORDER), k)


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
        if isinstance(record, dict) and SCORE in record and "step" in record:
            by_step[record["step"]] = record
    run = RunRecord(parts[0], "/".join(parts[1:-1]), int(parts[-1][4:]), [by_step[s] for s in sorted(by_step)])
    if (run_dir / "command.txt").exists():
        run.command = (run_dir / "command.txt").read_text().strip()
        flags = run.flags = command_flags(run.command)
        defaults = {}
        config = PROJECT / flags.get("config_path", "-")
        if "config_path" in flags and config.is_file():
            import yaml

            defaults = yaml.safe_load(config.read_text()) or {}
        run.config = {**defaults, **flags}
    if (run_dir / "checkpoint.pt").exists():
        import torch

        try:
            run.config = {**run.config, **torch.load(run_dir / "checkpoint.pt", map_location="cpu",
                                                     weights_only=True)["config"]}
        except Exception:  # noqa: BLE001 - a corrupt checkpoint still has its log
            pass
    if (run_dir / "machine.txt").exists():
        run.machine = (run_dir / "machine.txt").read_text().strip()
    if (run_dir / "dataset.txt").exists():
        run.dataset_build = (run_dir / "dataset.txt").read_text().strip().removeprefix(f"{run.dataset}: ")
    if (run_dir / "finished.json").exists():
        try:
            run.finished_step = int(json.loads((run_dir / "finished.json").read_text())["step"])
        except (ValueError, KeyError, TypeError):
            pass
    return run


def load_runs(roots: list[Path]) -> list[RunRecord]:
    """Every run under the roots; a run found under two roots (a committed copy and its run directory):
    the finished one, then the one with more updates, then the first root's."""
    chosen: dict[tuple, RunRecord] = {}
    for root in roots:
        for path in sorted(root.rglob("log.jsonl")):
            run = read_run(path.parent, root)
            if run is None:
                continue
            key = (run.variant, run.dataset, run.seed)
            rank = lambda r: (r.finished_step is not None, r.steps[-1] if r.evaluations else -1)  # noqa: E731
            if key not in chosen or rank(run) > rank(chosen[key]):
                chosen[key] = run
    return sorted(chosen.values(), key=lambda r: (variant_key(r.variant), dataset_key(r.dataset), r.seed))


# --- statistics: rliable's stratified bootstrap (arch), seeded


def bootstrap_arrays(samples: list[list[float]], statistic: Callable[..., np.ndarray]):
    """statistic(*samples) (a 1-D array) and its percentile 95% CI, each sample resampled with replacement on
    its own (rliable's StratifiedIndependentBootstrap: the strata are the samples).  Returns (point, low, high)."""
    from rliable import library as rly

    arrays = [np.asarray(s, dtype=float).reshape(-1, 1) for s in samples]
    state = np.random.get_state()
    np.random.seed(BOOTSTRAP_SEED)  # rliable draws its indices from numpy's global generator
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            point, interval = rly.get_interval_estimates(
                {"x": arrays}, lambda *xs: np.atleast_1d(statistic(*(x.ravel() for x in xs))), reps=REPS)
    finally:
        np.random.set_state(state)
    return point["x"], interval["x"][0], interval["x"][1]


def bootstrap(samples: list[list[float]], statistic: Callable[..., float]) -> tuple[float, float, float]:
    """A scalar statistic and its 95% CI (see bootstrap_arrays): (point, low, high)."""
    point, low, high = bootstrap_arrays(samples, statistic)
    return float(point[0]), float(low[0]), float(high[0])


def difference_interval(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """mean(a) - mean(b) with a 95% CI, the seeds resampled within each side."""
    return bootstrap([a, b], lambda x, y: x.mean() - y.mean())


def mean_interval(x: list[float]) -> tuple[float, float, float]:
    return bootstrap([x], lambda v: v.mean())


def iqm(values: np.ndarray) -> float:
    from rliable import metrics

    return float(metrics.aggregate_iqm(values))


def iqm_interval(per_dataset: list[list[float]]) -> tuple[float, float, float]:
    """Interquartile mean over every (dataset, seed) score, with the stratified bootstrap 95% CI (seeds
    resampled within each dataset)."""
    return bootstrap(per_dataset, lambda *xs: iqm(np.concatenate(xs)))


def interval_text(low: float, high: float) -> str:
    return f"[{low:.1f}, {high:.1f}]"


# --- the score tables


def score_table(runs: list[RunRecord]) -> dict[tuple[str, str], dict[str, Stat]]:
    """(variant, dataset) -> {"final": Stat, "best": Stat} over the seeds that evaluated at least once."""
    table: dict[tuple[str, str], dict[str, Stat]] = {}
    for run in runs:
        if run.evaluations:
            cell = table.setdefault((run.variant, run.dataset), {"final": Stat([]), "best": Stat([])})
            for which, value in (("final", run.scores[-1]), ("best", max(run.scores))):
                cell[which].values.append(value)
                cell[which].budgets.append(run.budget)
                cell[which].seeds.append(run.seed)
    return table


def cell(table, variant: str, dataset: str) -> Optional[Stat]:
    return table[variant, dataset]["final"] if (variant, dataset) in table else None


def grid(table, which_suite: str) -> tuple[list[str], list[str]]:
    """Rows (variants) and columns (datasets) of a suite's table: for MuJoCo the planned grid (the core
    datasets and PLANNED variants, run or not) plus whatever else ran; for the others what ran."""
    ran = [(v, d) for v, d in table if suite(d) == which_suite]
    planned = which_suite == HEADLINE
    variants = sorted({v for v, _ in ran} | (set(PLANNED) if planned else set()), key=variant_key)
    datasets = sorted({d for _, d in ran} | (set(CORE) if planned else set()), key=dataset_key)
    return variants, datasets


def markdown_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *["| " + " | ".join(r) + " |" for r in rows]]


def suite_table(table, which_suite: str, which: str = "final") -> list[str]:
    variants, datasets = grid(table, which_suite)
    rows = [[v, *[cell_text(table[v, d][which]) if (v, d) in table else "not run" for d in datasets]]
            for v in variants]
    return markdown_table(["variant", *datasets], rows)


def aggregate(table, variants: list[str], datasets: list[str] = CORE) -> dict[str, dict]:
    """variant -> {"iqm", "low", "high", "runs", "note"}: IQM over (core dataset, seed) with its stratified
    bootstrap CI, for the variants with a run on every core dataset (a note says what the others miss); one
    seed on a dataset gives the IQM without a CI (its stratum cannot be resampled)."""
    result = {}
    for variant in variants:
        stats = [cell(table, variant, d) for d in datasets]
        missing = [d for d, s in zip(datasets, stats) if s is None]
        if missing:
            result[variant] = {"note": "not run" if len(missing) == len(datasets) else
                               f"partial: not run on {', '.join(missing)}"}
            continue
        point, low, high = iqm_interval([s.values for s in stats])
        few = [d for d, s in zip(datasets, stats) if s.n < MIN_SEEDS]
        result[variant] = {"iqm": point, "runs": " + ".join(str(s.n) for s in stats),
                           "budget": ", ".join(sorted({s.budget_text() for s in stats})),
                           **({"note": f"no CI: fewer than {MIN_SEEDS} seeds on {', '.join(few)}"} if few else
                              {"low": low, "high": high, "note": ""})}
    return result


def aggregate_table(agg: dict[str, dict]) -> list[str]:
    rows = []
    for variant, a in agg.items():
        if "iqm" not in a:
            rows.append([variant, a["note"], "-", "-"])
        elif "low" not in a:
            rows.append([variant, f"{a['iqm']:.1f} ({a['note']})", a["runs"], a["budget"]])
        else:
            rows.append([variant, f"{a['iqm']:.1f} {interval_text(a['low'], a['high'])}", a["runs"], a["budget"]])
    return markdown_table(["variant", "IQM [95% CI]", "seeds per core dataset", "updates"], rows)


def write_scores(table, head: list[str], pendulum_head: list[str], agg: dict, notes: list[str], builds: list[str],
                 out: Path) -> None:
    with open(out / "scores.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["suite", "variant", "dataset", "n_seeds", "seeds", "updates", "final_mean", "final_std",
                         "best_mean", "best_std"])
        for which_suite in (HEADLINE, PENDULUM):
            variants, datasets = grid(table, which_suite)
            for variant in variants:
                for dataset in datasets:
                    if (variant, dataset) not in table:
                        if which_suite == HEADLINE and variant in PLANNED and dataset in CORE:
                            writer.writerow([which_suite, variant, dataset, 0, "", "not run", "", "", "", ""])
                        continue
                    final, best = table[variant, dataset]["final"], table[variant, dataset]["best"]
                    writer.writerow([which_suite, variant, dataset, final.n, " ".join(map(str, final.seeds)),
                                     final.budget_text(), f"{final.mean:.4f}", f"{final.std:.4f}",
                                     f"{best.mean:.4f}", f"{best.std:.4f}"])
    with open(out / "aggregate.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["variant", "iqm", "ci_low", "ci_high", "seeds_per_core_dataset", "updates", "note"])
        for variant, a in agg.items():
            writer.writerow([variant, *(f"{a[k]:.4f}" if k in a else "" for k in ("iqm", "low", "high")),
                             a.get("runs", ""), a.get("budget", ""), a["note"]])

    lines = ["# Normalized scores", "", *[f"{line}  " for line in head], "",
             "D4RL normalized score: 0 = the random policy, 100 = the expert policy of the dataset. "
             "Each cell: mean ± std over seeds (population std), then n = the number of seeds and the updates "
             "behind the final score; \"not run\" marks a cell of the planned grid without a run.", "",
             f"## Aggregate over the core datasets ({', '.join(CORE)})", "",
             "Interquartile mean of the final scores over every (dataset, seed) run, with a stratified bootstrap "
             f"95% CI (rliable; seeds resampled within each dataset, {REPS} resamples). Only variants with runs on "
             f"all three core datasets have one, and its CI needs {MIN_SEEDS} seeds on each.", "", *aggregate_table(agg)]
    for which_suite, suite_head in ((HEADLINE, []), (PENDULUM, pendulum_head)):
        if which_suite == PENDULUM and not any(suite(d) == PENDULUM for _, d in table):
            continue
        for which, title in (("final", "final score (last evaluation)"), ("best", "best score (max over evaluations)")):
            lines += ["", f"## {which_suite}: {title}", ""]
            if suite_head and which == "final":
                lines += [*[f"{line}  " for line in suite_head], ""]
            lines += suite_table(table, which_suite, which)
    if builds:
        lines += ["", "## Dataset builds", "", "The size of the local dataset each run read (dataset.txt): builds of "
                  "a collected dataset on two machines can differ (same recipe and behavior checkpoints, other "
                  "episodes).", "", *[f"- {line}" for line in builds]]
    if notes:
        lines += ["", "## Failed or unfinished runs", "", *[f"- {note}" for note in notes]]
    (out / "scores.md").write_text("\n".join(lines) + "\n")


def dataset_builds(runs: list[RunRecord]) -> list[str]:
    """Per dataset with a recorded build: each build and its runs, then the runs that recorded none."""
    lines = []
    for dataset in sorted({r.dataset for r in runs if r.dataset_build}, key=dataset_key):
        mine = [r for r in runs if r.dataset == dataset]
        counts = Counter(r.dataset_build or "not recorded (committed before runs recorded it)" for r in mine)
        lines.append(f"{dataset}: " + "; ".join(f"{build}: {plural(n, 'run')}" for build, n in counts.items()))
    return lines


# --- the peer library beside ours


def peer_rows(table) -> list[dict]:
    """One row per (algorithm with a peer, dataset): the core datasets, and any other the peer ran on."""
    rows = []
    for ours, peer in PEERS.items():
        datasets = sorted({d for v, d in table if v == peer} | set(CORE), key=dataset_key)
        for dataset in datasets:
            a, b = cell(table, ours, dataset), cell(table, peer, dataset)
            row = {"algorithm": ours, "dataset": dataset, "ours": a, "peer": b, "difference": None}
            if a is not None and b is not None and min(a.n, b.n) >= MIN_SEEDS:
                row["difference"] = difference_interval(a.values, b.values)
            rows.append(row)
    return rows


def difference_text(row: dict) -> str:
    a, b = row["ours"], row["peer"]
    if a is None or b is None:
        return "-"
    if row["difference"] is None:
        return f"{a.mean - b.mean:+.1f} (no interval: {MIN_SEEDS} seeds a side needed)"
    diff, low, high = row["difference"]
    return f"{diff:+.1f} {interval_text(low, high)}"


def peer_table(rows: list[dict]) -> list[str]:
    return markdown_table(["algorithm", "dataset", "ours", "peer (d3rlpy)", "ours - peer [95% CI]"],
                          [[r["algorithm"], r["dataset"], cell_text(r["ours"]), cell_text(r["peer"]),
                            difference_text(r)] for r in rows])


def write_peer(rows: list[dict], head: list[str], out: Path) -> None:
    with open(out / "peer.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["algorithm", "dataset", "ours_n", "ours_mean", "ours_std", "peer_n", "peer_mean",
                         "peer_std", "difference", "ci_low", "ci_high"])
        for r in rows:
            sides = [(s.n, f"{s.mean:.4f}", f"{s.std:.4f}") if s else (0, "", "") for s in (r["ours"], r["peer"])]
            difference = [f"{x:.4f}" for x in r["difference"]] if r["difference"] else ["", "", ""]
            writer.writerow([r["algorithm"], r["dataset"], *sides[0], *sides[1], *difference])
    lines = ["# Ours beside the peer library (d3rlpy)", "", *[f"{line}  " for line in head], "",
             "The same local Minari datasets, budget, seeds, evaluation episodes and normalization (the peer runs "
             "tools/peer_d3rlpy.py in its own environment). Each cell: final normalized score, mean ± std over "
             "seeds (n, updates). The difference of means has a 95% bootstrap CI, the seeds resampled within "
             f"each side ({REPS} resamples); an interval containing 0 means the two are not told apart by "
             "these seeds. The peer's hyperparameters are d3rlpy's D4RL reproduction scripts, with the exceptions "
             "listed in tools/peer_d3rlpy.py: BC (no script) takes our batch and learning rate, and BCQ samples "
             "10 actions per next state in the target and 100 when acting, as the authors' code and our bcq. "
             "One difference inside d3rlpy's method: its CQL target scores the next state at the mean action "
             "tanh(mu(s')) (cql_impl.py, _compute_deterministic_target), where the authors' code and our cql "
             "sample a' ~ pi(.|s'). And one in ours: dt starts its timestep embedding as GPT-2 starts its position "
             "embedding (std 0.02, as d3rlpy does), where the authors' code keeps nn.Embedding's N(0, 1); the "
             "authors' start is the variant dt_init1 in scores.md.",
             "", *peer_table(rows)]
    (out / "peer.md").write_text("\n".join(lines) + "\n")


# --- the sanity table: bc on expert data scores about 100, on random data about 0


def write_sanity(table, head: list[str], out: Path) -> list[str]:
    envs = sorted({env_of(d) for v, d in table if v == "bc" and kind(d) in ("expert", "random")})
    lines = ["# Sanity: BC on expert and random data", "", *[f"{line}  " for line in head], "",
             "BC imitating the expert policy should score about 100 and imitating the uniform random policy about "
             "0: the normalization (ref_max_score, ref_min_score of the local datasets) and the evaluation agree "
             "with the data. Not a test: a reading of the runs.", ""]
    if not envs:
        lines.append("Not run: no bc run on a local/<env>/expert-v0 or random-v0 dataset (python tools/sweep.py "
                     "--variants bc --datasets local/hopper/expert-v0 local/hopper/random-v0 ... --commit-dir "
                     "results/runs).")
    rows = []
    for env in envs:
        row = [env]
        for k, target in (("expert", 100.0), ("random", 0.0)):
            dataset = next((d for v, d in table if v == "bc" and env_of(d) == env and kind(d) == k), None)
            stat = cell(table, "bc", dataset) if dataset else None
            if stat is None:
                row += ["not run", "-"]
            else:
                off = abs(stat.mean - target)
                row += [stat.text(), f"{off:.1f} points from {target:g} "
                                     f"({'within' if off <= CLOSE else 'MORE than'} {CLOSE:g})"]
        rows.append(row)
    if rows:
        lines += markdown_table(["environment", "bc on expert-v0", "vs 100", "bc on random-v0", "vs 0"], rows)
    (out / "sanity.md").write_text("\n".join(lines) + "\n")
    return lines


# --- headers, problems, commands


# --- the commands that reproduce the runs, derived from each run's command.txt (not from a sweep's history)

SWEEP_WRITES = ("config_path", "dataset_id", "seed", "checkpoints_path", "algo")  # flags sweep.py writes per run
# --set keys that scale a method down to the CPU budget; the full budget drops them (the configs hold the
# papers' values): updates, evaluation period, device, CQL's BC warm start, DT's warmup, the model's epochs.
SCALED_DOWN = ("max_steps", "eval_every", "device", "bc_steps", "warmup_steps", "model_max_epochs")
GPU_BUDGET = ["eval_every=5000", "device=cuda"]  # with max_steps from the method's config (the paper's)
PEER_SCRIPTS = {"bc": "bc_filtered"}  # d3rlpy_<algo> gets the budget of our script of that algorithm


@dataclass
class Sweep:
    """One tools/sweep.py command: every variant x dataset x seed in root, with the same --set items."""
    variants: list[str]
    datasets: list[str]
    seeds: list[int]
    root: str
    sets: list[str]
    defines: list[str] = field(default_factory=list)

    def command(self, workers: str = "2", commit_dir: Optional[str] = None) -> str:
        words = ["python tools/sweep.py", "--variants", *self.variants,
                 *(w for d in self.defines for w in ("--define", shlex.quote(d))), "--datasets", *self.datasets,
                 "--seeds", *map(str, self.seeds), "--workers", workers, "--root", self.root]
        words += ["--commit-dir", commit_dir] if commit_dir else []
        return " ".join(words + (["--set", *map(shlex.quote, self.sets)] if self.sets else []))


def run_root(checkpoints_path: str, cwd: str, run: RunRecord) -> str:
    """The sweep root of a run directory ROOT/<variant>/<dataset>/seed<S>: relative to the command's working
    directory, else from its runs/ folder on (a run made in another checkout of the project)."""
    root = Path(checkpoints_path.removesuffix(f"/{run.variant}/{run.dataset}/seed{run.seed}"))
    if cwd and root.is_relative_to(cwd):
        return str(root.relative_to(cwd))
    return str(Path(*root.parts[root.parts.index("runs"):])) if "runs" in root.parts else str(root)


def sweep_key(run: RunRecord) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(root, --define items, --set items) of the sweep that wrote the run's command.txt."""
    from sweep import VARIANTS

    text = run.command
    cwd = text.split("&&")[0].strip().removeprefix("cd ").strip() if "&&" in text else ""
    script = next((Path(w).stem for w in shlex.split(text.split("&&")[-1]) if w.endswith(".py")), run.variant)
    own = dict(zip(VARIANTS[run.variant][1][::2], VARIANTS[run.variant][1][1::2])) if run.variant in VARIANTS else {}
    defines = () if run.variant in VARIANTS or run.variant.startswith("d3rlpy_") or script == run.variant \
        else (f"{run.variant}={script}",)
    sets = tuple(f"{k}={v}" for k, v in run.flags.items()
                 if k not in SWEEP_WRITES and own.get(f"--{k}") != v)
    return run_root(run.flags.get("checkpoints_path", "runs"), cwd, run), defines, sets


def reproduce_sweeps(runs: list[RunRecord]) -> list[Sweep]:
    """Sweeps (variants x datasets x seeds, one --set) that make exactly the runs: grouped by root and settings,
    then the variants with the same seeds on a dataset share a sweep, and so do the datasets with the same
    variants and seeds.  A run without a command.txt is left out (header() counts them)."""
    seeds_of: dict[tuple, dict[tuple[str, str], list[int]]] = {}
    for run in sorted(runs, key=lambda r: r.seed):
        if run.command:
            seeds_of.setdefault(sweep_key(run), {}).setdefault((run.variant, run.dataset), []).append(run.seed)
    sweeps = []
    for (root, defines, sets), cells in seeds_of.items():
        variants_of: dict[tuple, list[str]] = {}
        for (variant, dataset), seeds in cells.items():
            variants_of.setdefault((dataset, tuple(seeds)), []).append(variant)
        datasets_of: dict[tuple, list[str]] = {}
        for (dataset, seeds), variants in sorted(variants_of.items(), key=lambda item: dataset_key(item[0][0])):
            datasets_of.setdefault((tuple(sorted(variants, key=variant_key)), seeds), []).append(dataset)
        sweeps += [Sweep(list(variants), datasets, list(seeds), root, list(sets),
                         [d for d in defines if d.split("=")[0] in variants])
                   for (variants, seeds), datasets in datasets_of.items()]
    return sorted(sweeps, key=lambda s: (variant_key(s.variants[0]), dataset_key(s.datasets[0]), s.seeds, s.sets))


def full_budget(variant: str, dataset: str) -> int:
    """The method's own budget of updates on the dataset: max_steps of its config (DT 100k, the others 1M as in
    D4RL); a peer variant takes that of our script of the same algorithm."""
    from make_configs import config_name
    from sweep import VARIANTS

    algo = variant.removeprefix("d3rlpy_")
    script = PEER_SCRIPTS.get(algo, algo) if variant.startswith("d3rlpy_") else VARIANTS.get(variant, (variant,))[0]
    path = PROJECT / "configs" / script / f"{config_name(dataset)}.yaml"
    if path.is_file():
        import yaml

        return int((yaml.safe_load(path.read_text()) or {}).get("max_steps", 1_000_000))
    return 1_000_000


def gpu_sweeps(sweeps: list[Sweep]) -> list[Sweep]:
    """The same sweeps at the full budget on a GPU, in their own root: the scaled-down --set items dropped,
    max_steps each method's own (a sweep splits where its variants' budgets differ), paths into the CPU root
    moved to the GPU root (e.g. dynamics_path)."""
    out = []
    for s in sweeps:
        kept = [item.replace(s.root.rstrip("/") + "/", "runs/d4rl/") for item in s.sets
                if item.split("=", 1)[0] not in SCALED_DOWN]
        by_budget: dict[int, list[str]] = {}
        for variant in s.variants:
            by_budget.setdefault(full_budget(variant, s.datasets[0]), []).append(variant)
        out += [Sweep(variants, s.datasets, s.seeds, "runs/d4rl", [*kept, f"max_steps={budget}", *GPU_BUDGET],
                      [d for d in s.defines if d.split("=")[0] in variants]) for budget, variants in by_budget.items()]
    return out


def gpu_commands(sweeps: list[Sweep]) -> list[str]:
    return list(dict.fromkeys(s.command("N", "results/runs-d4rl") for s in gpu_sweeps(sweeps)))


def header(runs: list[RunRecord], commands: list[str], roots: list[Path], reproduce: str) -> list[str]:
    """Runs, budget, device, date: the lines every table, plot and the README start with.  commands: the sweep
    commands that made the runs, listed in the file reproduce when there are several."""
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
    if runs and all(not r.machine for r in runs):
        device += f" (runs did not record their machine; this machine: {machine_description()})"
    logs = f"logs in {', '.join(f'`{display(root)}`' for root in roots)}"
    unknown = sum(not r.command for r in runs)
    made = (f"made by `{commands[0]}`" if len(commands) == 1 else
            f"made by the {len(commands)} sweep commands in `{reproduce}`" if commands else "made by commands unknown")
    made += f" ({unknown} of them without a command.txt)" if unknown and commands else ""
    return [
        f"Runs: {plural(len(runs), 'run')}, {made} ({logs}).",
        f"Budget: {values('max_steps')} updates per run (final evaluation at "
        f"{', '.join(map(steps_text, reached)) or '-'}); evaluation every {values('eval_every')} updates, "
        f"{values('eval_episodes')} episode(s); seeds {', '.join(map(str, seeds)) or '-'}.",
        f"Device: {device}.",
        f"Made by `python tools/make_results.py` on {datetime.date.today().isoformat()}.",
    ]


def display(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(PROJECT)) if path.is_relative_to(PROJECT) else str(path)


def problems(runs: list[RunRecord], roots: list[Path]) -> list[str]:
    """Failed runs (their error.txt's last line) and runs whose last evaluation is before max_steps."""
    found, failed = [], set()
    for root in roots:
        for error in sorted(root.rglob("error.txt")):
            parts = error.parent.relative_to(root).parts
            failed.add(parts)
            last = error.read_text().strip().splitlines()[-1:] or ["?"]
            found.append(f"{'/'.join(parts)}: failed: {last[0]}")
    for r in runs:
        target = r.config.get("max_steps")
        if (r.variant, *r.dataset.split("/"), f"seed{r.seed}") in failed:
            continue
        if not r.evaluations:
            found.append(f"{r.variant}/{r.dataset}/seed{r.seed}: no evaluation in its log")
        elif target is not None and r.steps[-1] < int(target):
            found.append(f"{r.variant}/{r.dataset}/seed{r.seed}: unfinished, last evaluation at update "
                         f"{r.steps[-1]} of {target} (its final score is that evaluation's)")
    return found


def plot_curves(runs: list[RunRecord], path: Path, caption: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r.dataset for r in runs if r.evaluations}, key=dataset_key)
    variants = sorted({r.variant for r in runs if r.evaluations}, key=variant_key)
    colors = palette(variants)
    cols = min(3, max(1, len(datasets)))
    rows = max(1, math.ceil(len(datasets) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, dataset in zip(axes.flat, datasets):
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
            style = "--" if variant.startswith("d3rlpy_") else "-"
            ax.plot(steps, mean, style, color=colors[variant], label=f"{variant} ({seeds} seeds)")
            ax.fill_between(steps, mean - std, mean + std, color=colors[variant], alpha=0.2)
        ax.set_title(dataset, fontsize=10)
        ax.set_xlabel("updates")
        ax.set_ylabel("normalized score")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(datasets):]:
        ax.axis("off")
    finish_figure(fig, caption, cols, rows, path)


def palette(variants: list[str]) -> dict:
    """A fixed color per variant: the ten dark shades of tab20 first, then its ten light ones."""
    import matplotlib.pyplot as plt

    return {v: plt.get_cmap("tab20")((2 * i) % 20 + (i // 10) % 2) for i, v in enumerate(variants)}


def finish_figure(fig, caption: str, cols: float, rows: float, path: Path) -> None:
    """How the runs were made, as a caption under the plots (about 13 characters an inch at 8 points)."""
    import matplotlib.pyplot as plt

    caption = "\n".join(textwrap.fill(line, int(12 * 5 * cols)) for line in caption.splitlines())
    bottom = 0.1 + 0.14 * (caption.count("\n") + 1)
    fig.set_size_inches(5 * cols, 3.6 * rows + bottom)
    fig.text(0.01, 0.01, caption, fontsize=8, ha="left", va="bottom")
    fig.tight_layout(rect=(0, bottom / (3.6 * rows + bottom), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_profiles(table, variants: list[str], path: Path, caption: str) -> list[str]:
    """Performance profiles on the core datasets: the fraction of (dataset, seed) runs whose final score
    exceeds tau, with stratified bootstrap 95% bands (given 2 seeds on each), for the variants with runs on all
    of them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    complete = [v for v in variants if all(cell(table, v, d) for d in CORE)]
    high = max([110.0, *[max(cell(table, v, d).values) for v in complete for d in CORE]])
    taus = np.linspace(0.0, high, int(2 * high) + 1)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = palette(variants)
    for variant in complete:
        samples = [cell(table, variant, d).values for d in CORE]
        fractions, low, high = bootstrap_arrays(
            samples, lambda *xs: (np.concatenate(xs)[:, None] > taus[None, :]).mean(0))
        style = "--" if variant.startswith("d3rlpy_") else "-"
        banded = min(len(s) for s in samples) >= MIN_SEEDS  # one seed on a dataset: no band, as no IQM CI
        ax.plot(taus, fractions, style, color=colors[variant], label=variant if banded else f"{variant} (no band)")
        if banded:
            ax.fill_between(taus, low, high, color=colors[variant], alpha=0.15)
    ax.set_xlabel(r"normalized score $\tau$")
    ax.set_ylabel(r"fraction of runs with score $> \tau$")
    ax.set_title("Performance profiles on the core datasets\n" + ", ".join(CORE), fontsize=8)
    ax.grid(alpha=0.3)
    if complete:
        ax.legend(fontsize=7, ncol=2)
    else:
        ax.text(0.5, 0.5, "no variant has runs on all core datasets yet", ha="center", transform=ax.transAxes)
    finish_figure(fig, caption, 1.4, 1.25, path)
    return complete


# --- claims: each returns (verdict, lines of numbers); a part is (True | False | None for missing, its line)


def decide(parts: list[tuple[Optional[bool], str]]) -> tuple[str, list[str]]:
    """FAIL when a decided part fails; otherwise NOT RUN when a part is missing (or there is none); else PASS."""
    results = [ok for ok, _ in parts]
    verdict = "FAIL" if False in results else "NOT RUN" if None in results or not results else "PASS"
    return verdict, [line for _, line in parts]


def missing_seeds(table, variants: list[str], dataset: str) -> Optional[str]:
    """Why the cells cannot give an interval (a variant not run, or fewer than MIN_SEEDS seeds), or None."""
    reasons = []
    for v in variants:
        stat = cell(table, v, dataset)
        if stat is None:
            reasons.append(f"{v} not run on {dataset}")
        elif stat.n < MIN_SEEDS:
            reasons.append(f"{v} has {plural(stat.n, 'seed')} on {dataset} (an interval needs {MIN_SEEDS})")
    return "; ".join(reasons) or None


def greater(table, a: str, b: str, dataset: str) -> tuple[Optional[bool], str]:
    """a > b on dataset: the 95% CI of mean(a) - mean(b) lies above 0."""
    missing = missing_seeds(table, [a, b], dataset)
    if missing:
        return None, f"{dataset}: {a} > {b}: missing: {missing}."
    sa, sb = cell(table, a, dataset), cell(table, b, dataset)
    diff, low, high = difference_interval(sa.values, sb.values)
    ok = low > 0
    return ok, (f"{dataset}: {a} {sa.text()} - {b} {sb.text()} = {diff:+.1f}, 95% CI {interval_text(low, high)}: "
                f"{'above 0, supports' if ok else 'not above 0, does not support'} {a} > {b}.")


def claim_td_beats_bc(table, runs) -> tuple[str, list[str]]:
    parts = []
    for dataset in CORE_MEDIUM_REPLAY:
        ran = [m for m in TD_METHODS if cell(table, m, dataset)]
        if not ran:
            parts.append((None, f"{dataset}: missing: no TD method ({', '.join(TD_METHODS)}) run."))
        decided = [m for m in ran if cell(table, m, dataset).n >= MIN_SEEDS] or ran
        parts += [greater(table, method, "bc", dataset) for method in decided]
        parts += [(True, shown_not_decided(table, method, "bc", dataset)) for method in ran if method not in decided]
        if ran and len(ran) < len(TD_METHODS):
            parts.append((True, f"{dataset}: not run (decided without them): "
                                f"{', '.join(m for m in TD_METHODS if m not in ran)}."))
    return decide(parts)


def shown_not_decided(table, a: str, b: str, dataset: str) -> str:
    """The line of a method with too few seeds for an interval, beside methods that decide the claim."""
    sa, sb = cell(table, a, dataset), cell(table, b, dataset)
    difference = f" - {b} {sb.text()} = {sa.mean - sb.mean:+.1f}" if sb else ""
    return (f"{dataset}: {a} {sa.text()}{difference}: {plural(sa.n, 'seed')}, shown, not decided (an interval "
            f"needs {MIN_SEEDS}).")


def claim_filtering_helps(table, runs) -> tuple[str, list[str]]:
    return decide([greater(table, "bc_10", "bc", dataset) for dataset in CORE_MEDIUM_REPLAY])


def claim_dt_between(table, runs) -> tuple[str, list[str]]:
    parts = []
    missing = missing_seeds(table, ["dt", "bc_10"], HOPPER_MEDIUM_EXPERT)
    if missing:
        parts.append((None, f"{HOPPER_MEDIUM_EXPERT}: dt close to bc_10: missing: {missing}."))
    else:
        dt, bc_10 = cell(table, "dt", HOPPER_MEDIUM_EXPERT), cell(table, "bc_10", HOPPER_MEDIUM_EXPERT)
        diff, low, high = difference_interval(dt.values, bc_10.values)
        ok = -CLOSE <= low and high <= CLOSE
        parts.append((ok, f"{HOPPER_MEDIUM_EXPERT}: dt {dt.text()} - bc_10 {bc_10.text()} = {diff:+.1f}, 95% CI "
                          f"{interval_text(low, high)}: {'inside' if ok else 'not inside'} ±{CLOSE:g}, "
                          f"{'supports' if ok else 'does not support'} dt close to %BC."))
    for dataset in CORE_MEDIUM_REPLAY:
        ran = [m for m in TD_METHODS if cell(table, m, dataset) and cell(table, m, dataset).n >= MIN_SEEDS]
        if not ran:
            parts.append((None, f"{dataset}: dt below the best TD method: missing: no TD method with "
                                f"{MIN_SEEDS} seeds."))
            continue
        best = max(ran, key=lambda m: cell(table, m, dataset).mean)
        ok, line = greater(table, best, "dt", dataset)
        parts.append((ok, line.replace(f"{dataset}: ", f"{dataset}: best TD method {best}: ", 1)))
    return decide(parts)


def target_scores(record: dict) -> dict[float, float]:
    """DT's normalized score per conditioning target in one evaluation record."""
    found = {}
    for key, value in record.items():
        for pattern in TARGET_KEYS:
            match = pattern.match(key)
            if match:
                try:
                    found[float(match["target"])] = value
                except ValueError:
                    pass
    return found


def claim_dt_conditioning(table, runs) -> tuple[str, list[str]]:
    parts = []
    for dataset in CORE:
        dt_runs = [r for r in runs if r.variant == "dt" and r.dataset == dataset and r.evaluations]
        if not dt_runs:
            continue
        per_seed = [target_scores(r.final) for r in dt_runs]
        targets = sorted(set.intersection(*(set(s) for s in per_seed)))
        if len(targets) < 2 or len(dt_runs) < MIN_SEEDS:
            parts.append((None, f"{dataset}: missing: {plural(len(dt_runs), 'dt seed')} with "
                                f"{plural(len(targets), 'common target')} (eval/target_<R>/normalized_score); "
                                f"{MIN_SEEDS} seeds and 2 targets needed."))
            continue
        low_t, high_t = targets[0], targets[-1]
        rises = [s[high_t] - s[low_t] for s in per_seed]
        diff, low, high = mean_interval(rises)
        means = ", ".join(f"R_hat_1 = {t:g}: {np.mean([s[t] for s in per_seed]):.1f}" for t in targets)
        ok = low > 0
        parts.append((ok, f"{dataset}: dt's mean score per target: {means}; score at {high_t:g} - score at {low_t:g}, "
                          f"per seed ({len(rises)} seeds): {diff:+.1f}, 95% CI {interval_text(low, high)}: "
                          f"{'above 0, supports' if ok else 'not above 0, does not support'} the claim."))
    if not parts:
        parts.append((None, f"missing: dt not run on any core dataset ({', '.join(CORE)})."))
    return decide(parts)


def q_and_return(run: RunRecord) -> Optional[tuple[float, float, int]]:
    """(Q(s0, pi(s0)), discounted Monte Carlo return, step) at the run's last evaluation that logged both."""
    for record in reversed(run.evaluations):
        g = record.get(DISCOUNTED_RETURN, record.get(LEGACY_DISCOUNTED_RETURN))
        if Q_INITIAL in record and g is not None:
            return record[Q_INITIAL], g, record["step"]
    return None


def q_gaps(runs, variant: str, dataset: str) -> tuple[list[tuple[int, float, float, int]], Optional[str]]:
    """[(seed, Q, G, step)] of the variant's runs on the dataset, or why there are not enough of them."""
    mine = [r for r in runs if r.variant == variant and r.dataset == dataset and r.evaluations]
    found = [(r.seed, *q) for r in mine if (q := q_and_return(r)) is not None]
    if not mine:
        return found, f"{variant} not run on {dataset}"
    if len(found) < len(mine):
        return found, (f"{len(mine) - len(found)} of {plural(len(mine), variant + ' seed')} on {dataset} logged no "
                       f"{Q_INITIAL} and {DISCOUNTED_RETURN}")
    if len(found) < MIN_SEEDS:
        return found, f"{variant} has {plural(len(found), 'seed')} on {dataset} (an interval needs {MIN_SEEDS})"
    return found, None


def seed_lines(found) -> str:
    return "; ".join(f"seed {seed}: Q = {q:.1f}, G = {g:.1f} (update {steps_text(step)})" for seed, q, g, step in found)


def still_rising(runs, variant: str, dataset: str) -> Optional[str]:
    """A sentence when Q(s0, pi(s0)) rose between the last two evaluations of every seed (a critic still
    converging from its initial values lies below the return without testing the bound), else None."""
    pairs = []
    for run in (r for r in runs if r.variant == variant and r.dataset == dataset):
        logged = [record[Q_INITIAL] for record in run.evaluations if Q_INITIAL in record]
        if len(logged) < 2 or logged[-1] <= logged[-2]:
            return None
        pairs.append(f"{logged[0]:.1f} -> {logged[-2]:.1f} -> {logged[-1]:.1f}")
    return (f" Q(s0, pi(s0)) was still rising at the final evaluation on every seed (first, last two: "
            f"{'; '.join(pairs)}): the critic had not converged, so this budget tests the bound only weakly."
            if pairs else None)


def claim_cql_lower_bound(table, runs) -> tuple[str, list[str]]:
    parts, few = [], []
    for dataset in CORE:
        if not any(r.variant == "cql" and r.dataset == dataset for r in runs):
            continue
        found, missing = q_gaps(runs, "cql", dataset)
        evaluated = sum(r.variant == "cql" and r.dataset == dataset and bool(r.evaluations) for r in runs)
        if 0 < len(found) == evaluated < MIN_SEEDS:  # every seed logged Q and G, but too few seeds
            few.append((dataset, found, missing))
            continue
        if missing:
            parts.append((None, f"{dataset}: missing: {missing}."))
            continue
        gaps = [q - g for _, q, g, _ in found]
        diff, low, high = mean_interval(gaps)
        ok = all(gap < 0 for gap in gaps) and high < 0
        parts.append((ok, f"{dataset}: Q(s0, pi(s0)) - G per seed at the final evaluation: {seed_lines(found)}; "
                          f"mean Q - G = {diff:+.1f}, 95% CI {interval_text(low, high)}: "
                          f"{'every seed below, supports' if ok else 'not every seed below, does not support'} "
                          f"the lower bound." + (still_rising(runs, "cql", dataset) or "")))
    for dataset, found, missing in few:  # decided on the other datasets when they have the seeds
        below = all(q < g for _, q, g, _ in found)
        parts.append((True if parts else None,
                      f"{dataset}: Q(s0, pi(s0)) - G per seed at the final evaluation: {seed_lines(found)}: "
                      f"{'below' if below else 'not below'} G; {missing}: shown, not decided."))
    if not parts:
        parts.append((None, f"missing: cql not run on any core dataset ({', '.join(CORE)})."))
    return decide(parts)


def claim_mopo_penalty(table, runs) -> tuple[str, list[str]]:
    return decide([greater(table, "mopo", "mopo_nopen", HOPPER_MEDIUM_REPLAY)])


def claim_iql_beats_awr(table, runs) -> tuple[str, list[str]]:
    return decide([greater(table, "iql", "awr", dataset) for dataset in CORE_MEDIUM_REPLAY])


def claim_extrapolation_error(table, runs) -> tuple[str, list[str]]:
    parts = []
    for dataset in CORE_MEDIUM_REPLAY:
        found, missing = q_gaps(runs, "td3_nobc", dataset)
        if missing:
            parts.append((None, f"{dataset}: td3_nobc overestimates: missing: {missing}."))
        else:
            gaps = [q - g for _, q, g, _ in found]
            threshold = FAR * abs(float(np.mean([g for _, _, g, _ in found])))
            diff, low, high = mean_interval(gaps)
            ok = low > threshold
            reference = ""
            bc_found, bc_missing = q_gaps(runs, "td3_bc", dataset)
            if bc_found and not bc_missing:
                reference = f" (td3_bc for reference: mean Q - G = {np.mean([q - g for _, q, g, _ in bc_found]):+.1f})"
            parts.append((ok, f"{dataset}: td3_nobc Q(s0, pi(s0)) vs G per seed: {seed_lines(found)}; mean Q - G = "
                              f"{diff:+.1f}, 95% CI {interval_text(low, high)}, far above means above {FAR:g} abs(G) = "
                              f"{threshold:.1f}: {'supports' if ok else 'does not support'} the overestimation"
                              f"{reference}."))
        parts.append(greater(table, "td3_bc", "td3_nobc", dataset))
    return decide(parts)


CLAIMS = [
    ("TD methods beat BC on medium-replay",
     "The TD methods improve on BC on medium-replay (policy improvement, stitching): for every TD method run "
     f"({', '.join(TD_METHODS)}) with {MIN_SEEDS} seeds or more, its score minus bc's has a 95% CI above 0 on each "
     "core medium-replay dataset (a method with fewer seeds is shown, not decided).",
     claim_td_beats_bc),
    ("filtering helps BC",
     "Filtering helps BC on mixed data: bc_10 (%BC, the best 10% of the trajectories) minus bc has a 95% CI above 0 "
     "on each core medium-replay dataset.", claim_filtering_helps),
    ("DT near %BC, below TD",
     f"DT is close to %BC on medium-expert (dt - bc_10 has a 95% CI inside ±{CLOSE:g} points on "
     f"{HOPPER_MEDIUM_EXPERT}) and below the best TD method on medium-replay (best - dt has a 95% CI above 0 on "
     "each core medium-replay dataset).", claim_dt_between),
    ("DT follows its target",
     "DT's return rises with its conditioning target (conditional control): the score at the highest target minus "
     "the score at the lowest, per seed, has a 95% CI above 0 on each core dataset dt ran on.",
     claim_dt_conditioning),
    ("CQL lower-bounds the return",
     "CQL's Q(s0, pi(s0)) lies below the policy's discounted Monte Carlo return G (a lower bound): Q - G < 0 at the "
     f"final evaluation for every seed, on each core dataset cql ran on with {MIN_SEEDS} seeds or more (a dataset "
     "with fewer is shown, not decided).", claim_cql_lower_bound),
    ("MOPO's penalty matters",
     "MOPO's uncertainty penalty matters where the model is imperfect (model exploitation): mopo - mopo_nopen "
     f"(penalty off) has a 95% CI above 0 on {HOPPER_MEDIUM_REPLAY}.", claim_mopo_penalty),
    ("IQL beats AWR on poor behavior",
     "AWR's behavior-policy value falls short of IQL where the behavior is poor: iql - awr has a 95% CI above 0 on "
     "each core medium-replay dataset.", claim_iql_beats_awr),
    ("TD3 without BC overestimates",
     "Extrapolation error: TD3 without its BC term (td3_nobc) overestimates, Q(s0, pi(s0)) - G with a 95% CI above "
     f"{FAR:g} abs(G) (Q far above the observed discounted return), and scores below TD3+BC (td3_bc - td3_nobc has a "
     "95% CI above 0), on each core medium-replay dataset.", claim_extrapolation_error),
]


def check_claims(table, runs) -> list[tuple[str, str, list[str]]]:
    return [(text, *check(table, runs)) for _, text, check in CLAIMS]


def write_claims(claims, head: list[str], path: Path) -> None:
    lines = ["# The chapter's claims, checked against the MuJoCo runs", "", *[f"{line}  " for line in head], "",
             "Each claim is decided on 95% bootstrap intervals of the final normalized scores (last evaluation), "
             f"{REPS} resamples, the seeds resampled within each side: PASS when the interval supports the claim, "
             "FAIL when it does not, NOT RUN (naming the missing runs) only when runs are absent. Scores are shown "
             f"as mean ± std over seeds (n, updates); an interval needs {MIN_SEEDS} seeds a side. Core datasets: "
             f"{', '.join(CORE)}.", "",
             "| # | claim | verdict |", "|---|---|---|"]
    lines += [f"| {i} | {text} | {result} |" for i, (text, result, _) in enumerate(claims, 1)]
    for i, (text, result, details) in enumerate(claims, 1):
        lines += ["", f"## {i}. {result}: {text}", "", *[f"- {d}" for d in details]]
    path.write_text("\n".join(lines) + "\n")


# --- the README's results section


def reproduce_blocks(commands: list[str], gpu: list[str]) -> list[str]:
    """The CPU commands that made the runs, then the same sweeps at the full budget on a GPU."""
    return ["Reproduce these runs on CPU (each finished run is committed to `results/runs`, which "
            "`python tools/make_results.py` reads):", "", "```bash",
            *(commands or ["# no run has a command.txt"]), "python tools/make_results.py", "```", "",
            "The full budget on a GPU (each method's own, from its config: on MuJoCo 1M updates, DT 100k; "
            "evaluation every 5k; the CPU's scaled-down settings dropped): the same sweeps with N runs at a time (as many as the GPU's "
            "memory holds), then `python tools/make_results.py --root results/runs-d4rl`:", "", "```bash",
            *(gpu or ["# no run has a command.txt"]), "```"]


def write_reproduce(suites: dict[str, tuple[list[str], list[str], list[str]]], path: Path) -> None:
    """reproduce.md: per suite its header, the CPU commands that made its runs and the GPU commands."""
    lines = ["# Reproducing the runs", ""]
    for name, (head, commands, gpu) in suites.items():
        if head:
            lines += [f"## {name}", "", *[f"{line}  " for line in head], "", *reproduce_blocks(commands, gpu), ""]
    path.write_text("\n".join(lines))


def readme_section(head: list[str], agg: dict, table, peer: list[dict], claims, commands: list[str],
                   gpu: list[str], pendulum_head: list[str]) -> list[str]:
    lines = ["### MuJoCo locomotion (local D4RL-style datasets)", "", *[f"{line}  " for line in head], "",
             f"Aggregate over the core datasets: interquartile mean of the final normalized score over (dataset, "
             f"seed) with a stratified bootstrap 95% CI (rliable); performance profiles in "
             f"[results/profiles.png](results/profiles.png):", "", *aggregate_table(agg), "",
             "Final normalized score per dataset, mean ± std over seeds (n = seeds, then the updates behind the "
             "score; full tables with the best scores: [results/scores.md](results/scores.md)):", "",
             *suite_table(table, HEADLINE), "",
             "Ours beside the peer library d3rlpy on the core datasets, the pairs with a run (every pair: "
             "[results/peer.md](results/peer.md)):", "",
             *peer_table([r for r in peer if r["dataset"] in CORE and (r["ours"] or r["peer"])]), "",
             "The chapter's claims, decided on 95% intervals (the numbers: [results/claims.md](results/claims.md); "
             "sanity of the normalization: [results/sanity.md](results/sanity.md)):", "",
             *markdown_table(["#", "claim", "verdict"],
                             [[str(i), short, result] for i, ((short, _, _), (_, result, _)) in
                              enumerate(zip(CLAIMS, claims), 1)]), "",
             *reproduce_blocks(commands, gpu), "",
             "![learning curves](results/curves.png)", "", "![performance profiles](results/profiles.png)", "",
             "### Pendulum (the small local datasets)", ""]
    if not pendulum_head:
        lines.append("No Pendulum run in the run roots.")
    else:
        lines += [*[f"{line}  " for line in pendulum_head], "", "Final normalized score, mean ± std over seeds:", "",
                  *suite_table(table, PENDULUM), "", "![Pendulum learning curves](results/curves-pendulum.png)"]
    return lines


def update_readme(readme: Path, section: list[str]) -> None:
    """Rewrites the README's results section (between its two marker lines)."""
    begin, end = "<!-- results: begin -->", "<!-- results: end -->"
    text = readme.read_text()
    if begin not in text or end not in text:
        return
    readme.write_text(text[:text.index(begin)] + "\n".join([begin, "", *section, "", end])
                      + text[text.index(end) + len(end):])


def make_results(root: str | Path | list, out: str | Path = PROJECT / "results", command: Optional[str] = None,
                 readme: Optional[Path] = None) -> list:
    """Writes every table and plot (see the module docstring); returns the claims (text, verdict, numbers).
    readme: the README whose results section to rewrite (default: the project's, when out is its results/)."""
    roots = [Path(r) for r in (root if isinstance(root, (list, tuple)) else [root])]
    out = Path(out)
    runs = load_runs(roots)
    if not any(r.evaluations for r in runs):
        raise SystemExit(f"error: no run with an evaluation under {', '.join(map(str, roots))} "
                         f"(looked for */<dataset_id>/seed*/log.jsonl).")
    out.mkdir(parents=True, exist_ok=True)
    by_suite = {s: [r for r in runs if suite(r.dataset) == s] for s in (HEADLINE, PENDULUM)}
    sweeps = {s: reproduce_sweeps(by_suite[s]) for s in by_suite}
    commands = {s: [command] if command else [w.command() for w in sweeps[s]] for s in by_suite}
    gpu = {s: gpu_commands(sweeps[s]) for s in by_suite}
    reproduce = display(out / "reproduce.md")
    head = header(by_suite[HEADLINE], commands[HEADLINE], roots, reproduce)
    pendulum_head = header(by_suite[PENDULUM], commands[PENDULUM], roots, reproduce) if by_suite[PENDULUM] else []
    write_reproduce({HEADLINE: (head if by_suite[HEADLINE] else [], commands[HEADLINE], gpu[HEADLINE]),
                     PENDULUM: (pendulum_head, commands[PENDULUM], gpu[PENDULUM])}, out / "reproduce.md")
    table = score_table(runs)
    variants, _ = grid(table, HEADLINE)
    agg = aggregate(table, variants)
    write_scores(table, head, pendulum_head, agg, problems(runs, roots), dataset_builds(runs), out)
    peer = peer_rows(table)
    write_peer(peer, head, out)
    write_sanity(table, head, out)
    caption = "\n".join(head).replace("`", "")
    plot_profiles(table, variants, out / "profiles.png", caption)
    if any(r.evaluations for r in by_suite[HEADLINE]):
        plot_curves(by_suite[HEADLINE], out / "curves.png", caption)
    if any(r.evaluations for r in by_suite[PENDULUM]):
        plot_curves(by_suite[PENDULUM], out / "curves-pendulum.png", "\n".join(pendulum_head).replace("`", ""))
    claims = check_claims(table, runs)
    write_claims(claims, head, out / "claims.md")
    if readme is None and out.resolve() == (PROJECT / "results").resolve():
        readme = PROJECT / "README.md"
    if readme is not None:
        update_readme(readme, readme_section(head, agg, table, peer, claims, commands[HEADLINE], gpu[HEADLINE],
                                             pendulum_head))
    return claims


def main(argv: Optional[list[str]] = None) -> int:
    global REPS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", nargs="+", default=[str(PROJECT / DEFAULT_ROOT)],
                        help=f"run roots: the --commit-dir of tools/sweep.py (default {DEFAULT_ROOT}) or its --root")
    parser.add_argument("--out", default=str(PROJECT / "results"), help="where the tables and the plots go")
    parser.add_argument("--command", default=None,
                        help="the sweep command that made the runs (default: derived from each run's command.txt)")
    parser.add_argument("--reps", type=int, default=REPS, help="bootstrap resamples")
    args = parser.parse_args(argv)
    REPS = args.reps
    claims = make_results(args.root, args.out, args.command)
    for i, (text, result, _) in enumerate(claims, 1):
        print(f"claim {i}: {result:7s} {CLAIMS[i - 1][0]}")
    print(f"wrote {Path(args.out) / 'scores.md'}, scores.csv, aggregate.csv, profiles.png, curves.png, peer.md, "
          f"peer.csv, claims.md, sanity.md, reproduce.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
