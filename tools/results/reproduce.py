"""The sweep commands that make the runs again, derived from each run's run.json (not from a sweep's
history), and the same sweeps at each method's full budget on a GPU: results/reproduce.md."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tools.make_configs import config_name
from tools.variants import VARIANTS

from .runs import PROJECT, RunRecord, dataset_key, variant_key

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
        words = ["python -m tools.sweep", "--variants", *self.variants,
                 *(w for d in self.defines for w in ("--define", shlex.quote(d))), "--datasets", *self.datasets,
                 "--seeds", *map(str, self.seeds), "--workers", workers, "--root", self.root]
        words += ["--commit-dir", commit_dir] if commit_dir else []
        return " ".join(words + (["--set", *map(shlex.quote, self.sets)] if self.sets else []))


def portable(path: str) -> str:
    """A path as the project's commands write it: relative to the project, else from its runs/ folder on (a run
    made in another checkout of the project)."""
    path = Path(path)
    if path.is_absolute() and path.is_relative_to(PROJECT):
        return str(path.relative_to(PROJECT))
    return str(Path(*path.parts[path.parts.index("runs"):])) if "runs" in path.parts else str(path)


def run_root(checkpoints_path: str, run: RunRecord) -> str:
    """The sweep root of a run directory ROOT/<variant>/<dataset>/seed<S>, portable."""
    return portable(checkpoints_path.removesuffix(f"/{run.variant}/{run.dataset}/seed{run.seed}"))


def sweep_key(run: RunRecord) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(root, --define items, --set items) of the sweep that made the run, from its run.json."""
    own = dict(zip(VARIANTS[run.variant][1][::2], VARIANTS[run.variant][1][1::2])) if run.variant in VARIANTS else {}
    defines = () if run.variant in VARIANTS or run.variant.startswith("d3rlpy_") or run.algo == run.variant \
        else (f"{run.variant}={run.algo}",)
    sets = tuple(f"{k}={portable(v) if k.endswith('_path') else v}" for k, v in run.flags.items()
                 if k not in SWEEP_WRITES and own.get(f"--{k}") != v)  # *_path: absolute in a run's command
    return run_root(str(run.config.get("checkpoints_path") or "runs"), run), defines, sets


def reproduce_sweeps(runs: list[RunRecord]) -> list[Sweep]:
    """Sweeps (variants x datasets x seeds, one --set) that make exactly the runs: grouped by root and settings,
    then the variants with the same seeds on a dataset share a sweep, and so do the datasets with the same
    variants and seeds.  A run without a run.json is left out (header() counts them)."""
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


def reproduce_blocks(commands: list[str], gpu: list[str]) -> list[str]:
    """The CPU commands that made the runs, then the same sweeps at the full budget on a GPU."""
    return ["Reproduce these runs on CPU (each finished run is committed to `results/runs`, which "
            "`python -m tools.make_results` reads):", "", "```bash",
            *(commands or ["# no run has a run.json"]), "python -m tools.make_results", "```", "",
            "The full budget on a GPU (each method's own, from its config: on MuJoCo 1M updates, DT 100k; "
            "evaluation every 5k; the CPU's scaled-down settings dropped): the same sweeps with N runs at a time "
            "(as many as the GPU's memory holds), then `python -m tools.make_results --root results/runs-d4rl`:",
            "", "```bash", *(gpu or ["# no run has a run.json"]), "```"]


def write_reproduce(suites: dict[str, tuple[list[str], list[str], list[str]]], path: Path) -> None:
    """reproduce.md: per suite its header, the CPU commands that made its runs and the GPU commands."""
    lines = ["# Reproducing the runs", ""]
    for name, (head, commands, gpu) in suites.items():
        if head:
            lines += [f"## {name}", "", *[f"{line}  " for line in head], "", *reproduce_blocks(commands, gpu), ""]
    path.write_text("\n".join(lines))
