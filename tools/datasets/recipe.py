"""The D4RL recipe's pieces (the recipe itself: tools/make_datasets.py's docstring): the environments' settings,
the behavior agents (trained, saved to tools/behavior/<env>/ and loaded from there) and the episodes of each kind
of dataset (collected with a behavior policy, or replayed from the SAC run)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from tools.behavior_sac import Actor, SACSettings, evaluate, train_behavior

BEHAVIOR_DIR = Path(__file__).resolve().parents[1] / "behavior"
KINDS = ("random", "medium", "expert", "medium-replay", "medium-expert")
REF_EPISODES = 50  # episodes that estimate ref_min_score and ref_max_score
COLLECTION_SEED = 0


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


def behavior_file(env: str, name: str) -> Path:
    """A file of env's behavior agent: index.json, medium.pt, expert.pt, replay_medium.npz (committed), or the
    resumable train_state.pt."""
    return BEHAVIOR_DIR / env / name


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
    state_path = behavior_file(env, "train_state.pt")
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
    path = behavior_file(env, "index.json")
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
        return replay_episodes(behavior_file(env, "replay_medium.npz"))
    actor = load_actor(behavior_file(env, f"{kind}.pt"), index["actor"])
    collected[kind] = collect(recipe.gym_id, actor, size, seed, f"{env} {kind}")
    return collected[kind]


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
