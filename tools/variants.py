"""The sweep's variants and its plan: a variant is a name for (script in algorithms/, extra flags), and plan() turns
variants x datasets x seeds into the runs' commands (tools/sweep.py runs them; its docstring lists the variants)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from tools.make_configs import config_name
from tools.peer_d3rlpy import ALGOS, PEER_PYTHON

PROJECT = Path(__file__).resolve().parents[1]
# name -> (script in algorithms/, extra flags); every script is also a variant of its own name.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "bc": ("bc_filtered", ["--frac", "1.0"]),
    "bc_10": ("bc_filtered", ["--frac", "0.1"]),  # %BC: the best 10% of the trajectories
    "mopo_nopen": ("mopo", ["--penalty_coef", "0.0"]),  # lambda = 0 in r~ = r - lambda u: no uncertainty penalty
    "td3_nobc": ("td3_bc", ["--bc_coef", "0.0"]),  # no BC term: plain TD3 on the dataset (extrapolation error)
    "dt_init1": ("dt", ["--timestep_embedding_std", "1.0"]),  # the authors' N(0, 1) timestep embedding
    "cql_mean_target": ("cql", ["--target_action", "mean"]),  # a' = the policy's mean in the target (as d3rlpy)
    # Offline-to-online fine-tuning (results/o2o.md): the online budget comes with --set online_steps=N.
    "iql_o2o": ("iql", []),  # IQL offline, then online with its offline settings
    "awac_o2o": ("awac", []),  # AWAC offline, then online with the same settings (as the authors'); "awac" offline only
    "cql_o2o": ("cql", []),  # CQL offline, then online
    "calql_o2o": ("cql", ["--calibrated", "true"]),  # Cal-QL: CQL with the return-to-go bound, offline then online
    # SAC from scratch, the online baseline: cql.py with no offline phase, no regularizer, no dataset batch or
    # state statistics, and the entropy term in its target; no --set max_steps with it.  sac_scratch has SAC's own
    # settings (Haarnoja et al. 2018; tools/behavior_sac.py): actor lr 3e-4, two hidden layers, 10k random steps
    # before learning.  sac_scratch_cql keeps CQL's (actor lr 1e-4, three layers, no warm-up): claim 9's old runs.
    "sac_scratch_cql": ("cql", ["--max_steps", "0", "--bc_steps", "0", "--cql_alpha", "0", "--online_ratio", "1",
                                "--normalize_states", "false", "--backup_entropy", "true"]),
    "sac_scratch": ("cql", ["--max_steps", "0", "--bc_steps", "0", "--cql_alpha", "0", "--online_ratio", "1",
                            "--normalize_states", "false", "--backup_entropy", "true", "--actor_lr", "3e-4",
                            "--n_hidden", "2", "--warmup_steps", "10000"]),
    # Half the papers' 1M updates (issue 33): their own names keep them apart from the 50k runs of a seed.
    **{f"{name}_500k": (script, [*flags, "--max_steps", "500000", "--eval_every", "10000"])
       for name, (script, flags) in {"td3_bc": ("td3_bc", []), "iql": ("iql", []), "awr": ("awr", []),
                                     "bc_10": ("bc_filtered", ["--frac", "0.1"])}.items()},
    # --precision bf16 (issue 47): the same runs with the update's hidden layers in bf16, against their fp32 runs.
    **{f"{script}_bf16": (script, ["--precision", "bf16"]) for script in ("td3_bc", "iql", "cql", "combo")},
}


@dataclass
class Run:
    variant: str
    dataset: str
    seed: int
    run_dir: str  # absolute
    args: list[str]  # after the Python interpreter, relative to PROJECT
    max_steps: Optional[int]  # None when neither --set nor the config names it (the script's default)
    python: str = sys.executable  # the peer library's variants run in its own environment
    commit_dir: Optional[str] = None  # absolute: where the finished run's small files are committed, if anywhere


def peer_run(variant: str, dataset: str, seed: int, run_dir: Path, sets: list[str]) -> Run:
    """A d3rlpy_<algo> variant: tools/peer_d3rlpy.py in the peer environment, same budget flags."""
    algo = variant.removeprefix("d3rlpy_")
    if algo not in ALGOS:
        raise SystemExit(f"error: peer variant {variant!r} is not one of {', '.join('d3rlpy_' + a for a in ALGOS)}.")
    if not PEER_PYTHON.exists():
        raise SystemExit(f"error: the peer environment {PEER_PYTHON.parent.parent} does not exist; "
                         f"create it with: python -m tools.peer_d3rlpy --setup")
    args = ["tools/peer_d3rlpy.py", "--algo", algo, "--dataset_id", dataset, "--seed", str(seed),
            "--checkpoints_path", str(run_dir), *sets]
    return Run(variant, dataset, seed, str(run_dir), args, int(flag_value(sets, "max_steps") or 50_000),
               str(PEER_PYTHON))


def resolve_variant(name: str, defines: dict[str, tuple[str, list[str]]]) -> tuple[str, list[str]]:
    script, flags = {**VARIANTS, **defines}.get(name, (name, []))
    if not (PROJECT / "algorithms" / f"{script}.py").exists():
        known = sorted({*VARIANTS, *defines, *(p.stem for p in (PROJECT / "algorithms").glob("*.py"))})
        raise SystemExit(f"error: variant {name!r} names no script algorithms/{script}.py; known: {', '.join(known)}.")
    return script, flags


def parse_define(text: str) -> tuple[str, tuple[str, list[str]]]:
    """'bc_25=bc_filtered --frac 0.25' -> ('bc_25', ('bc_filtered', ['--frac', '0.25'])): the script and its flags are
    words separated by spaces (no quoting: a value cannot hold a space)."""
    name, _, rest = text.partition("=")
    words = rest.split()
    if not name or not words:
        raise SystemExit(f"error: --define {text!r} is not NAME=SCRIPT [--flag value ...].")
    return name, (words[0], words[1:])


def parse_sets(items: list[str]) -> list[str]:
    """['max_steps=20000', 'eval_targets=[-150.0]'] -> ['--max_steps', '20000', '--eval_targets', '[-150.0]'].
    A relative *_path value (dynamics_path=runs/bench/...) is made absolute from the directory the sweep is run in:
    each run works in its own run directory, where the relative path would point nowhere."""
    flags = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: --set {item!r} is not FIELD=VALUE.")
        if key.endswith("_path") and value and value != "None" and not os.path.isabs(value):
            value = os.path.abspath(value)
        flags += [f"--{key}", value]
    return flags


def flag_value(flags: list[str], name: str) -> Optional[str]:
    """The last value given to --name in a flag list (pyrallis keeps the last one too)."""
    values = [flags[i + 1] for i, f in enumerate(flags[:-1]) if f == f"--{name}"]
    return values[-1] if values else None


def plan(variants: list[str], datasets: list[str], seeds: list[int], root: Path, sets: list[str],
         defines: dict[str, tuple[str, list[str]]]) -> list[Run]:
    """The grid, in the order variants x datasets x seeds."""
    runs = []
    for variant in variants:
        if variant.startswith("d3rlpy_"):
            runs += [peer_run(variant, dataset, seed, (root / variant / dataset / f"seed{seed}").resolve(), sets)
                     for dataset in datasets for seed in seeds]
            continue
        script, variant_flags = resolve_variant(variant, defines)
        for dataset in datasets:
            config = Path("configs") / script / f"{config_name(dataset)}.yaml" if dataset.count("/") == 2 else None
            config_flags = ["--config_path", str(config)] if config and (PROJECT / config).exists() else []
            defaults = (yaml.safe_load((PROJECT / config).read_text()) or {}) if config_flags else {}
            if not config_flags:
                print(f"warning: no config {config or 'for ' + dataset}: {variant} on {dataset} runs with "
                      f"{script}.py's defaults (python -m tools.make_configs writes the configs).", file=sys.stderr)
            for seed in seeds:
                run_dir = (root / variant / dataset / f"seed{seed}").resolve()
                flags = [*variant_flags, *sets]
                max_steps = flag_value(flags, "max_steps") or defaults.get("max_steps")
                if max_steps is not None and not str(max_steps).isdigit():
                    raise SystemExit(f"error: max_steps must be a positive integer, got {max_steps!r}.")
                args = [f"algorithms/{script}.py", *config_flags, "--dataset_id", dataset, "--seed", str(seed),
                        "--checkpoints_path", str(run_dir), *flags]
                runs.append(Run(variant, dataset, seed, str(run_dir), args,
                                None if max_steps is None else int(max_steps)))
    return runs
