"""Loading runs: ROOT/<variant>/<dataset_id>/seed<S>/ (log.jsonl, run.json, commit.txt, finished.json) into
RunRecords, the benchmark grid's names, and D4RL's reference returns."""

from __future__ import annotations

import csv
import json
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Optional

PROJECT = Path(__file__).resolve().parents[2]
DEFAULT_ROOT = "results/runs"  # where python -m tools.sweep --commit-dir puts the committed runs
D4RL_REFERENCE = PROJECT / "results" / "d4rl_reference.csv"
SCORE = "eval/normalized_score"
LAST = 3  # a run's score: the mean of its last LAST evaluations (results/protocol.md)
RETURN = "eval/return"
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
HALF_BUDGET = "_500k"  # suffix of the half-budget variants (tools/sweep.py): 500k updates on two medium-replay datasets
BF16_SUFFIX = "_bf16"  # suffix of the --precision bf16 variants (tools/sweep.py): claim P, read by results/precision.md
# Variants in the chapter's order, then the ablations, the longer budgets and the peer; any other variant
# follows, alphabetically.
ORDER = ["bc", "bc_10", "bc_filtered", "awr", "awac", "bcq", "td3_bc", "cql", "iql", "dt", "mopo", "combo",
         "td3_nobc", "mopo_nopen", "dt_init1", "cql_mean_target", "bc_10_500k", "awr_500k", "td3_bc_500k",
         "iql_500k", *PEERS.values()]
KIND_ORDER = ["random", "medium", "medium-replay", "medium-expert", "expert"]
HEADLINE, PENDULUM = "MuJoCo", "Pendulum"
ENV_NAMES = {"hopper": "Hopper", "halfcheetah": "HalfCheetah", "walker2d": "Walker2d", "pendulum": "Pendulum"}


@dataclass
class RunRecord:
    variant: str
    dataset: str
    seed: int
    evaluations: list[dict]  # log records with an evaluation, by step (a resumed run's repeats: the last wins)
    record: dict = field(default_factory=dict)  # run.json: {"algo", "config", "dataset", "machine", "command", ...}
    commit: str = ""  # commit.txt, the sweep's record of the checkout (older runs: run.json's "commit")
    finished_step: Optional[int] = None  # finished.json's step: all the run's updates are done

    @property
    def config(self) -> dict:
        """The resolved config of run.json (TrainConfig; the peer's arguments)."""
        return self.record.get("config") or {}

    @property
    def command(self) -> list[str]:
        """run.json's command: the interpreter's name, the script and its arguments."""
        return list(self.record.get("command") or [])

    @property
    def machine(self) -> str:
        """run.json's machine (CPU model and count, GPU), added by the sweep; "" when not recorded."""
        machine = self.record.get("machine")
        return machine if isinstance(machine, str) else ""

    @property
    def dataset_size(self) -> Optional[tuple[int, int]]:
        """(episodes, transitions) of the local dataset the run read, from run.json's "dataset" (builds of a collected
        dataset on two machines can differ); None when not recorded."""
        dataset = self.record.get("dataset")
        if isinstance(dataset, dict) and all(isinstance(dataset.get(k), int) for k in ("episodes", "transitions")):
            return dataset["episodes"], dataset["transitions"]
        return None

    @property
    def algo(self) -> str:
        """The script that ran (algorithms/<algo>.py), or the peer's algorithm."""
        return self.record.get("algo", self.variant)

    @property
    def flags(self) -> dict[str, str]:
        """The --field value pairs the command gave (the last of each wins, as in the scripts)."""
        words, flags = self.command, {}
        for i, word in enumerate(words):
            if word.startswith("--") and "=" in word:
                flags[word[2:].split("=", 1)[0]] = word.split("=", 1)[1]
            elif word.startswith("--") and i + 1 < len(words) and not words[i + 1].startswith("--"):
                flags[word[2:]] = words[i + 1]
        return flags

    @property
    def steps(self) -> list[int]:
        return [r["step"] for r in self.evaluations]

    @property
    def scores(self) -> list[float]:
        return [r[SCORE] for r in self.evaluations]

    @property
    def d4rl_scores(self) -> Optional[list[float]]:
        """The same evaluations on D4RL's scale (None: no D4RL reference for the environment, or no return)."""
        if d4rl_reference().get(env_of(self.dataset)) is None or any(RETURN not in r for r in self.evaluations):
            return None
        return [d4rl_score(env_of(self.dataset), r[RETURN]) for r in self.evaluations]

    @property
    def score(self) -> float:
        """The run's score: the mean of the normalized scores of its last LAST evaluations (fewer if it has fewer)."""
        return last_mean(self.scores)

    @property
    def d4rl_score(self) -> Optional[float]:
        """The same on D4RL's scale (None without a D4RL reference)."""
        d4rl = self.d4rl_scores
        return None if d4rl is None else last_mean(d4rl)

    @property
    def budget(self) -> int:
        """The updates the run reached (its last evaluation's step)."""
        return self.steps[-1]


