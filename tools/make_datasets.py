"""Build D4RL-style Minari datasets locally: local/<env>/<kind>-v0.

The recipe (Fu et al. 2020, "D4RL", section 5, on gymnasium v5 environments):
  random         uniform random actions
  medium         the stochastic policy of the SAC checkpoint whose return is one third of the way
                 from random to expert (D4RL: "one third of the expert"; Pendulum's returns are
                 negative, so the third is measured from the random policy's return)
  expert         the stochastic policy of the best SAC checkpoint (the last one: training stops
                 when it reaches the environment's expert return)
  medium-replay  every transition the SAC run saw up to the medium checkpoint
  medium-expert  medium and expert concatenated
ref_min_score / ref_max_score are the mean returns of the random and expert policies, so that
minari.get_normalized_score gives D4RL-style scores.

  python -m tools.make_datasets                      # all twenty datasets from committed checkpoints
  python -m tools.make_datasets --envs pendulum --kinds medium --size 5000 --force
  python -m tools.make_datasets --envs hopper --train-behavior   # retrain the SAC behavior agent
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from tools.behavior_sac import Actor, SACSettings, evaluate, train_behavior

BEHAVIOR_DIR = Path(__file__).resolve().parent / "behavior"
KINDS = ("random", "medium", "expert", "medium-replay", "medium-expert")
REF_EPISODES = 50  # episodes that estimate ref_min_score and ref_max_score
COLLECTION_SEED = 0
REPLACED = ".replaced"  # under the datasets root: a dataset being replaced, until its new copy is in place
BUILDING = ".building-"  # under the datasets root: .building-<pid>-<random>, a dataset being written by process pid


@dataclass
class EnvRecipe:
    gym_id: str
    size: int  # default transitions per dataset (medium-expert has twice this)
    sac: SACSettings = field(default_factory=SACSettings)
    expert_target: float = -math.inf  # the return a D4RL-grade expert reaches on this environment


def locomotion(gym_id: str, stop_return: float, expert_target: float) -> EnvRecipe:
    """D4RL sizes (1M transitions; medium-expert 2M) and SAC until its expert is verified at stop_return,
    a margin above the target so that a dataset's own episodes stay above it."""
    sac = SACSettings(total_steps=1_000_000, start_steps=10_000, eval_every=10_000, eval_episodes=10,
                      stop_return=stop_return, compile=True)
    return EnvRecipe(gym_id, 1_000_000, sac, expert_target)


ENVS = {
    "pendulum": EnvRecipe(
        "Pendulum-v1",
        100_000,
        SACSettings(total_steps=15_000, start_steps=1_000, eval_every=500, eval_episodes=10, stop_return=-160),
    ),
    # expert targets: the floor under D4RL's experts (Hopper 3234, Walker2d 4592, HalfCheetah 12135)
    "hopper": locomotion("Hopper-v5", stop_return=3100, expert_target=3000),
    "walker2d": locomotion("Walker2d-v5", stop_return=4150, expert_target=4000),
    "halfcheetah": locomotion("HalfCheetah-v5", stop_return=6200, expert_target=6000),
}


class BadInput(ValueError):
    """A user error: printed as one sentence, exit status 2."""


def check_choice(kind: str, given: list[str], valid) -> list[str]:
    unknown = [g for g in given if g not in valid]
    if unknown:
        raise BadInput(f"unknown {kind} {', '.join(map(repr, unknown))}; valid {kind}s are: {', '.join(valid)}.")
    return given


# ---------------------------------------------------------------- behavior agent (train and load)

