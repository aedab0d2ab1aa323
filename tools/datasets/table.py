"""results/datasets.md: every local dataset's size and returns, the behavior agents, and the builds' history;
results/behavior.png: the behavior agents' learning curves."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .recipe import ENVS, KINDS, REF_EPISODES, behavior_file, load_behavior
from .store import dataset_exists


def dataset_stats(dataset_id: str) -> dict:
    import minari

    ds = minari.load_dataset(dataset_id)
    returns = np.array([ep.rewards.sum() for ep in ds.iterate_episodes()])
    return {
        "id": dataset_id, "episodes": ds.total_episodes, "transitions": ds.total_steps,
        "mean": returns.mean(), "min": returns.min(), "max": returns.max(),
        "normalized": 100 * float(np.mean(minari.get_normalized_score(ds, returns))),
    }


def behavior_lines(env: str, expert_data_mean: float | None) -> list[str]:
    """One row per behavior agent: learner, steps, CPU time, the medium and expert checkpoints, the target.
    The target is judged on the expert dataset's mean return when it is built (about 1000 episodes of the
    policy that collects), else on the 50-episode reference evaluation of index.json."""
    idx = load_behavior(env)
    last = idx["checkpoints"][-1]
    cpu = f"{last['cpu_seconds'] / 3600:.1f} h" if "cpu_seconds" in last else "not recorded"
    target = ENVS[env].expert_target
    judged = idx["expert"]["mean_return"] if expert_data_mean is None else expert_data_mean
    on = "reference evaluation" if expert_data_mean is None else "expert data"
    verdict = "" if not math.isfinite(target) else (
        f"{on} meets the {target:.0f} target" if judged >= target
        else f"{on} BELOW the {target:.0f} target (training unfinished: rerun --train-behavior, it resumes)")
    verified = f"; verified {last['verified_return']:.1f}" if "verified_return" in last else ""
    data = "not built" if expert_data_mean is None else f"{expert_data_mean:.1f}"
    return [f"| {env} | {idx.get('learner', 'SAC (tools/behavior_sac.py)')} | {last['step']} | {cpu} "
            f"| {idx['medium']['step']} ({idx['medium']['mean_return']:.1f}) "
            f"| {idx['expert']['step']} ({idx['expert']['mean_return']:.1f}{verified}) | {data} "
            f"| {idx['ref_min_score']:.1f} | {verdict} |"]


def unfinished_lines(env: str) -> list[str]:
    """A behavior run still in training: where it stands, from its resumable state."""
    state_path = behavior_file(env, "train_state.pt")
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    best = max(state["checkpoints"], key=lambda c: c["eval_return"])
    return [f"| {env} | SAC (tools/behavior_sac.py), IN TRAINING | {state['step']} | "
            f"{state['cpu_seconds'] / 3600:.1f} h | | best so far: step {best['step']} "
            f"({best['eval_return']:.1f} over {ENVS[env].sac.eval_episodes} episodes) | | | "
            f"target {ENVS[env].expert_target:.0f} not reached yet |"]


def learning_curves(env: str) -> tuple[list[dict], dict | None]:
    state_path = behavior_file(env, "train_state.pt")
    if behavior_file(env, "index.json").exists():
        idx = load_behavior(env)
        return idx["checkpoints"], idx
    if state_path.exists():
        return torch.load(state_path, map_location="cpu", weights_only=True)["checkpoints"], None
    return [], None


def plot_behavior(path: Path) -> None:
    """Each behavior agent's evaluated return per checkpoint, medium and expert marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = [env for env in ENVS if env != "pendulum" and learning_curves(env)[0]]
    fig, axes = plt.subplots(1, max(len(envs), 1), figsize=(5 * max(len(envs), 1), 3.6), squeeze=False)
    for ax, env in zip(axes[0], envs):
        checkpoints, idx = learning_curves(env)
        ax.plot([c["step"] for c in checkpoints], [c["eval_return"] for c in checkpoints], color="0.3", lw=1,
                label=f"checkpoint return ({ENVS[env].sac.eval_episodes} episodes)")
        ax.axhline(ENVS[env].expert_target, color="tab:red", ls=":", lw=1, label="expert target")
        if idx is not None:
            for name, color in (("medium", "tab:blue"), ("expert", "tab:green")):
                ax.scatter([idx[name]["step"]], [idx[name]["mean_return"]], color=color, zorder=3,
                           label=f"{name} ({REF_EPISODES}-episode mean)")
        else:
            ax.set_title(f"{ENVS[env].gym_id} (in training)")
        ax.set_title(ax.get_title() or ENVS[env].gym_id)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("return")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


BUILD_HISTORY = (
    "A build is reproducible on one machine: the same command gives the same episodes (each collection seeds the "
    "environment, the random actions and the policy's samples). On another machine a collected dataset can differ: "
    "Hopper medium-expert had 4354 episodes when built for the runs of the first 2026-12-01 session and 4323 when "
    "rebuilt on an AMD EPYC for the next (same checkpoints and recipe; the replay-based medium-replay datasets are "
    "the same everywhere). Each run records the size of the dataset it read (its run.json's dataset, listed per "
    "dataset at the end of results/scores.md). Builds before 2026-12-01 did not seed the policy's samples; the "
    "runs committed before then were trained on such a build, from the same checkpoints and recipe (its table: "
    "`git show 2e57b07:results/datasets.md`). Sizes against D4RL's: random, medium and expert have D4RL's 1M "
    "transitions and medium-expert its 2M; medium-replay is every transition the SAC run saw up to the medium "
    "checkpoint, so its size follows this project's SAC (Hopper 150k, HalfCheetah 40k, Walker2d 260k) where "
    "D4RL's are about 402k, 202k and 302k.")


def write_table(path: Path, command: str) -> None:
    rows = []
    for env in ENVS:
        for kind in KINDS:
            dataset_id = f"local/{env}/{kind}-v0"
            if dataset_exists(dataset_id):
                rows.append(dataset_stats(dataset_id))
    lines = [
        "# Local datasets",
        "",
        "Generated by `python -m tools.make_datasets` (this table is rewritten after every build).",
        f"Last command: `{command}`",
        "",
        "| dataset | episodes | transitions | mean return | min | max | normalized mean |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['id']} | {r['episodes']} | {r['transitions']} | {r['mean']:.1f} | {r['min']:.1f} "
                     f"| {r['max']:.1f} | {r['normalized']:.1f} |")
    lines += ["", "## Behavior agents", "",
              "Learner and settings: tools/behavior_sac.py (why SAC, and why these settings, is in its docstring); "
              "returns of medium and expert are means over 50 episodes of the stochastic policy that collects (the reference "
              "evaluation, whose expert mean is ref_max_score; 'verified': the 50 episodes that stopped training), "
              "expert data: the mean return of the expert dataset's episodes; "
              "CPU time is the process time of training on one thread (2-core machine, shared). "
              "Learning curves: results/behavior.png. Every checkpoint's return: tools/behavior/<env>/index.json.",
              "", "| env | learner | steps | CPU time | medium: step (return) | expert: step (return) | expert data "
              "| random policy | expert target |", "|---|---|---:|---:|---|---|---:|---:|---|"]
    means = {r["id"]: r["mean"] for r in rows}
    for env in ENVS:
        if behavior_file(env, "index.json").exists():
            lines += behavior_lines(env, means.get(f"local/{env}/expert-v0"))
        elif behavior_file(env, "train_state.pt").exists():
            lines += unfinished_lines(env)
    lines += ["", "## Builds and their history", "", BUILD_HISTORY]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    plot_behavior(path.parent / "behavior.png")
