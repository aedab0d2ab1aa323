"""Off-policy evaluation of the benchmark's policies: how well FQE, from data alone, ranks them.

  python tools/ope.py --root runs/bench --out results          # FQE on every finished run, then the report
  python tools/ope.py --root runs/bench --out results --report-only

For every finished run under ROOT (ROOT/<variant>/<dataset_id>/seed<S>/ with finished.json and
policy.pt2), algorithms/fqe.py estimates J = E_{s0}[Q(s0, pi(s0))] from the run's own dataset and writes
ROOT/fqe/<variant>/<dataset_id>/seed<S>/estimate.json (runs already estimated are skipped; two at a time,
one thread each). The report compares, per dataset, FQE's estimates with what the policies measured in
the environment at the end of their training (the benchmark's last evaluation, eval/return and
eval/discounted_return over its episodes):
  - Spearman rank correlation between the estimates and the measured returns;
  - regret@1: the normalized score of the best policy minus that of FQE's favorite;
  - relative error |J - G| / |G| against the measured discounted return G (J is a discounted value), median;
each with a 95% bootstrap interval over policies (resampled with replacement), and a scatter plot.
Writes OUT/ope.md, OUT/ope.csv, OUT/ope.png. Decision Transformer's policies are skipped: FQE needs a
state -> action policy and DT's acts on a context.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_configs import config_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BOOTSTRAP = 2000


def finished_runs(root: Path) -> list[dict]:
    """Benchmark runs with a final evaluation and a deployable state -> action policy."""
    runs = []
    for marker in sorted(root.glob("*/**/finished.json")):
        run_dir = marker.parent
        variant = run_dir.relative_to(root).parts[0]
        if variant in ("fqe", "dt") or variant.startswith("d3rlpy_") or not (run_dir / "policy.pt2").exists():
            continue
        dataset = "/".join(run_dir.relative_to(root).parts[1:-1])
        final = json.loads(marker.read_text())
        if "eval/return" not in final:
            continue
        runs.append({"variant": variant, "dataset": dataset, "seed": run_dir.name, "run_dir": run_dir,
                     "return": final["eval/return"], "discounted_return": final.get("eval/discounted_return", np.nan),
                     "normalized_score": final.get("eval/normalized_score", np.nan)})
    return runs


def fqe_dir(root: Path, run: dict) -> Path:
    return root / "fqe" / run["variant"] / run["dataset"] / run["seed"]


def estimate(root: Path, run: dict, sets: list[str]) -> dict:
    """Run fqe.py for one policy (skipped when its estimate.json exists); returns the estimate or an error."""
    out = fqe_dir(root, run)
    result_file = out / "estimate.json"
    if not result_file.exists():
        out.mkdir(parents=True, exist_ok=True)
        config = ROOT / "configs" / "fqe" / f"{config_name(run['dataset'])}.yaml"
        args = ["algorithms/fqe.py", *(["--config_path", str(config)] if config.exists() else []),
                "--dataset_id", run["dataset"], "--policy_path", str(run["run_dir"] / "policy.pt2"),
                "--checkpoints_path", str(out), "--seed", "0", *sets]
        (out / "command.txt").write_text(f"cd {ROOT} && OMP_NUM_THREADS=1 python {' '.join(args)}\n")
        with open(out / "stdout.log", "a") as stdout, open(out / "stderr.log", "w") as stderr:
            code = subprocess.run([sys.executable, *args], cwd=ROOT, stdout=stdout, stderr=stderr,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode
        if code != 0 or not result_file.exists():
            return {**run, "error": (out / "stderr.log").read_text().strip().splitlines()[-1:] or [f"exit {code}"]}
    return {**run, "estimate": json.loads(result_file.read_text())["estimate"]}


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
                         "measured_return", "normalized_score"])
        for r in estimated:
            writer.writerow([r["dataset"], r["variant"], r["seed"], f"{r['estimate']:.4f}",
                             f"{r['discounted_return']:.4f}", f"{r['return']:.4f}", f"{r['normalized_score']:.4f}"])
    lines = ["# Off-policy evaluation: FQE ranks the benchmark's policies", "",
             f"Generated by `{command}` on {datetime.date.today()} from the runs' logs (tools/ope.py says how). "
             "Each row: the final policies of every variant and seed on that dataset (n policies), FQE's estimate "
             "J = E_s0[Q(s0, pi(s0))] from the dataset alone, against the return each policy measured in the "
             "environment at its last evaluation. Intervals: 95% bootstrap over policies. Per-policy numbers: "
             "ope.csv; scatter: ope.png.", "",
             "| dataset | n policies | Spearman rho (estimate vs return) | regret@1 (normalized points) "
             "| median relative error vs discounted return |", "|---|---:|---|---|---|"]
    for dataset in datasets:
        rs = [r for r in estimated if r["dataset"] == dataset]
        est = np.array([r["estimate"] for r in rs])
        ret = np.array([r["return"] for r in rs])
        disc = np.array([r["discounted_return"] for r in rs])
        score = np.array([r["normalized_score"] for r in rs])
        cells = [with_interval(spearman, est, ret), with_interval(regret_at_1, est, score),
                 with_interval(relative_error, est, disc)]
        lines.append(f"| {dataset} | {len(rs)} | " + " | ".join(f"{v:.2f} [{lo:.2f}, {hi:.2f}]" for v, lo, hi in cells)
                     + " |")
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
    parser.add_argument("--root", default="runs/bench")
    parser.add_argument("--out", default="results")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--set", nargs="*", default=[], help="FIELD=VALUE overrides for fqe.py (e.g. max_steps=20000)")
    parser.add_argument("--report-only", action="store_true", help="use the estimates already made")
    args = parser.parse_args(argv)
    root = Path(args.root)
    runs = finished_runs(root)
    if not runs:
        print(f"error: no finished runs with a policy.pt2 under {root}.", file=sys.stderr)
        return 2
    sets = [x for item in args.set for x in (f"--{item.split('=', 1)[0]}", item.split("=", 1)[1])]
    if args.report_only:
        rows = [{**r, "estimate": json.loads((fqe_dir(root, r) / "estimate.json").read_text())["estimate"]}
                if (fqe_dir(root, r) / "estimate.json").exists() else {**r, "error": ["not estimated"]} for r in runs]
    else:
        with ThreadPoolExecutor(args.workers) as pool:
            rows = list(pool.map(lambda r: estimate(root, r, sets), runs))
    report(rows, Path(args.out), "python tools/ope.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(f"{sum('estimate' in r for r in rows)} policies estimated; report in {Path(args.out) / 'ope.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