def save_behavior(env: str, checkpoints: list[dict], replay, dims: dict) -> dict:
    """Choose expert and medium, estimate the reference scores, write the committed files:
    the two actors, the replay up to medium (compressed) and index.json with the learning curve."""
    recipe = ENVS[env]
    out = BEHAVIOR_DIR / env
    out.mkdir(parents=True, exist_ok=True)
    expert = checkpoints[-1] if "verified_return" in checkpoints[-1] else max(checkpoints, key=lambda c: c["eval_return"])
    random_return = random_policy_return(recipe.gym_id, REF_EPISODES, seed=1_000)
    target = random_return + (expert["eval_return"] - random_return) / 3
    candidates = [c for c in checkpoints if c["step"] < expert["step"]]
    medium = min(candidates, key=lambda c: abs(c["eval_return"] - target))
    for name, ckpt in (("medium", medium), ("expert", expert)):
        torch.save(ckpt["actor"], out / f"{name}.pt")
    n = medium["step"]
    trunc = replay.trunc[:n].copy()
    trunc[-1] = not replay.term[n - 1]  # the replay is cut at the medium checkpoint
    np.savez_compressed(out / "replay_medium.npz", obs=replay.obs[:n], act=replay.act[:n], rew=replay.rew[:n],
                        next_obs=replay.next_obs[:n], term=replay.term[:n].astype(bool), trunc=trunc)
    policies = {name: load_actor(out / f"{name}.pt", dims) for name in ("medium", "expert")}
    settings = {k: v for k, v in asdict(recipe.sac).items() if k != "wall_seconds"}
    index = {
        "env_id": recipe.gym_id,
        "learner": "SAC (tools/behavior_sac.py)",
        "sac": settings,
        "actor": dims,
        "checkpoints": [{k: c[k] for k in ("step", "eval_return", "cpu_seconds", "verified_return") if k in c}
                        for c in checkpoints],
        "medium": {"step": medium["step"], "eval_return": medium["eval_return"],
                   "mean_return": evaluate(policies["medium"], recipe.gym_id, REF_EPISODES, seed=2_000)},
        "expert": {"step": expert["step"], "eval_return": expert["eval_return"],
                   "mean_return": evaluate(policies["expert"], recipe.gym_id, REF_EPISODES, seed=2_000)},
        "ref_min_score": random_return,
    }
    index["ref_max_score"] = index["expert"]["mean_return"]
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return index


def train(env: str, wall_minutes: float) -> bool:
    """Train (resuming) the behavior agent of `env`; on success write its committed files."""
    recipe = ENVS[env]
    settings = replace(recipe.sac, wall_seconds=wall_minutes * 60)
    (BEHAVIOR_DIR / env).mkdir(parents=True, exist_ok=True)
    state_path = BEHAVIOR_DIR / env / "train_state.pt"
    finished, checkpoints, replay, dims = train_behavior(recipe.gym_id, settings, state_path)
    if not finished:
        print(f"{env}: training stopped at step {checkpoints[-1]['step']} before its expert was verified; "
              f"its state is in {state_path}; the same command continues it.")
        return False
    index = save_behavior(env, checkpoints, replay, dims)
    print(f"{env}: expert step {index['expert']['step']}, mean return {index['expert']['mean_return']:.1f}; "
          f"medium step {index['medium']['step']}, mean return {index['medium']['mean_return']:.1f}")
    return True


def load_actor(path: Path, dims: dict) -> Actor:
    try:
        actor = Actor(dims["obs_dim"], dims["act_dim"], dims["hidden"], dims["act_scale"])
        actor.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as e:  # noqa: BLE001 - a missing, cut, foreign or unsafe file, or another network's weights
        raise bad_behavior_file(path, e) from None
    return actor.eval()


def bad_behavior_file(path: Path, error: Exception) -> BadInput:
    return BadInput(f"the behavior file {path} is missing, corrupt or not this tool's "
                    f"({type(error).__name__}: {' '.join(str(error).split())[:160]}); restore it with "
                    f"git checkout -- {path.parent}, or retrain with --train-behavior.")


def load_behavior(env: str) -> dict:
    path = BEHAVIOR_DIR / env / "index.json"
    if not path.exists():
        raise BadInput(f"no behavior checkpoints for {env} in {path.parent}; "
                       f"train them with: python -m tools.make_datasets --envs {env} --train-behavior.")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        missing = [k for k in ("env_id", "actor", "medium", "expert", "ref_min_score", "ref_max_score", "sac",
                               "checkpoints") if k not in index]
        if missing or not all(isinstance(index[k], dict) for k in ("actor", "medium", "expert", "sac")):
            raise TypeError(f"it lacks {', '.join(missing)}" if missing else "a field holds the wrong type")
    except (OSError, ValueError, TypeError, RecursionError) as e:  # bad UTF-8 and JSON are ValueErrors
        raise bad_behavior_file(path, e) from None
    return index


