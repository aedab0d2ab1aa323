"""Write configs/<algo>/<env>-<kind>.yaml for every algorithm and dataset.

  python -m tools.make_configs

Keys are TrainConfig fields; anything not written here is the script's default (the paper's value
for MuJoCo locomotion).  Per-dataset values that papers tune are in OVERRIDES.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCAL_KINDS = ("random", "medium", "expert", "medium-replay", "medium-expert")
REMOTE = [f"mujoco/{env}/{kind}-v0" for env in ("hopper", "halfcheetah", "walker2d") for kind in ("medium", "expert")]
# Budgets: Pendulum learns in minutes on a CPU; locomotion uses the papers' one million updates.
BUDGET = {
    "pendulum": {"max_steps": 30_000, "eval_every": 3_000, "eval_episodes": 10},
    "hopper": {"max_steps": 1_000_000, "eval_every": 10_000, "eval_episodes": 10},
    "halfcheetah": {"max_steps": 1_000_000, "eval_every": 10_000, "eval_episodes": 10},
    "walker2d": {"max_steps": 1_000_000, "eval_every": 10_000, "eval_episodes": 10},
    "mujoco": {"max_steps": 1_000_000, "eval_every": 10_000, "eval_episodes": 10},
}
# (algo, env) -> fields; env "*" applies to all.
OVERRIDES: dict[tuple[str, str], dict] = {
    # AWR: the actor's SGD step size per task (Peng et al. 2019, the authors' awr_configs.py); the default is Hopper's.
    ("awr", "halfcheetah"): {"actor_lr": 5e-5},
    ("awr", "walker2d"): {"actor_lr": 2.5e-5},
    ("awr", "mujoco/halfcheetah/medium-v0"): {"actor_lr": 5e-5},
    ("awr", "mujoco/halfcheetah/expert-v0"): {"actor_lr": 5e-5},
    ("awr", "mujoco/walker2d/medium-v0"): {"actor_lr": 2.5e-5},
    ("awr", "mujoco/walker2d/expert-v0"): {"actor_lr": 2.5e-5},
    # CQL: the authors' code clones the data for the first 40k of its 1M updates (policy_eval_start, our bc_steps);
    # Pendulum's 30k-update budget gets the same 4%.
    ("cql", "pendulum"): {"bc_steps": 1_200},
    # MOPO: rollout length h and penalty lambda from the official configs (tianheyu927/mopo examples/config/d4rl/*.py; "mixed" is
    # medium-replay).  Expert datasets are not in the paper: they get the medium values (single-policy data).
    # Pendulum is not in the paper either: h = 5, lambda = 1 is our choice.
    ("mopo", "pendulum"): {"rollout_length": 5, "penalty_coef": 1.0},
    # medium-replay has 3000 transitions: a model epoch is ten updates, and MBPO's patience of 5 epochs stops
    # the model after about 200 of them, underfit (elite holdout MSE 0.28; with patience 20: 0.0002).
    ("mopo", "local/pendulum/medium-replay-v0"): {"model_patience": 20},
    ("mopo", "local/hopper/random-v0"): {"rollout_length": 5, "penalty_coef": 1.0},
    ("mopo", "local/hopper/medium-v0"): {"rollout_length": 5, "penalty_coef": 5.0},
    ("mopo", "local/hopper/expert-v0"): {"rollout_length": 5, "penalty_coef": 5.0},
    ("mopo", "local/hopper/medium-replay-v0"): {"rollout_length": 5, "penalty_coef": 1.0},
    ("mopo", "local/hopper/medium-expert-v0"): {"rollout_length": 5, "penalty_coef": 1.0},
    ("mopo", "local/halfcheetah/random-v0"): {"rollout_length": 5, "penalty_coef": 0.5},
    ("mopo", "local/halfcheetah/medium-v0"): {"rollout_length": 1, "penalty_coef": 1.0},
    ("mopo", "local/halfcheetah/expert-v0"): {"rollout_length": 1, "penalty_coef": 1.0},
    ("mopo", "local/halfcheetah/medium-replay-v0"): {"rollout_length": 5, "penalty_coef": 1.0},
    ("mopo", "local/halfcheetah/medium-expert-v0"): {"rollout_length": 5, "penalty_coef": 5.0},
    ("mopo", "local/walker2d/random-v0"): {"rollout_length": 1, "penalty_coef": 1.0},
    ("mopo", "local/walker2d/medium-v0"): {"rollout_length": 5, "penalty_coef": 5.0},
    ("mopo", "local/walker2d/expert-v0"): {"rollout_length": 5, "penalty_coef": 5.0},
    ("mopo", "local/walker2d/medium-replay-v0"): {"rollout_length": 1, "penalty_coef": 1.0},
    ("mopo", "local/walker2d/medium-expert-v0"): {"rollout_length": 1, "penalty_coef": 2.0},
    ("mopo", "mujoco/hopper/medium-v0"): {"rollout_length": 5, "penalty_coef": 5.0},
    ("mopo", "mujoco/hopper/expert-v0"): {"rollout_length": 5, "penalty_coef": 5.0},
    ("mopo", "mujoco/halfcheetah/medium-v0"): {"rollout_length": 1, "penalty_coef": 1.0},
    ("mopo", "mujoco/halfcheetah/expert-v0"): {"rollout_length": 1, "penalty_coef": 1.0},
    ("mopo", "mujoco/walker2d/medium-v0"): {"rollout_length": 5, "penalty_coef": 5.0},
    ("mopo", "mujoco/walker2d/expert-v0"): {"rollout_length": 5, "penalty_coef": 5.0},
    # COMBO: h and the conservative weight beta per dataset, the paper's appendix values as OfflineRL-Kit's
    # run_combo.py lists them (hopper-random from the paper's table).  Expert datasets (not in the paper) get the
    # medium values; Pendulum (not in the paper) gets h = 5, beta = 1, our choice.
    ("combo", "pendulum"): {"rollout_length": 5, "cql_alpha": 1.0},
    ("combo", "local/pendulum/medium-replay-v0"): {"model_patience": 20},  # as mopo's
    ("combo", "local/hopper/random-v0"): {"rollout_length": 5, "cql_alpha": 1.0},
    ("combo", "local/hopper/medium-v0"): {"rollout_length": 5, "cql_alpha": 5.0},
    ("combo", "local/hopper/expert-v0"): {"rollout_length": 5, "cql_alpha": 5.0},
    ("combo", "local/hopper/medium-replay-v0"): {"rollout_length": 5, "cql_alpha": 0.5},
    ("combo", "local/hopper/medium-expert-v0"): {"rollout_length": 5, "cql_alpha": 5.0},
    # Local HalfCheetah and Walker2d: the medium values below for every kind (the other kinds' values were not
    # checked against the paper's appendix here).
    ("combo", "halfcheetah"): {"rollout_length": 5, "cql_alpha": 0.5},
    ("combo", "walker2d"): {"rollout_length": 1, "cql_alpha": 5.0},
    ("combo", "mujoco/hopper/medium-v0"): {"rollout_length": 5, "cql_alpha": 5.0},
    ("combo", "mujoco/hopper/expert-v0"): {"rollout_length": 5, "cql_alpha": 5.0},
    ("combo", "mujoco/halfcheetah/medium-v0"): {"rollout_length": 5, "cql_alpha": 0.5},
    ("combo", "mujoco/halfcheetah/expert-v0"): {"rollout_length": 5, "cql_alpha": 0.5},
    ("combo", "mujoco/walker2d/medium-v0"): {"rollout_length": 1, "cql_alpha": 5.0},
    ("combo", "mujoco/walker2d/expert-v0"): {"rollout_length": 1, "cql_alpha": 5.0},
    # FQE: with Polyak averaging the fit contracts its error by about tau (1 - gamma) per update (a time constant of
    # 20k updates at tau = 0.005, gamma = 0.99; about 30k measured on pendulum/medium-replay): 30k updates stop
    # far from the fixed point, 100k leave a few percent.  Locomotion keeps the 1M of Fu et al. 2021's code.
    ("fqe", "pendulum"): {"max_steps": 100_000, "eval_every": 10_000},
    # DT: 10^5 updates and, on D4RL-scale data, the paper's two return targets per environment (Chen et al. 2021,
    # the authors' Gym code).  The local Hopper datasets get the script's default, targets derived from each
    # dataset's returns (its best and the midpoint of its best and worst), as 3600 may be out of their reach.
    # Pendulum is not in the paper: targets inside the datasets' returns (about -1900 to 0), and R_hat / 500
    # spans about [-3.7, 0] as Hopper's R_hat / 1000 spans [0, 3.6].
    ("dt", "pendulum"): {"rtg_scale": 500.0, "eval_targets": [-150.0, -400.0, -800.0]},
    ("dt", "hopper"): {"max_steps": 100_000},
    ("dt", "halfcheetah"): {"max_steps": 100_000},
    ("dt", "walker2d"): {"max_steps": 100_000},
    ("dt", "mujoco"): {"max_steps": 100_000},
    ("dt", "mujoco/hopper/medium-v0"): {"eval_targets": [3600.0, 1800.0]},
    ("dt", "mujoco/hopper/expert-v0"): {"eval_targets": [3600.0, 1800.0]},
    ("dt", "mujoco/halfcheetah/medium-v0"): {"eval_targets": [12000.0, 6000.0]},
    ("dt", "mujoco/halfcheetah/expert-v0"): {"eval_targets": [12000.0, 6000.0]},
    ("dt", "mujoco/walker2d/medium-v0"): {"eval_targets": [5000.0, 2500.0]},
    ("dt", "mujoco/walker2d/expert-v0"): {"eval_targets": [5000.0, 2500.0]},
}


def config_name(dataset_id: str) -> str:
    parts = dataset_id.split("/")
    kind = parts[2].rsplit('-v', 1)[0]
    return f"{parts[1]}-{kind}" if parts[0] == "local" else f"{parts[0]}-{parts[1]}-{kind}"


def write_all() -> list[Path]:
    written = []
    algos = sorted(p.stem for p in (ROOT / "algorithms").glob("*.py"))
    datasets = [f"local/{env}/{kind}-v0" for env in ("pendulum", "hopper", "halfcheetah", "walker2d")
                for kind in LOCAL_KINDS] + REMOTE
    for algo in algos:
        for dataset_id in datasets:
            env = dataset_id.split("/")[1] if dataset_id.startswith("local/") else "mujoco"
            fields = {"dataset_id": dataset_id, **BUDGET[env]}
            for key in (("*", "*"), (algo, "*"), (algo, env), (algo, dataset_id)):
                fields.update(OVERRIDES.get(key, {}))
            path = ROOT / "configs" / algo / f"{config_name(dataset_id)}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f"{k}: {v}\n" for k, v in fields.items()))
            written.append(path)
    return written


if __name__ == "__main__":
    print(f"wrote {len(write_all())} configs")
