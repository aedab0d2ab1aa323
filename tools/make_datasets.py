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
import math
import sys
from pathlib import Path

import torch

from tools.datasets.recipe import (ENVS, KINDS, BadInput, behavior_file, check_choice, describe, episodes_for,
                                   load_behavior, train)
from tools.datasets.store import dataset_exists, datasets_root, remove_abandoned_builds, restore_interrupted, write_dataset
from tools.datasets.table import write_table


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
            if not behavior_file(env, "index.json").exists():
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
    state_path = behavior_file(env, "train_state.pt")
    where = ""
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        where = f" (its training stopped at step {state['step']}; the same command continues it)"
    return (f"{env} has no behavior agent yet{where}: train it with python -m tools.make_datasets --envs {env} "
            f"--train-behavior; its datasets were not built.")


if __name__ == "__main__":
    sys.exit(main())