def random_policy_return(env_id: str, episodes: int, seed: int) -> float:
    env = gym.make(env_id)
    env.action_space.seed(seed)
    returns = []
    for ep in range(episodes):
        env.reset(seed=seed + ep)
        done, total = False, 0.0
        while not done:
            _, r, term, trunc, _ = env.step(env.action_space.sample())
            total += float(r)
            done = term or trunc
        returns.append(total)
    return float(np.mean(returns))


# ---------------------------------------------------------------- collection

def collect(env_id: str, policy, size: int, seed: int, desc: str) -> list[dict]:
    """Roll `policy` (None = uniform random) for exactly `size` transitions, as whole episodes;
    the last episode is cut at `size` and marked truncated, like D4RL's timeouts.  `seed` fixes the episodes:
    the environment's resets, the random actions and the stochastic policy's samples (torch's generator)."""
    env = gym.make(env_id)
    env.action_space.seed(seed)
    torch.manual_seed(seed)
    episodes, steps, ep_index = [], 0, 0
    with tqdm(total=size, desc=desc, mininterval=2, leave=False) as bar:
        while steps < size:
            obs, _ = env.reset(seed=seed + ep_index)
            ep = {"observations": [obs], "actions": [], "rewards": [], "terminations": [], "truncations": []}
            done = False
            while not done:
                action = env.action_space.sample() if policy is None else policy.act(obs)
                obs, r, term, trunc, _ = env.step(action)
                steps += 1
                trunc = trunc or steps == size
                for key, value in zip(("observations", "actions", "rewards", "terminations", "truncations"),
                                      (obs, action, r, term, trunc)):
                    ep[key].append(value)
                done = term or trunc
            bar.update(len(ep["actions"]))
            episodes.append({k: np.asarray(v) for k, v in ep.items()})
            ep_index += 1
    return episodes


def replay_episodes(path: Path) -> list[dict]:
    """Split the committed SAC replay (flat transitions) into episodes."""
    try:
        with np.load(path) as npz:  # allow_pickle=False: arrays only
            data = {key: npz[key] for key in ("obs", "next_obs", "act", "rew", "term", "trunc")}  # decompressed once
    except Exception as e:  # noqa: BLE001 - a missing, cut or foreign file
        raise bad_behavior_file(path, e) from None
    ends = np.flatnonzero(data["term"] | data["trunc"]) + 1
    episodes, start = [], 0
    for end in ends:
        episodes.append({
            "observations": np.concatenate([data["obs"][start:end], data["next_obs"][end - 1:end]]),
            "actions": data["act"][start:end],
            "rewards": data["rew"][start:end].astype(np.float64),
            "terminations": data["term"][start:end],
            "truncations": data["trunc"][start:end],
        })
        start = end
    return episodes


def episodes_for(env: str, kind: str, size: int, index: dict, collected: dict | None = None) -> list[dict]:
    """The episodes of one dataset.  `collected` keeps the medium and expert episodes of this build, so that
    medium-expert reuses them (the same seeds give the same episodes) instead of collecting them again."""
    collected = {} if collected is None else collected
    if kind == "medium-expert":
        return episodes_for(env, "medium", size, index, collected) + episodes_for(env, "expert", size, index, collected)
    if kind in collected:
        return collected[kind]
    recipe = ENVS[env]
    seed = COLLECTION_SEED + 100_000 * KINDS.index(kind)
    if kind == "random":
        return collect(recipe.gym_id, None, size, seed, f"{env} random")
    if kind == "medium-replay":
        return replay_episodes(BEHAVIOR_DIR / env / "replay_medium.npz")
    actor = load_actor(BEHAVIOR_DIR / env / f"{kind}.pt", index["actor"])
    collected[kind] = collect(recipe.gym_id, actor, size, seed, f"{env} {kind}")
    return collected[kind]


# ---------------------------------------------------------------- writing Minari datasets

def datasets_root() -> Path:
    return Path(os.environ.get("MINARI_DATASETS_PATH", Path.home() / ".minari" / "datasets"))