def last_mean(values: list[float]) -> float:
    """The mean of the last LAST values (of all of them when there are fewer)."""
    tail = values[-LAST:]
    return sum(tail) / len(tail)


@lru_cache(maxsize=None)
def _reference(path: Path) -> dict[str, tuple[float, float, str]]:
    if not path.is_file():
        return {}
    return {row["env"]: (float(row["ref_min_score"]), float(row["ref_max_score"]), row["source"])
            for row in csv.DictReader(path.open())}


def d4rl_reference() -> dict[str, tuple[float, float, str]]:
    """env -> (REF_MIN_SCORE, REF_MAX_SCORE, source) of results/d4rl_reference.csv: D4RL's published random and
    expert returns (d4rl/infos.py) for Hopper, HalfCheetah and Walker2d."""
    return _reference(D4RL_REFERENCE)


def d4rl_score(env: str, episode_return: float) -> float:
    """100 (R - REF_MIN) / (REF_MAX - REF_MIN), as d4rl's get_normalized_score."""
    low, high, _ = d4rl_reference()[env]
    return 100.0 * (episode_return - low) / (high - low)


def d4rl_citation() -> str:
    """One line naming D4RL's reference returns and where they come from: the repository, commit, file and lines of
    results/d4rl_reference.csv's columns (its source column says the same in prose, for people)."""
    if not D4RL_REFERENCE.is_file():
        return "D4RL reference returns: results/d4rl_reference.csv is missing."
    rows = list(csv.DictReader(D4RL_REFERENCE.open()))
    values = "; ".join(f"{ENV_NAMES.get(r['env'], r['env'])} {r['ref_min_score']} / {r['ref_max_score']}" for r in rows)
    where = ", ".join(f"{ENV_NAMES.get(r['env'], r['env'])} lines {r['ref_min_line']} and {r['ref_max_line']}"
                      for r in rows)
    first = rows[0]
    return (f"D4RL reference returns REF_MIN_SCORE / REF_MAX_SCORE: {values} ({first['repository']} commit "
            f"{first['commit']}, {first['file']}, {where}; lines {first['v2_lines']} apply them to every -v2 dataset; "
            "results/d4rl_reference.csv).")


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


def dataset_name(dataset: str) -> str:
    """'local/halfcheetah/medium-replay-v0' -> 'HalfCheetah medium-replay'."""
    return f"{ENV_NAMES.get(env_of(dataset), env_of(dataset))} {kind(dataset)}"


def suite(dataset: str) -> str:
    return PENDULUM if env_of(dataset) == "pendulum" else HEADLINE


def variant_key(variant: str) -> tuple:
    return (ORDER.index(variant), "") if variant in ORDER else (len(ORDER), variant)


def dataset_key(dataset: str) -> tuple:
    k = kind(dataset)
    core = CORE.index(dataset) if dataset in CORE else len(CORE)
    return (core, dataset.rsplit("/", 1)[0], KIND_ORDER.index(k) if k in KIND_ORDER else len(KIND_ORDER), k)


def read_run(run_dir: Path, root: Path) -> Optional[RunRecord]:
    """The run in run_dir, or None: a folder that is not a run's, or one whose files are not what a run writes (bad
    UTF-8, JSON nested too deep, values of the wrong type), which is skipped with one warning line naming it."""
    parts = run_dir.relative_to(root).parts
    if len(parts) < 3 or not parts[-1].startswith("seed") or not parts[-1][4:].isdigit():
        return None
    try:
        return parse_run(run_dir, parts)
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
        why = " ".join(str(e).split())[:200] or type(e).__name__
        print(f"warning: skipped the run in {run_dir}: its files are not what a run writes ({why}).", file=sys.stderr)
        return None


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_run(run_dir: Path, parts: tuple) -> RunRecord:
    by_step = {}
    for line in (run_dir / "log.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a crash
            continue
        if not isinstance(record, dict) or not isinstance(record.get("step"), int) or not all(
                is_number(v) for k, v in record.items() if k.startswith(("eval/", "train/")) or k == "wall_time"):
            raise TypeError(f"log.jsonl has a row that is not a run's: {line[:80]}")
        if SCORE in record:
            by_step[record["step"]] = record
    run = RunRecord(parts[0], "/".join(parts[1:-1]), int(parts[-1][4:]), [by_step[s] for s in sorted(by_step)])
    if (run_dir / "run.json").exists():
        try:
            run.record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError:  # cut by a crash while written: the run still has its log
            pass
        if not isinstance(run.record, dict) or not isinstance(run.record.get("config", {}), dict):
            raise TypeError("run.json is not a JSON object with a config")
    if (run_dir / "commit.txt").exists():
        run.commit = (run_dir / "commit.txt").read_text().strip()
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
