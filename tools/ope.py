"""Off-policy evaluation of the benchmark's policies: how well FQE, from data alone, ranks them.

  python -m tools.ope --root runs/bench --datasets local/halfcheetah/medium-replay-v0 --set max_steps=100000
  python -m tools.ope --report-only          # the report from the committed files alone (a fresh clone)

For every finished run under ROOT (ROOT/<variant>/<dataset_id>/seed<S>/ with finished.json and
policy_weights.pt, the weights-only form of policy.pt2), algorithms/fqe.py estimates J = E_{s0}[Q(s0, pi(s0))]
from the run's own dataset in
ROOT/fqe/<variant>/<dataset_id>/seed<S>/ (compiled update, no wandb; --set overrides any field), two at a
time, one thread each. Each finished estimate's small files (estimate.json, log.jsonl, run.json, command.txt) are
committed to COMMIT_DIR/<variant>/<dataset_id>/seed<S>/ (default results/fqe), and a policy whose estimate
is committed is not estimated again, so the work spans sessions.

The report is made from the committed files only: FQE's estimates (COMMIT_DIR) against what each policy
measured in the environment at the end of its training (the benchmark's last evaluation in
RUNS/<variant>/<dataset_id>/seed<S>/finished.json, default results/runs: eval/return and
eval/discounted_return over its episodes). Per dataset:
  - Spearman rank correlation between the estimates and the measured returns;
  - regret@1: the normalized score of the best policy minus that of FQE's favorite;
  - relative error |J - G| / |G| against the measured discounted return G (J is a discounted value), median;
  - drift: |J_T - J_T'| / |J_T| between the last two of FQE's evaluations (T' = T - eval_every), median:
    how far from converged the estimates are at the budget used;
the first three with a 95% bootstrap interval over policies (resampled with replacement); a scatter plot.
Writes OUT/ope.md, OUT/ope.csv, OUT/ope.png. Decision Transformer's and BCQ's policies are skipped: FQE needs a
state -> action network and DT's acts on a context, BCQ's samples and maximizes.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tools.make_configs import config_name
from tools.processes import copy_in_order, run_child, stop_runs

ROOT = Path(__file__).resolve().parents[1]
BOOTSTRAP = 2000
MIN_POLICIES = 3  # a ranking needs at least three policies
COMMITTED_FILES = ("command.txt", "run.json", "log.jsonl", "estimate.json")  # estimate.json last: it marks a finished copy
FQE_DEFAULTS = ["--compile", "true", "--logging", "disabled"]  # the compiled update is ~2x faster on a CPU


# Policies without a weights-only form: fqe.py evaluates a state -> action MLP, read from policy_weights.pt.
NO_WEIGHTS = {"bcq": "its policy samples from a VAE, perturbs and takes the argmax of Q, no single network",
              "dt": "its policy acts on a context, not on one state"}


def finished_runs(root: Path, datasets: list[str] | None = None) -> list[dict]:
    """Benchmark runs with a final evaluation and a state -> action policy in its weights-only form,
    policy_weights.pt (loaded with weights_only=True by fqe.py: no file under root can run code; policy.pt2, whose
    loading runs code, is never read).  Each run without one is named on one line."""
    runs = []
    for run in measured_runs(root, datasets):
        if (run["run_dir"] / "policy_weights.pt").is_file():
            runs.append(run)
            continue
        try:
            algo = json.loads((run["run_dir"] / "run.json").read_text())["algo"]
        except Exception:  # noqa: BLE001 - no readable run.json
            algo = run["variant"]
        why = NO_WEIGHTS.get(algo, "no policy_weights.pt (runs before issue 45 wrote only policy.pt2: rerun it)")
        print(f"skipped {run['run_dir']}: {why}.", file=sys.stderr)
    return runs


def measured_runs(root: Path, datasets: list[str] | None = None) -> list[dict]:
    """Every finished run under root (ROOT/<variant>/<dataset_id>/seed<S>/finished.json) with what its last
    evaluation measured; DT's, the peer's and FQE's own runs are left out."""
    runs = []
    for marker in sorted(root.glob("*/**/finished.json")):
        run_dir = marker.parent
        variant = run_dir.relative_to(root).parts[0]
        dataset = "/".join(run_dir.relative_to(root).parts[1:-1])
        if variant in ("fqe", "dt") or variant.startswith("d3rlpy_") or (datasets and dataset not in datasets):
            continue
        final = json.loads(marker.read_text())
        if "eval/return" not in final:
            continue
        runs.append({"variant": variant, "dataset": dataset, "seed": run_dir.name, "run_dir": run_dir,
                     "return": final["eval/return"], "discounted_return": final.get("eval/discounted_return", np.nan),
                     "normalized_score": final.get("eval/normalized_score", np.nan)})
    return runs