def describe(env: str, kind: str, size: int, index: dict) -> str:
    med, exp = index["medium"], index["expert"]
    return (f"D4RL-style '{kind}' dataset for {index['env_id']}, built by tools/make_datasets.py "
            f"(size {size}, collection seed {COLLECTION_SEED}). Behavior: SAC trained online with seed "
            f"{index['sac']['seed']}; medium = checkpoint at step {med['step']} (mean return {med['mean_return']:.1f}), "
            f"expert = checkpoint at step {exp['step']} (mean return {exp['mean_return']:.1f}); "
            f"ref_min_score = random policy {index['ref_min_score']:.1f}, ref_max_score = expert "
            f"{index['ref_max_score']:.1f}. Recipe: random = uniform actions; medium/expert = stochastic "
            f"checkpoint policies; medium-replay = the SAC run's transitions up to the medium checkpoint; "
            f"medium-expert = medium + expert.")


def write_dataset(dataset_id: str, episodes: list[dict], env_id: str, index: dict, description: str) -> None:
    """Write into a temporary root, then move into place: an interrupted build leaves nothing
    that loads as a dataset, and an existing dataset is replaced only by a complete one."""
    import minari
    from minari.data_collector import EpisodeBuffer
    from minari.namespace import create_namespace, list_local_namespaces
    from minari.dataset.minari_dataset import parse_dataset_id

    root = datasets_root()
    root.mkdir(parents=True, exist_ok=True)
    namespace = parse_dataset_id(dataset_id)[0]
    buffers = [EpisodeBuffer(id=i, observations=ep["observations"].astype(np.float32),
                             actions=ep["actions"].astype(np.float32), rewards=ep["rewards"],
                             terminations=ep["terminations"], truncations=ep["truncations"])
               for i, ep in enumerate(episodes)]
    saved = os.environ.get("MINARI_DATASETS_PATH")
    with tempfile.TemporaryDirectory(dir=root, prefix=f"{BUILDING}{os.getpid()}-") as tmp:
        try:
            os.environ["MINARI_DATASETS_PATH"] = tmp
            minari.create_dataset_from_buffers(
                dataset_id, buffers, env=env_id, eval_env=env_id, algorithm_name="SAC (D4RL recipe)",
                code_permalink="tools/make_datasets.py", author="offline-rl reference implementations",
                ref_min_score=index["ref_min_score"], ref_max_score=index["ref_max_score"],
                description=description, data_format="hdf5", requirements=["mujoco", "gymnasium"],
            )
            os.environ["MINARI_DATASETS_PATH"] = str(root)
            if namespace not in list_local_namespaces():
                create_namespace(namespace)
        finally:
            if saved is None:
                os.environ.pop("MINARI_DATASETS_PATH", None)
            else:
                os.environ["MINARI_DATASETS_PATH"] = saved
        final, old = root / dataset_id, root / REPLACED / dataset_id
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # kept under REPLACED until the new copy is in place (restore_interrupted)
            old.parent.mkdir(parents=True, exist_ok=True)
            os.replace(final, old)
        os.replace(Path(tmp) / dataset_id, final)
        if old.exists():
            shutil.rmtree(old)


def remove_abandoned_builds() -> None:
    """A killed build leaves its temporary folder (up to 10 MB): remove those whose process is gone (a build
    running beside this one keeps its folder)."""
    for folder in datasets_root().glob(f"{BUILDING}*"):
        pid = folder.name[len(BUILDING):].split("-")[0]
        if not (pid.isdigit() and process_alive(int(pid))):
            shutil.rmtree(folder, ignore_errors=True)
            print(f"removed {folder.name}, left by an interrupted build")


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def restore_interrupted() -> None:
    """A build killed between its two renames left the old dataset under REPLACED and none in its place:
    put it back (a dataset that did get its new copy just drops the old one)."""
    replaced = datasets_root() / REPLACED
    for metadata in sorted(replaced.glob("**/data/metadata.json")):
        old = metadata.parent.parent
        final = datasets_root() / old.relative_to(replaced)
        if final.exists():
            shutil.rmtree(old)
        else:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(old, final)
            print(f"restored {final.relative_to(datasets_root())}, whose replacement was interrupted")


def dataset_exists(dataset_id: str) -> bool:
    return (datasets_root() / dataset_id / "data" / "metadata.json").exists()