def run_key(run: dict) -> Path:
    return Path(run["variant"], *run["dataset"].split("/"), run["seed"])


def estimate(root: Path, run: dict, sets: list[str], commit_dir: Path) -> dict:
    """fqe.py for one policy, unless its estimate is committed already; returns the run or its error."""
    committed = commit_dir / run_key(run)
    if (committed / "estimate.json").exists():
        return run
    out = root / "fqe" / run_key(run)
    if not (out / "estimate.json").exists():
        out.mkdir(parents=True, exist_ok=True)
        config = ROOT / "configs" / "fqe" / f"{config_name(run['dataset'])}.yaml"
        # fqe.py works in its run directory, so that MuJoCo's MUJOCO_LOG.TXT (written to the working directory) stays there
        args = [str(ROOT / "algorithms" / "fqe.py"), *(["--config_path", str(config)] if config.exists() else []),
                "--dataset_id", run["dataset"], "--policy_path", str(run["run_dir"].resolve() / "policy_weights.pt"),
                "--checkpoints_path", str(out.resolve()), "--seed", "0", *FQE_DEFAULTS, *sets]
        (out / "command.txt").write_text(f"cd {out.resolve()} && OMP_NUM_THREADS=1 python {' '.join(args)}\n")
        with open(out / "stdout.log", "a") as stdout, open(out / "stderr.log", "w") as stderr:
            code = run_child([sys.executable, *args], cwd=out, stdout=stdout, stderr=stderr,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        if code != 0 or not (out / "estimate.json").exists():
            return {**run, "error": (out / "stderr.log").read_text().strip().splitlines()[-1:] or [f"exit {code}"]}
    copy_in_order(out, committed, COMMITTED_FILES)
    return run


def committed_rows(commit_dir: Path, runs_dir: Path, datasets: list[str] | None) -> list[dict]:
    """Measured runs (runs_dir) joined with their committed estimates (commit_dir): estimate, and the drift
    between FQE's last two evaluations."""
    rows = []
    for run in measured_runs(runs_dir, datasets):
        committed = commit_dir / run_key(run)
        if not (committed / "estimate.json").exists():
            continue
        trace = [json.loads(line)["eval/estimate"] for line in (committed / "log.jsonl").read_text().splitlines()
                 if "eval/estimate" in line]
        final = json.loads((committed / "estimate.json").read_text())["estimate"]
        drift = abs(trace[-1] - trace[-2]) / abs(trace[-1]) if len(trace) > 1 else np.nan
        rows.append({**run, "estimate": final, "drift": drift, "fqe_updates": json.loads(
            (committed / "log.jsonl").read_text().splitlines()[-1])["step"]})
    return rows


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    rank = lambda v: np.argsort(np.argsort(v, kind="stable"), kind="stable").astype(float)  # noqa: E731
    rx, ry = rank(x), rank(y)
    if rx.std() == 0 or ry.std() == 0:
        return np.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def regret_at_1(estimates: np.ndarray, scores: np.ndarray) -> float:
    return float(scores.max() - scores[np.argmax(estimates)])


def relative_error(estimates: np.ndarray, discounted: np.ndarray) -> float:
    return float(np.median(np.abs(estimates - discounted) / np.abs(discounted)))


def with_interval(statistic, *columns: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """The statistic and its 95% percentile-bootstrap interval over policies."""
    rng = np.random.default_rng(seed)
    n = len(columns[0])
    values = []
    for _ in range(BOOTSTRAP):
        idx = rng.integers(0, n, n)
        value = statistic(*(c[idx] for c in columns))
        if np.isfinite(value):
            values.append(value)
    low, high = np.percentile(values, [2.5, 97.5]) if values else (np.nan, np.nan)
    return statistic(*columns), float(low), float(high)


def report(rows: list[dict], out: Path, command: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    estimated = [r for r in rows if "estimate" in r]
    datasets = sorted({r["dataset"] for r in estimated})
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "ope.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dataset", "variant", "seed", "fqe_estimate", "measured_discounted_return",
                         "measured_return", "normalized_score", "fqe_updates", "fqe_drift"])
        for r in estimated:
            writer.writerow([r["dataset"], r["variant"], r["seed"], f"{r['estimate']:.4f}",
                             f"{r['discounted_return']:.4f}", f"{r['return']:.4f}", f"{r['normalized_score']:.4f}",
                             r["fqe_updates"], f"{r['drift']:.4f}"])
    lines = ["# Off-policy evaluation: FQE ranks the benchmark's policies", "",
             f"Generated by `{command}` on {datetime.date.today()} from the runs' logs (tools/ope.py says how). "
             "Each row: the final policies of every variant and seed on that dataset (n policies), FQE's estimate "
             "J = E_s0[Q(s0, pi(s0))] from the dataset alone, against the return each policy measured in the "
             "environment at its last evaluation. Intervals: 95% bootstrap over policies. Drift: median change of the "
             "estimate between FQE's last two evaluations, relative (near 0: converged at this budget). "
             "Per-policy numbers: ope.csv; scatter: ope.png.", "",
             "| dataset | n policies | FQE updates | Spearman rho (estimate vs return) | regret@1 (normalized points) "
             "| median relative error vs discounted return | drift |", "|---|---:|---:|---|---|---|---:|"]
    for dataset in datasets:
        rs = [r for r in estimated if r["dataset"] == dataset]
        est = np.array([r["estimate"] for r in rs])
        ret = np.array([r["return"] for r in rs])
        disc = np.array([r["discounted_return"] for r in rs])
        score = np.array([r["normalized_score"] for r in rs])
        budgets = sorted({r["fqe_updates"] for r in rs})
        budget = str(budgets[0]) if len(budgets) == 1 else f"{budgets[0]}-{budgets[-1]}"
        if len(rs) < MIN_POLICIES:
            cells = ["fewer than 3 policies: not ranked"] * 2
        else:
            cells = [f"{v:.2f} [{lo:.2f}, {hi:.2f}]" for v, lo, hi in
                     (with_interval(spearman, est, ret), with_interval(regret_at_1, est, score))]
        error = "{:.2f} [{:.2f}, {:.2f}]".format(*with_interval(relative_error, est, disc))
        lines.append(f"| {dataset} | {len(rs)} | {budget} | {' | '.join(cells)} | {error} "
                     f"| {np.nanmedian([r['drift'] for r in rs]):.3f} |")
    failed = [r for r in rows if "error" in r]
    if failed:
        lines += ["", "FQE failed on:"] + [f"- {r['variant']}/{r['dataset']}/{r['seed']}: {r['error'][0]}" for r in failed]
    (out / "ope.md").write_text("\n".join(lines) + "\n")
    fig, axes = plt.subplots(1, max(len(datasets), 1), figsize=(4.5 * max(len(datasets), 1), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        rs = [r for r in estimated if r["dataset"] == dataset]
        for variant in sorted({r["variant"] for r in rs}):
            pts = [r for r in rs if r["variant"] == variant]
            ax.scatter([r["discounted_return"] for r in pts], [r["estimate"] for r in pts], label=variant, s=18)
        lims = [min(min(r["discounted_return"], r["estimate"]) for r in rs),
                max(max(r["discounted_return"], r["estimate"]) for r in rs)]
        ax.plot(lims, lims, color="0.6", lw=1, ls="--")
        ax.set_title(dataset, fontsize=9)
        ax.set_xlabel("measured discounted return")
        ax.set_ylabel("FQE estimate")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "ope.png", dpi=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="runs/bench", help="benchmark runs with their policy_weights.pt")
    parser.add_argument("--runs", default="results/runs", help="committed benchmark runs (what the policies measured)")
    parser.add_argument("--commit-dir", default="results/fqe", help="committed estimates")
    parser.add_argument("--out", default="results")
    parser.add_argument("--datasets", nargs="*", default=None, help="only these dataset ids (default: all)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--set", nargs="*", default=[], help="FIELD=VALUE overrides for fqe.py (e.g. max_steps=20000)")
    parser.add_argument("--report-only", action="store_true", help="the report from the committed estimates alone")
    args = parser.parse_args(argv)
    commit_dir = Path(args.commit_dir)
    failed = []
    if not args.report_only:
        runs = finished_runs(Path(args.root), args.datasets)
        if not runs:
            print(f"error: no finished runs with a policy_weights.pt under {args.root}.", file=sys.stderr)
            return 2
        sets = [x for item in args.set for x in (f"--{item.split('=', 1)[0]}", item.split("=", 1)[1])]
        signal.signal(signal.SIGTERM, stop_runs)  # as the sweep: the running fqe.py checkpoints and exits too
        try:
            with ThreadPoolExecutor(args.workers) as pool:
                failed = [r for r in pool.map(lambda r: estimate(Path(args.root), r, sets, commit_dir), runs)
                          if "error" in r]
        except KeyboardInterrupt:
            print("stopped: the running estimates checkpointed; the same command resumes them.", file=sys.stderr)
            return 128 + signal.SIGTERM
    rows = committed_rows(commit_dir, Path(args.runs), None) + failed
    if not any("estimate" in r for r in rows):
        print(f"error: no committed estimates in {commit_dir} match the runs in {args.runs}.", file=sys.stderr)
        return 2
    report(rows, Path(args.out), "python -m tools.ope " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(f"{sum('estimate' in r for r in rows)} policies estimated; report in {Path(args.out) / 'ope.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