# ---------------------------------------------------------------- table

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
    state_path = BEHAVIOR_DIR / env / "train_state.pt"
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    best = max(state["checkpoints"], key=lambda c: c["eval_return"])
    return [f"| {env} | SAC (tools/behavior_sac.py), IN TRAINING | {state['step']} | "
            f"{state['cpu_seconds'] / 3600:.1f} h | | best so far: step {best['step']} "
            f"({best['eval_return']:.1f} over {ENVS[env].sac.eval_episodes} episodes) | | | "
            f"target {ENVS[env].expert_target:.0f} not reached yet |"]


def learning_curves(env: str) -> tuple[list[dict], dict | None]:
    state_path = BEHAVIOR_DIR / env / "train_state.pt"
    if (BEHAVIOR_DIR / env / "index.json").exists():
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
    "the same everywhere). Each run records the size of the dataset it read (dataset.txt and run.json, listed per "
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
        if (BEHAVIOR_DIR / env / "index.json").exists():
            lines += behavior_lines(env, means.get(f"local/{env}/expert-v0"))
        elif (BEHAVIOR_DIR / env / "train_state.pt").exists():
            lines += unfinished_lines(env)
    lines += ["", "## Builds and their history", "", BUILD_HISTORY]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    plot_behavior(path.parent / "behavior.png")


# ---------------------------------------------------------------- CLI

def print_mujoco_warnings() -> None:
    """MuJoCo would write its warnings to MUJOCO_LOG.TXT in the working directory; show them instead."""
    import mujoco

    mujoco.set_mju_user_warning(lambda message: print(f"MuJoCo warning: {message}", file=sys.stderr))


def main(argv: list[str] | None = None) -> int:
    print_mujoco_warnings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(ENVS), help=f"subset of {', '.join(ENVS)}")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), help=f"subset of {', '.join(KINDS)}")
    parser.add_argument("--size", type=int, default=None,
                        help="transitions per dataset (default: 100k Pendulum; 1M on the locomotion envs, like D4RL)")
    parser.add_argument("--force", action="store_true", help="rebuild datasets that already exist")
    parser.add_argument("--train-behavior", action="store_true", help="retrain the SAC behavior agents first")
    parser.add_argument("--wall-minutes", type=float, default=math.inf,
                        help="with --train-behavior: stop training (resumably) after this many minutes per env")
    parser.add_argument("--table", default="",
                        help="write the table of all local datasets there (results/datasets.md)")
    args = parser.parse_args(argv)
    try:
        restore_interrupted()
        remove_abandoned_builds()
        check_choice("env", args.envs, ENVS)
        check_choice("kind", args.kinds, KINDS)
        if args.size is not None and args.size < 1:
            raise BadInput(f"--size must be a positive number of transitions, got {args.size}.")
        missing = []
        for env in args.envs:
            if args.train_behavior and not train(env, args.wall_minutes):
                missing.append(env)
                continue
            if not (BEHAVIOR_DIR / env / "index.json").exists():
                missing.append(env)
                print(f"error: {unfinished(env)}", file=sys.stderr)
                continue
            index = load_behavior(env)
            size = args.size or ENVS[env].size
            collected: dict = {}
            for kind in args.kinds:
                dataset_id = f"local/{env}/{kind}-v0"
                if dataset_exists(dataset_id) and not args.force:
                    print(f"{dataset_id} exists in {datasets_root()}; skipped (use --force to rebuild).")
                    continue
                episodes = episodes_for(env, kind, size, index, collected)
                write_dataset(dataset_id, episodes, ENVS[env].gym_id, index, describe(env, kind, size, index))
                print(f"{dataset_id}: {len(episodes)} episodes, {sum(len(e['actions']) for e in episodes)} transitions")
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.table:
        write_table(Path(args.table), "python -m tools.make_datasets " + " ".join(argv if argv is not None else sys.argv[1:]))
    return 2 if missing else 0


def unfinished(env: str) -> str:
    """Why `env` has no datasets yet, in one sentence."""
    state_path = BEHAVIOR_DIR / env / "train_state.pt"
    where = ""
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        where = f" (its training stopped at step {state['step']}; the same command continues it)"
    return (f"{env} has no behavior agent yet{where}: train it with python -m tools.make_datasets --envs {env} "
            f"--train-behavior; its datasets were not built.")


if __name__ == "__main__":
    sys.exit(main())
