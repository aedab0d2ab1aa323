"""tools/results (make_results.py): a run's score (the mean of its last 3 evaluations), tables on both scales, the
t intervals (Welch's, one-sample) and the protocol's verdicts (SUPPORTED / CONTRADICTED / UNDECIDED) on made-up
cells, the aggregate grouped by budget, the peer table, the published numbers, every claim (SUPPORTED and
CONTRADICTED, and its reading) from hand-written run directories, fine-tuning (o2o.md, the drop and the dip), the
reproduce commands from run.json, the plots' rules."""

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from tools import peer_d3rlpy, variants
from tools.results import claims as claims_module
from tools.results import (headers, make_results, o2o, plots, published, readme, reproduce, runs as runs_module,
                           scores as scores_module, stats, verdicts)
from tools.results.verdicts import CONTRADICTED, EQUIVALENT, GREATER, LESS, SUPPORTED, UNDECIDED

MEDIUM_REPLAY = "local/pendulum/medium-replay-v0"
CORE_MR, CORE_HC, CORE_ME = runs_module.CORE
NARROW_WALKER, NARROW_CHEETAH = claims_module.NARROW
RETURN = -200.0  # every hand-written evaluation's return: D4RL scale Hopper -5.5, HalfCheetah 0.6
LABELS = ["1", "2", "3", "4", "5", "6", "7", "8", "8b", "9", "9b", "10", "10b", "11", "P"]


def write_run(root: Path, variant: str, dataset: str, seed: int, scores: dict, extra: dict | None = None,
              lines: tuple = (), budget: str = "--max_steps 20 --eval_every 10 --eval_episodes 5",
              returns: dict | None = None) -> Path:
    """A run directory as a sweep commits it: log.jsonl with one evaluation record per (step: score) and a
    training-only record between them, and run.json (the script's record of what the run is)."""
    run_dir = root / variant / dataset / f"seed{seed}"
    run_dir.mkdir(parents=True)
    records = []
    for step, score in scores.items():
        records.append({"step": step - 5, "wall_time": 0.0, "train/loss": 1.0})
        records.append({"step": step, "wall_time": 0.0, "eval/return": (returns or {}).get(step, RETURN),
                        "eval/normalized_score": score, **(extra or {})})
    text = "".join(json.dumps(r) + "\n" for r in records) + "".join(lines)
    (run_dir / "log.jsonl").write_text(text)
    checkpoints = f"/x/runs/bench/{variant}/{dataset}/seed{seed}"
    words = budget.split()
    given = dict(zip(words[::2], words[1::2]))
    if variant.startswith("d3rlpy_"):
        algo = variant.removeprefix("d3rlpy_")
        command = ["python", "tools/peer_d3rlpy.py", "--algo", algo, "--dataset_id", dataset, "--seed", str(seed),
                   "--checkpoints_path", checkpoints, *words]
    else:
        algo, flags = variants.VARIANTS.get(variant, (variant, []))
        command = ["python", f"algorithms/{algo}.py", "--config_path", f"configs/{algo}/x.yaml", "--dataset_id",
                   dataset, "--seed", str(seed), "--checkpoints_path", checkpoints, *flags, *words]
    config = {"dataset_id": dataset, "seed": seed, "checkpoints_path": checkpoints, "device": "auto",
              **{k[2:]: int(v) if v.isdigit() else v for k, v in given.items()}}
    (run_dir / "run.json").write_text(json.dumps({"algo": algo, "config": config, "commit": None, "torch": None,
                                                  "command": command}))
    return run_dir


def claim_run(root: Path, variant: str, dataset: str, seed: int, score: float, extra: dict | None = None) -> None:
    """A run at its claim's budget and cadence (verdicts.BUDGETS) whose last 3 evaluations score score - 1,
    score + 1 and score: its score is score."""
    offline, _, every = verdicts.BUDGETS[variant]
    steps = [offline - 2 * every, offline - every, offline]
    write_run(root, variant, dataset, seed, dict(zip(steps, (score - 1, score + 1, score))), extra,
              budget=f"--max_steps {offline} --eval_every {every} --eval_episodes 10")


def write_online_run(root: Path, variant: str, dataset: str, seed: int, offline_score: float, online,
                     budget: tuple | None = None, episodes: int = 10) -> None:
    """An offline -> online run as the scripts log it, at its claim's budget (verdicts.BUDGETS) unless given:
    offline evaluations every eval_every updates scoring offline_score (none from scratch), then online ones every
    eval_every environment steps (utd 1) scoring online(env_steps); env_steps in every row, finished.json."""
    offline, online_steps, every = budget or verdicts.BUDGETS[variant]
    run_dir = root / variant / dataset / f"seed{seed}"
    run_dir.mkdir(parents=True)
    rows = [{"step": step, "env_steps": 0, "eval/normalized_score": offline_score}
            for step in range(every, offline + 1, every)]
    rows += [{"step": offline + env, "env_steps": env, "eval/normalized_score": online(env)}
             for env in range(every, online_steps + 1, every)]
    (run_dir / "log.jsonl").write_text("".join(json.dumps({**r, "wall_time": 0.0, "eval/return": RETURN}) + "\n"
                                               for r in rows))
    algo = "iql" if variant in ("iql_o2o", "awac_o2o") else "cql"
    config = {"dataset_id": dataset, "seed": seed, "max_steps": offline, "online_steps": online_steps, "utd": 1,
              "eval_every": every, "eval_episodes": episodes}
    command = ["python", f"algorithms/{algo}.py", "--dataset_id", dataset, "--seed", str(seed), "--checkpoints_path",
               f"/x/runs/bench/{variant}/{dataset}/seed{seed}", *variants.VARIANTS.get(variant, (algo, []))[1],
               "--online_steps", str(online_steps)]
    (run_dir / "run.json").write_text(json.dumps({"algo": algo, "config": config, "command": command}))
    (run_dir / "finished.json").write_text(json.dumps({"step": offline + online_steps}))


def d4rl(env: str, episode_return: float) -> float:
    low, high = {"hopper": (-20.272305, 3234.3), "halfcheetah": (-280.178953, 12135.0)}[env]
    return 100 * (episode_return - low) / (high - low)


@pytest.fixture
def fast_bootstrap(monkeypatch):
    monkeypatch.setattr(stats, "REPS", 300)


@pytest.fixture
def fake_root(tmp_path, fast_bootstrap):
    root = tmp_path / "runs"
    write_run(root, "bc", MEDIUM_REPLAY, 0, {10: 20.0, 20: 30.0})
    # seed 1 was resumed: step 20 is logged twice and the last record wins; a line cut by a crash is ignored.
    write_run(root, "bc", MEDIUM_REPLAY, 1, {10: 50.0, 20: 99.0},
              lines=(json.dumps({"step": 20, "eval/normalized_score": 40.0, "eval/return": RETURN}) + "\n",
                     '{"step": 3'))
    write_run(root, "td3_bc", MEDIUM_REPLAY, 0, {10: 60.0, 20: 70.0})
    write_run(root, "td3_bc", MEDIUM_REPLAY, 1, {10: 90.0, 20: 80.0})
    write_run(root, "bc_10", MEDIUM_REPLAY, 0, {10: 10.0, 20: 12.0})
    write_run(root, "bc_10", MEDIUM_REPLAY, 1, {10: 10.0, 20: 14.0})
    return root


def read_csv(path: Path) -> dict:
    return {(row["variant"], row["dataset"]): row for row in csv.DictReader(path.open())}


def by_label(found) -> dict:
    return {c.label: c for c in found}


def details(found) -> dict:
    return {c.label: "\n".join(c.lines) for c in found}


def test_a_runs_score_is_the_mean_of_its_last_3_evaluations():
    def run(seed, scores):
        return runs_module.RunRecord("iql", CORE_MR, seed, [{"step": 10 * (i + 1), "eval/normalized_score": s,
                                                            "eval/return": RETURN} for i, s in enumerate(scores)])

    assert run(0, [0.0, 100.0, 10.0, 20.0, 30.0]).score == 20.0  # not 30 (the last), not 100 (the best)
    assert run(0, [5.0, 7.0]).score == 6.0 and run(0, [4.0]).score == 4.0  # fewer than 3: all of them
    cells = stats.score_table([run(0, [0.0, 100.0, 10.0, 20.0, 30.0]), run(1, [50.0, 40.0, 60.0, 89.0])])
    score, last, best = (cells["iql", CORE_MR][which] for which in ("score", "last", "best"))
    assert score.values == [20.0, 63.0] and last.values == [30.0, 89.0] and best.values == [100.0, 89.0]
    # Cells: mean ± sample std (ddof 1): 41.5 ± 43 / sqrt(2); one seed shows its value with n=1.
    assert score.std == pytest.approx(43 / math.sqrt(2)) and score.text() == "41.5 ± 30.4 (n=2, 40-50)"
    assert stats.Stat([4.0], [10]).text() == "4.0 (n=1, 10)" and math.isnan(stats.Stat([4.0]).std)


def test_scores_from_hand_written_logs(fake_root, tmp_path):
    out = tmp_path / "results"
    make_results(fake_root, out, command="python -m tools.sweep --fake")
    rows = read_csv(out / "scores.csv")
    # bc: scores (20+30)/2 = 25 and (50+40)/2 = 45 -> 35 ± 14.1 (sample std); last 30 and 40 -> 35 ± 7.1; best 30
    # and 50 -> 40 ± 14.1.
    bc = rows["bc", MEDIUM_REPLAY]
    assert (bc["n_seeds"], float(bc["score_mean"]), float(bc["score_std"]), bc["updates"]) == \
        ("2", 35.0, pytest.approx(14.1421, abs=1e-4), "20")
    assert (float(bc["last_mean"]), float(bc["last_std"])) == (35.0, pytest.approx(7.0711, abs=1e-4))
    assert (float(bc["best_mean"]), float(bc["best_std"]), bc["suite"]) == (40.0, pytest.approx(14.1421, abs=1e-4),
                                                                           "Pendulum")
    assert bc["score_d4rl_mean"] == ""  # Pendulum has no D4RL counterpart
    # td3_bc: scores 65 and 85 -> 75; last 70 and 80 -> 75; best 70 and 90 -> 80.
    td3 = rows["td3_bc", MEDIUM_REPLAY]
    assert (float(td3["score_mean"]), float(td3["last_mean"]), float(td3["best_mean"])) == (75.0, 75.0, 80.0)
    # The MuJoCo grid has no run: every planned core cell is there, as not run.
    assert rows["iql", CORE_MR]["updates"] == "not run" and rows["iql", CORE_MR]["n_seeds"] == "0"
    md = (out / "scores.md").read_text()
    score = md[md.index("## Pendulum: score"):md.index("## Pendulum: last evaluation")]
    last = md[md.index("## Pendulum: last evaluation"):md.index("## Pendulum: best")]
    assert "| bc | 35.0 ± 14.1 (n=2, 20) |" in score and "| td3_bc | 75.0 ± 14.1 (n=2, 20) |" in score
    assert "| bc | 35.0 ± 7.1 (n=2, 20) |" in last
    assert "python -m tools.sweep --fake" in md and "20 updates per offline run" in md
    assert (out / "curves-pendulum.png").stat().st_size > 0 and (out / "profiles.png").stat().st_size > 0
    claims = (out / "claims.md").read_text()
    assert claims.count(f"| {UNDECIDED} |") == len(LABELS)  # no MuJoCo run: every claim names what is missing
    assert f"{CORE_MR}: bc_10 - bc: missing: bc_10 and bc not run at the claim's budget: UNDECIDED (missing)." in claims


def test_the_dataset_build_and_the_machine_come_from_run_json_only(tmp_path):
    """Scripts record the data they read in run.json and the sweep adds the machine there; the text files of older
    sweeps (dataset.txt, machine.txt) are not read; the sweep's commit.txt names the checkout."""
    new = write_run(tmp_path, "iql", CORE_MR, 0, {20: 50.0})
    record = json.loads((new / "run.json").read_text())
    record["dataset"] = {"id": CORE_MR, "episodes": 12, "transitions": 3000, "sha256": "ab" * 32}
    record["machine"] = "AMD EPYC (2 CPUs), no GPU"
    (new / "run.json").write_text(json.dumps(record))
    (new / "dataset.txt").write_text(f"{CORE_MR}: 11 episodes, 2999 steps\n")  # not read
    (new / "machine.txt").write_text("another machine\n")  # not read
    (new / "commit.txt").write_text("0123456789abcdef\n")
    old = write_run(tmp_path, "iql", CORE_MR, 1, {20: 50.0})
    (old / "dataset.txt").write_text(f"{CORE_MR}: 11 episodes, 2999 steps\n")
    (old / "machine.txt").write_text("another machine\n")
    by_seed = {r.seed: r for r in runs_module.load_runs([tmp_path])}
    assert (by_seed[0].dataset_size, by_seed[1].dataset_size) == ((12, 3000), None)
    assert (by_seed[0].machine, by_seed[1].machine) == ("AMD EPYC (2 CPUs), no GPU", "")
    assert scores_module.dataset_builds(list(by_seed.values())) == [
        f"{CORE_MR}: 12 episodes, 3000 steps: 1 run; not recorded (committed before runs recorded it): 1 run"]
    assert "cpu on AMD EPYC (2 CPUs), no GPU" in "\n".join(headers.header([by_seed[0]], ["c"], [tmp_path], "r.md"))
    from tools.results.rerun import commit_of

    assert (commit_of(by_seed[0]), commit_of(by_seed[1])) == ("0123456", "not recorded")


def test_d4rl_scale_beside_the_local_one(tmp_path, fast_bootstrap):
    """D4RL's reference returns (results/d4rl_reference.csv): its expert return scores 100, its random 0."""
    root = tmp_path / "runs"
    write_run(root, "iql", CORE_MR, 0, {10: 50.0, 20: 90.0}, returns={10: -20.272305, 20: 3234.3})
    write_run(root, "iql", CORE_MR, 1, {10: 40.0, 20: 30.0}, returns={10: 1000.0, 20: 1607.01})
    write_run(root, "iql", CORE_HC, 0, {10: 50.0}, returns={10: 12135.0})
    out = tmp_path / "results"
    make_results(root, out, command="x")
    rows = read_csv(out / "scores.csv")
    mr = rows["iql", CORE_MR]
    seed1 = (d4rl("hopper", 1000.0) + d4rl("hopper", 1607.01)) / 2
    assert float(mr["score_d4rl_mean"]) == pytest.approx((50.0 + seed1) / 2, abs=1e-3)
    assert float(mr["last_d4rl_mean"]) == pytest.approx((100.0 + d4rl("hopper", 1607.01)) / 2, abs=1e-3)
    assert float(mr["best_d4rl_mean"]) == pytest.approx((100.0 + d4rl("hopper", 1000.0)) / 2, abs=1e-3)
    assert float(rows["iql", CORE_HC]["score_d4rl_mean"]) == pytest.approx(100.0)
    md = (out / "scores.md").read_text()
    assert "| 60.0 ± 42.4 / D4RL 75.0 ± 35.4 (n=2, 20) |" in md  # the last evaluation's table
    # The table's header cites where D4RL's numbers come from.
    assert "d4rl/infos.py, Hopper lines 139 and 229" in md and "Hopper -20.272305 / 3234.3" in md
    assert "/ D4RL" in (out / "peer.md").read_text()


def test_t_intervals_against_scipy_and_by_hand():
    a, b = [61.0, 58.0, 70.0, 65.0, 52.0], [40.0, 44.0, 38.0]
    # Welch's interval (unequal variances, Welch-Satterthwaite df) is scipy's.
    diff, low, high = stats.welch_interval(a, b)
    ci = scipy_stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert diff == pytest.approx(sum(a) / 5 - sum(b) / 3) and (low, high) == pytest.approx((ci.low, ci.high))
    # By hand: [1, 2, 3] - [0, 0, 0]: se = sqrt(1/3), df = 2, t_0.975,2 = 4.302653 -> 2 ± 2.484138.
    assert stats.welch_interval([1, 2, 3], [0, 0, 0]) == pytest.approx((2.0, 2 - 2.484138, 2 + 2.484138))
    # The one-sample interval: the same numbers for [1, 2, 3] alone, and scipy's.
    assert stats.mean_interval([1, 2, 3]) == pytest.approx((2.0, 2 - 2.484138, 2 + 2.484138))
    ci = scipy_stats.ttest_1samp(a, 0).confidence_interval(0.95)
    assert stats.mean_interval(a)[1:] == pytest.approx((ci.low, ci.high))
    # Constant sides: the difference is exact.
    assert stats.welch_interval([3, 3, 3], [1, 1]) == (2.0, 2.0, 2.0)


def test_iqm_keeps_the_stratified_bootstrap(fast_bootstrap):
    # IQM of 0..7: the middle half 2, 3, 4, 5 -> 3.5, inside its interval.
    point, low, high = stats.iqm_interval([[0, 1, 2, 3], [4, 5, 6, 7]])
    assert point == 3.5 and low < 3.5 < high
    # Stratified: every dataset's seeds agree, so every resample is the same (an unstratified bootstrap
    # over the pooled 10, 10, 20, 20 would vary).
    assert stats.iqm_interval([[10, 10], [20, 20]]) == (15.0, 15.0, 15.0)
    # The same logs give the same intervals.
    assert stats.iqm_interval([[1, 5, 9], [2, 3]]) == stats.iqm_interval([[1, 5, 9], [2, 3]])


def five(mean: float, spread: float = 1.0) -> stats.Stat:
    return stats.Stat([mean - 2 * spread, mean - spread, mean, mean + spread, mean + 2 * spread])


def test_verdicts_on_made_up_cells():
    part = lambda a, b, test=GREATER: verdicts.make_part("d", test, [("a", a), ("b", b)])  # noqa: E731
    above, below = part(five(30), five(10)), part(five(10), five(30))
    assert (above.verdict, above.reason, below.verdict) == (SUPPORTED, "", CONTRADICTED)
    assert (above.diff, above.low, above.high) == pytest.approx(stats.welch_interval(five(30).values, five(10).values))
    assert "= +20.0, 95% Welch t interval [" in above.line and above.line.endswith("above 0: SUPPORTED.")
    across = part(five(12, spread=8), five(10))  # +2 with a wide spread: the interval straddles 0
    assert (across.verdict, across.reason, across.side) == (UNDECIDED, verdicts.STRADDLES, UNDECIDED)
    # Fewer than 5 seeds a side: UNDECIDED whatever the interval, which is still shown.
    few = part(stats.Stat([30, 31, 32, 33]), five(10))
    assert (few.verdict, few.reason, few.side) == (UNDECIDED, "n < 5", SUPPORTED)
    assert few.line.endswith("above 0: UNDECIDED (n < 5).")
    one = part(stats.Stat([30.0]), five(10))
    assert (one.verdict, one.low, one.diff) == (UNDECIDED, None, 20.0) and "no interval (1 seed)" in one.line
    missing = part(None, five(10))
    assert (missing.verdict, missing.reason) == (UNDECIDED, verdicts.MISSING) and "missing: a not run" in missing.line
    # Equivalence: the Welch interval inside ±10, entirely outside it, or across it.
    assert part(five(12), five(10), EQUIVALENT).verdict == SUPPORTED
    assert part(five(40), five(10), EQUIVALENT).verdict == CONTRADICTED
    assert part(five(19), five(10), EQUIVALENT).reason == verdicts.STRADDLES  # 9 [6.7, 11.3]
    # A per-seed quantity: the one-sample interval (claim 5: Q - G < 0).
    bound = verdicts.make_part("d", LESS, [("cql", five(-5))], "Q - G", "per seed")
    assert bound.verdict == SUPPORTED and "95% one-sample t interval" in bound.line
    # A claim of several parts: SUPPORTED iff every part is, CONTRADICTED iff any part is, else UNDECIDED.
    assert verdicts.combine([above, above]) == SUPPORTED
    assert verdicts.combine([above, below, across]) == CONTRADICTED
    assert verdicts.combine([above, across]) == verdicts.combine([above, few]) == UNDECIDED
    assert verdicts.combine([above, missing]) == verdicts.combine([]) == UNDECIDED


def test_partial_grid_is_shown_as_partial(tmp_path, fast_bootstrap):
    root = tmp_path / "runs"
    for seed, score in enumerate([40.0, 50.0]):
        write_run(root, "iql", CORE_MR, seed, {2500: score - 10, 5000: score})
    write_run(root, "iql", CORE_ME, 0, {1000: 70.0})
    out = tmp_path / "results"
    make_results(root, out, command="x")
    md = (out / "scores.md").read_text()
    score = md[md.index("## MuJoCo: score"):md.index("## MuJoCo: last evaluation")]
    assert f"| variant | {CORE_MR} | {CORE_HC} | {CORE_ME} |" in score
    assert "| iql | 40.0 ± 7.1 / D4RL -5.5 ± 0.0 (n=2, 5k) | not run | 70.0 / D4RL -5.5 (n=1, 1k) |" in score
    assert "| bc | not run | not run | not run |" in score
    assert f"| - | iql | partial: not run on {CORE_HC} | - | - |" in md
    agg = list(csv.DictReader((out / "aggregate.csv").open()))
    assert {r["variant"]: r["note"] for r in agg}["bc"] == "not run"


def test_aggregate_iqm_over_the_core_datasets(tmp_path, fast_bootstrap):
    root = tmp_path / "runs"
    for dataset, scores in zip(runs_module.CORE, ([0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11])):
        for seed, score in enumerate(scores):
            write_run(root, "td3_bc", dataset, seed, {10: float(score)})
    out = tmp_path / "results"
    make_results(root, out, command="x")
    row = {r["variant"]: r for r in csv.DictReader((out / "aggregate.csv").open())}["td3_bc"]
    # 0..11: the middle half 3..8 -> 5.5.
    assert float(row["iqm"]) == 5.5 and float(row["ci_low"]) < 5.5 < float(row["ci_high"])
    assert row["seeds_per_core_dataset"] == "4 + 4 + 4" and row["note"] == "" and row["updates"] == "10"
    # On D4RL's scale every run returned -200: Hopper -5.5 (8 runs), HalfCheetah 0.6 (4 runs); sorted, the
    # middle half (indices 3..8 of 12) is 5 Hopper runs and 1 HalfCheetah run.
    assert float(row["d4rl_iqm"]) == pytest.approx((5 * d4rl("hopper", RETURN) + d4rl("halfcheetah", RETURN)) / 6,
                                                   abs=1e-3)
    assert "| 10 | td3_bc | 5.5 [" in (out / "scores.md").read_text()


def test_aggregate_groups_rows_by_budget(tmp_path, fast_bootstrap):
    """dt at 8k scores above iql at 50k: the rows say their budgets and the 50k group comes first."""
    root = tmp_path / "runs"
    for dataset in runs_module.CORE:
        for seed in (0, 1):
            write_run(root, "iql", dataset, seed, {50000: 40.0 + seed}, budget="--max_steps 50000")
            write_run(root, "dt", dataset, seed, {8000: 80.0 + seed}, budget="--max_steps 8000")
            write_run(root, "awr", dataset, seed, {20000 if dataset == CORE_ME else 50000: 30.0 + seed})
    out = tmp_path / "results"
    make_results(root, out, command="x")
    rows = list(csv.DictReader((out / "aggregate.csv").open()))
    assert [(r["variant"], r["updates"]) for r in rows if r["iqm"]] == [
        ("iql", "50k"), ("dt", "8k"), ("awr", "mixed: 20k, 50k")]
    md = (out / "scores.md").read_text()
    assert md.index("| 50k | iql |") < md.index("| 8k | dt |") and "compare rows only within a group" in md



def test_peer_table_side_by_side(tmp_path, fast_bootstrap):
    root = tmp_path / "runs"
    for seed, (ours, peer) in enumerate([(60.0, 50.0), (62.0, 52.0), (64.0, 54.0)]):
        write_run(root, "iql", CORE_MR, seed, {10: ours})
        write_run(root, "d3rlpy_iql", CORE_MR, seed, {10: peer})
    write_run(root, "bc", CORE_MR, 0, {10: 30.0})
    write_run(root, "d3rlpy_bc", CORE_MR, 0, {10: 20.0})
    out = tmp_path / "results"
    make_results(root, out, command="x")
    peer = (out / "peer.md").read_text()
    line = next(l for l in peer.splitlines() if l.startswith(f"| iql | {CORE_MR} |"))
    assert "| 62.0 ± 2.0 / D4RL -5.5 ± 0.0 (n=3, 10) | 52.0 ± 2.0 / D4RL -5.5 ± 0.0 (n=3, 10) | +10.0 [" in line
    low, high = map(float, line.rsplit("[", 1)[1].rstrip(" |]").split(", "))
    ci = scipy_stats.ttest_ind([60, 62, 64], [50, 52, 54], equal_var=False).confidence_interval(0.95)
    assert (low, high) == pytest.approx((ci.low, ci.high), abs=0.05)  # Welch's interval: 10 ± 4.5
    assert "+10.0 (no interval: 2 seeds a side needed)" in peer  # bc: one seed a side
    assert f"| cql | {CORE_MR} | not run | not run | - |" in peer
    rows = {(r["algorithm"], r["dataset"]): r for r in csv.DictReader((out / "peer.csv").open())}
    assert (rows["iql", CORE_MR]["ours_n"], float(rows["iql", CORE_MR]["difference"])) == ("3", 10.0)


# A grid of 5 seeds a cell at each claim's budget on which every claim holds, and its mirror on which every claim
# is contradicted.  Each cell's seeds score level + 0, 1, 2, 3, 4 (mean level + 2, sample std 1.6).
def targets(up: bool):
    if up:
        return lambda seed: {"eval/target_3000/normalized_score": 90.0 + seed,
                             "eval/target_1500/normalized_score": 45.0}
    return lambda seed: {"eval/normalized_score_3000": 40.0 + seed, "eval/normalized_score_1500": 45.0}  # older keys


def claim_grid(root: Path, holds: bool) -> None:
    def cell(variant, dataset, level, extra=None):
        for seed in range(5):
            claim_run(root, variant, dataset, seed, level + seed, extra(seed) if callable(extra) else extra)

    def q(value):
        return {"eval/q_initial": value, "eval/discounted_return": 100.0}

    td, dt = (60, 30) if holds else (0, 90)
    for dataset in (CORE_MR, CORE_HC):
        cell("bc", dataset, 20)
        for method in claims_module.TD_METHODS:  # claims 1, 3 (iql, td3_bc), 6 (mopo), 7 (iql), 8 (td3_bc)
            cell(method, dataset, td, q(50.0 if holds else 150.0) if method == "cql" else None)
        cell("bc_10", dataset, 60 if holds else 0)
        cell("awr", dataset, 30 if holds else 90)
        cell("td3_nobc", dataset, 5 if holds else 90, q(1000.0 if holds else 0.0))
        cell("dt", dataset, dt, targets(holds))
    cell("bc_10", CORE_ME, 90)
    cell("dt", CORE_ME, 92 if holds else 40, targets(holds))
    cell("cql", CORE_ME, 50, q(50.0 if holds else 150.0))
    cell("mopo_nopen", CORE_MR, 30 if holds else 50)
    for dataset in claims_module.NARROW:
        cell("td3_bc", dataset, td)
        cell("td3_nobc", dataset, 5 if holds else 90, q(1000.0 if holds else 0.0))
    for variant in claims_module.BF16:
        cell(f"{variant}_bf16", CORE_HC, 61 if holds else 100)
    for dataset in o2o.O2O_DATASETS:
        for seed in range(5):
            write_online_run(root, "iql_o2o", dataset, seed, 50.0, lambda env: (80.0 if holds else 20.0) + seed)
            for baseline in ("sac_scratch_cql", "sac_scratch", "awac_o2o"):
                write_online_run(root, baseline, dataset, seed, 40.0, lambda env: (20.0 if holds else 80.0) + seed)
    # cql_o2o collapses from 60 to 10 for its first 3000 environment steps; calql_o2o to 55.
    collapse, mild = (lambda env: 10.0 if env <= 3000 else 60.0), (lambda env: 55.0)
    for dataset, episodes in ((CORE_MR, 10), (CORE_ME, claims_module.EPISODES)):
        for seed in range(5):
            write_online_run(root, "cql_o2o", dataset, seed, 60.0, collapse if holds else mild, episodes=episodes)
            write_online_run(root, "calql_o2o", dataset, seed, 60.0, mild if holds else collapse, episodes=episodes)


@pytest.mark.parametrize("holds", [True, False])
def test_every_claim_is_supported_and_contradicted_on_its_intervals(tmp_path, holds):
    root = tmp_path / "runs"
    claim_grid(root, holds)
    found = claims_module.check_claims(runs_module.load_runs([root]))
    assert [c.label for c in found] == LABELS
    assert [c.verdict for c in found] == [SUPPORTED if holds else CONTRADICTED] * len(LABELS), \
        [(c.label, c.verdict, c.lines) for c in found if c.verdict != (SUPPORTED if holds else CONTRADICTED)]
    lines = details(found)
    claims_module.write_claims(found, ["head"], tmp_path / "claims.md")
    text = (tmp_path / "claims.md").read_text()
    if holds:
        assert (f"{CORE_MR}: iql 62.0 ± 1.6 (n=5, 50k) - bc 22.0 ± 1.6 (n=5, 50k) = +40.0, 95% Welch t interval "
                "[37.7, 42.3], above 0: SUPPORTED.") in lines["1"]
        assert "dt's score at the highest target minus the lowest per seed: seed 0: 90.0 at 3000 - 45.0 at 1500" \
            in lines["4"]
        assert "seed 4: Q = 50.0, G = 100.0 (updates 6k-10k)" in lines["5"]
        assert f"{CORE_ME}: dt 94.0 ± 1.6 (n=5, 8k) - bc_10 92.0 ± 1.6 (n=5, 50k) = +2.0" in lines["3"]
        assert "inside ±10: SUPPORTED" in lines["3"] and f"{CORE_HC}: td3_bc 62.0" in lines["3"]
        assert "td3_nobc's Q(s0, pi(s0)) - G - 0.5 |G| per seed: seed 0: Q = 1000.0, G = 100.0 (updates 40k-50k)" \
            in lines["8b"]
        assert "drop in the first 20% online: cql_o2o 50.0 ± 0.0 (n=5) - calql_o2o 5.0 ± 0.0 (n=5) = +45.0" \
            in lines["10"]
        assert f"{CORE_ME}: dip: cql_o2o 50.0 ± 0.0 (n=5) - calql_o2o 5.0 ± 0.0 (n=5) = +45.0" in lines["10b"]
        assert "placebo dip inside the offline phase: cql_o2o 0.0 ± 0.0 (n=5) - calql_o2o 0.0 ± 0.0 (n=5)" \
            in lines["10b"]
        assert "should lie within 15 points of 48: 22.0 ± 1.6 (n=5), 26.0 points away." in lines["9b"]
        assert found[1].reading == ("Supported with 5 seeds a side, bc_10 and bc at 50k updates: bc_10 - bc = "
                                    "+40.0 [37.7, 42.3] on Hopper medium-replay and bc_10 - bc = +40.0 [37.7, 42.3] on "
                                    "HalfCheetah medium-replay.")
        assert "(short budgets: the score averages the later half of training, dt over updates 4k-8k)" \
            in found[2].reading
        assert "inside the offline phase the same rule gives" in by_label(found)["10b"].reading
    else:
        assert "bc_10 2.0 ± 1.6 (n=5, 50k) - bc 22.0 ± 1.6 (n=5, 50k) = -20.0" in lines["2"]
        assert "below 0: CONTRADICTED." in lines["2"]
        assert "entirely outside ±10: CONTRADICTED." in lines["3"] and "entirely outside ±10" in lines["P"]
        assert "seed 0: Q = 150.0, G = 100.0" in lines["5"] and "above 0: CONTRADICTED" in lines["5"]
        assert found[1].reading.startswith("Contradicted with 5 seeds a side, bc_10 and bc at 50k updates: "
                                           "bc_10 - bc = -20.0 [")
    assert all(c.reading and c.reading.endswith(".") for c in found)
    assert "| 8 | Extrapolation error on medium-replay" in text and "| 8b | Extrapolation error on narrow data" in text
    # Every claim has its Reading and the earlier verdict under its heading; the new verdict is the last column.
    assert text.count("\nReading: ") == len(LABELS)
    assert "| # | claim | reading | verdict 2026-12-04 (final evaluation, 2-3 seeds) | verdict |" in text
    assert "Verdict 2026-12-04 (final evaluation, 2-3 seeds): FAIL." in text.split("## 1.")[1].split("## 2.")[0]
    assert "Verdict 2026-12-04 (final evaluation, 2-3 seeds): new." in text.split("## 9b.")[1].split("## 10.")[0]


def test_one_contradicted_part_contradicts_and_too_few_seeds_or_a_straddling_interval_leave_undecided(tmp_path):
    root = tmp_path / "runs"
    claim_grid(root, holds=True)
    # Claim 7: awr above iql on HalfCheetah, a CONTRADICTED part beside the SUPPORTED one on Hopper.
    shutil.rmtree(root / "awr" / CORE_HC)
    for seed in range(5):
        claim_run(root, "awr", CORE_HC, seed, 90.0 + seed)
    # Claim 2: bc_10 keeps 3 seeds on HalfCheetah; claim 6: mopo_nopen's seeds spread across mopo's.
    for seed in (3, 4):
        shutil.rmtree(root / "bc_10" / CORE_HC / f"seed{seed}")
    shutil.rmtree(root / "mopo_nopen")
    for seed, score in enumerate([30.0, 90.0, 60.0, 40.0, 80.0]):
        claim_run(root, "mopo_nopen", CORE_MR, seed, score)
    found = by_label(claims_module.check_claims(runs_module.load_runs([root])))
    assert found["7"].verdict == CONTRADICTED
    assert found["7"].reading.startswith("Contradicted with 5 seeds a side, iql and awr at 50k updates: iql - awr = "
                                         "-30.0 [")
    assert found["7"].reading.endswith("while iql - awr = +30.0 [27.7, 32.3] on Hopper medium-replay hold.")
    assert found["2"].verdict == UNDECIDED
    assert f"{CORE_HC}: bc_10 61.0 ± 1.0 (n=3, 50k) - bc 22.0 ± 1.6 (n=5, 50k) = +39.0" in "\n".join(found["2"].lines)
    assert found["2"].reading.startswith("Undecided: fewer than 5 seeds (3-5 seeds a side, bc_10 and bc at 50k "
                                         "updates); on these seeds 1 of 1 intervals lie on the claim's side.")
    assert found["6"].verdict == UNDECIDED and "straddles 0: UNDECIDED (straddles)." in found["6"].lines[0]
    assert found["6"].reading.startswith("Undecided: mopo - mopo_nopen = +2.0 [")
    assert found["6"].reading.endswith("on Hopper medium-replay straddles 0 with 5 seeds a side.")
    assert found["1"].verdict == SUPPORTED


def test_a_critic_still_rising_is_said_beside_the_lower_bound(tmp_path):
    root = tmp_path / "runs"
    for dataset in runs_module.CORE:
        for seed in range(5):
            rising = dataset == CORE_MR
            extra = [{"eval/q_initial": (5.0 + step / 1000 + seed) if rising else 50.0 - step / 1000,
                      "eval/discounted_return": 100.0} for step in range(2000, 10001, 2000)]
            write_run(root, "cql", dataset, seed, {step: 30.0 for step in range(2000, 10001, 2000)},
                      budget="--max_steps 10000 --eval_every 2000 --eval_episodes 10",
                      lines=tuple(json.dumps({"step": step, "eval/normalized_score": 30.0, **e}) + "\n"
                                  for step, e in zip(range(2000, 10001, 2000), extra)))
    claim = by_label(claims_module.check_claims(runs_module.load_runs([root])))["5"]
    assert claim.verdict == SUPPORTED
    assert f"{CORE_MR}: cql's Q(s0, pi(s0)) - G per seed: seed 0: Q = 13.0, G = 100.0 (updates 6k-10k)" \
        in claim.lines[0]
    assert claim.reading.startswith("Supported with 5 seeds, cql at 10k updates: cql's Q(s0, pi(s0)) - G = "
                                    "-85.0 [")
    assert claim.reading.endswith("; on Hopper medium-replay Q(s0, pi(s0)) was still rising at the last evaluation of "
                                  "every seed (to 19.0): the critic had not converged at this budget, so the bound is "
                                  "tested only weakly there.")


def test_every_seed_beyond_the_threshold_is_said_beside_an_interval_that_straddles(tmp_path):
    root = tmp_path / "runs"
    walker, cheetah = claims_module.NARROW
    spread = {walker: [600.0, 250000.0, 17000.0, 900.0, 2200.0], cheetah: [400.0, -900.0, 30000.0, 500.0, 450.0]}
    for dataset, q_values in spread.items():  # Q - G - 0.5 |G| = Q - 150 with G = 100; one cheetah seed below 0
        for seed, q in enumerate(q_values):
            claim_run(root, "td3_bc", dataset, seed, 80.0 + seed)
            claim_run(root, "td3_nobc", dataset, seed, 1.0, {"eval/q_initial": q, "eval/discounted_return": 100.0})
    claim = by_label(claims_module.check_claims(runs_module.load_runs([root])))["8b"]
    assert claim.verdict == UNDECIDED
    assert [p.reason for p in claim.parts if len(p.samples) == 1] == ["straddles", "straddles"]
    assert claim.reading.endswith("; on Walker2d medium-expert td3_nobc's Q(s0, pi(s0)) - G - 0.5 |G| lies above 0 on "
                                  "every seed (+450.0 to +249850.0): the interval straddles 0 because the seeds spread "
                                  "widely, not because a seed falls short.")
    assert "HalfCheetah expert td3_nobc" not in claim.reading


def test_undecided_claims_name_what_is_missing(tmp_path):
    root = tmp_path / "runs"
    claim_run(root, "bc", CORE_MR, 0, 20.0)
    claim_run(root, "bc_10", CORE_MR, 0, 30.0)
    for seed in (0, 1):
        claim_run(root, "cql", CORE_MR, seed, 30.0)  # no Q at the initial states in its log
    found = claims_module.check_claims(runs_module.load_runs([root]))
    assert [c.verdict for c in found] == [UNDECIDED] * len(LABELS)
    lines = details(found)
    assert f"{CORE_MR}: bc_10 30.0 (n=1, 50k) - bc 20.0 (n=1, 50k) = +10.0, no interval (1 seed): UNDECIDED (n < 5)." \
        in lines["2"]
    assert f"{CORE_HC}: bc_10 - bc: missing: bc_10 and bc not run at the claim's budget: UNDECIDED (missing)." in lines["2"]
    assert (f"{CORE_MR}: cql's Q(s0, pi(s0)) - G: missing: 2 cql runs, none logged eval/q_initial and "
            "eval/discounted_return: UNDECIDED (missing).") in lines["5"]
    assert f"{CORE_MR}: mopo - mopo_nopen: missing: mopo and mopo_nopen not run" in lines["6"]
    assert found[1].reading == ("Undecided: missing: bc_10 and bc on HalfCheetah medium-replay; fewer than 5 seeds "
                                "(1 seed a side, bc_10 and bc at 50k updates).")
    assert found[4].reading.startswith("Undecided: missing: 2 cql runs, none logged eval/q_initial and "
                                       "eval/discounted_return on Hopper medium-replay; cql on HalfCheetah")


def test_only_runs_at_the_claims_budget_and_cadence_count(tmp_path):
    """Claim 8b reads td3_bc and td3_nobc at 50k updates, evaluated every 5k: a 20k run and an unfinished one are
    named, not counted."""
    root = tmp_path / "runs"
    claim_run(root, "td3_nobc", NARROW_CHEETAH, 0, -4.9, {"eval/q_initial": 230.0, "eval/discounted_return": -60.0})
    write_run(root, "td3_bc", NARROW_WALKER, 0, {20000: 70.0}, budget="--max_steps 20000 --eval_every 5000")
    write_run(root, "td3_bc", NARROW_WALKER, 1, {25000: 70.0, 30000: 70.0},
              budget="--max_steps 50000 --eval_every 5000")
    claim = by_label(claims_module.check_claims(runs_module.load_runs([root])))["8b"]
    assert claim.verdict == UNDECIDED
    text = "\n".join(claim.lines)
    assert (f"{NARROW_CHEETAH}: td3_nobc's Q(s0, pi(s0)) - G - 0.5 |G| per seed: seed 0: Q = 230.0, G = -60.0 (updates "
            "40k-50k); mean +260.0, no interval (1 seed): UNDECIDED (n < 5).") in text
    assert (f"Not counted (not at the claim's budget and cadence): td3_bc seed 0 on {NARROW_WALKER} (20k updates, "
            f"evaluation every 5k), td3_bc seed 1 on {NARROW_WALKER} (50k updates, evaluation every 5k, last "
            "evaluation at 30k).") in text
    assert f"{NARROW_WALKER}: td3_bc - td3_nobc: missing: td3_bc and td3_nobc not run at the claim's budget" in text


def test_sanity_table(tmp_path, fast_bootstrap):
    root = tmp_path / "runs"
    write_run(root, "bc", "local/hopper/expert-v0", 0, {10: 98.0}, returns={10: 3234.3})
    write_run(root, "bc", "local/hopper/random-v0", 0, {10: 25.0}, returns={10: -20.272305})
    write_run(root, "bc", "local/pendulum/expert-v0", 0, {10: 101.0})
    make_results(root, tmp_path / "results", command="x")
    text = (tmp_path / "results" / "sanity.md").read_text()
    assert "| hopper | 98.0 / D4RL 100.0 (n=1, 10) | 2.0 points from 100 (within 10) | " \
           "25.0 / D4RL 0.0 (n=1, 10) | 25.0 points from 0 (MORE than 10) |" in text
    assert "| pendulum | 101.0 (n=1, 10) | 1.0 points from 100 (within 10) | not run | - |" in text


def test_readme_section_summarizes_and_points_to_the_long_tables(fake_root, tmp_path, fast_bootstrap):
    for seed in (0, 1):
        write_run(fake_root, "iql", CORE_MR, seed, {5000: 60.0 + seed},
                  budget="--max_steps 50000 --eval_every 5000 --eval_episodes 10")
        write_run(fake_root, "td3_nobc", CORE_MR, seed, {5000: 3.0},
                  budget="--max_steps 50000 --eval_every 5000 --eval_episodes 10")
    readme = tmp_path / "README.md"
    readme.write_text("# title\n\nbefore\n<!-- results: begin -->\nstale table\n<!-- results: end -->\nafter\n")
    make_results(fake_root, tmp_path / "results", readme=readme)
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n<!-- results: begin -->")
    assert text.endswith("<!-- results: end -->\nafter\n")
    assert "stale table" not in text
    section = text[text.index("<!-- results: begin -->"):]
    cpu = (f"python -m tools.sweep --variants iql td3_nobc --datasets {CORE_MR} --seeds 0 1 --workers 2 --root runs/bench "
           "--set max_steps=50000 eval_every=5000 eval_episodes=10")
    assert f"Runs: 4 runs, made by `{cpu}`" in section and f"Reproduce: `{cpu}`" in section
    assert "IQM [95% CI], local" in section
    assert "| # | claim | reading | verdict 2026-12-04 (final evaluation, 2-3 seeds) | verdict |" in section
    assert "| 1 | TD methods beat BC on medium-replay | Undecided: " in section
    assert section.rstrip().count(f"| {UNDECIDED} |") == len(LABELS)  # the verdict is the last column
    assert "| FAIL | UNDECIDED |" in section and "| new | UNDECIDED |" in section  # the earlier verdicts beside
    assert "NOT RUN" not in section and "| PASS |" not in section.replace("| PASS | UNDECIDED |", "")
    assert "| 8b | TD3 without BC collapses on narrow data |" in section
    for page in ("results/scores.md", "results/peer.md", "results/published.md", "results/claims.md",
                 "results/protocol.md"):
        assert f"]({page})" in section
    assert MEDIUM_REPLAY not in section and "Pendulum runs (the small datasets)" in section
    assert len(section.splitlines()) < 65  # a summary: the per-dataset tables live in results/
    assert "| td3_nobc |" not in section.split("| # | claim |")[0]  # ablations: in the claims, not the aggregate
    assert "| td3_nobc |" in (tmp_path / "results" / "scores.md").read_text()
    reproduce_md = (tmp_path / "results" / "reproduce.md").read_text()
    pendulum_sweep = (f"python -m tools.sweep --variants bc bc_10 td3_bc --datasets {MEDIUM_REPLAY} --seeds 0 1 "
                      "--workers 2 --root runs/bench --set max_steps=20 eval_every=10 eval_episodes=5")
    assert cpu in reproduce_md and pendulum_sweep in reproduce_md
    assert (f"python -m tools.sweep --variants iql td3_nobc --datasets {CORE_MR} --seeds 0 1 --workers N --root "
            "runs/d4rl --commit-dir results/runs-d4rl --set eval_episodes=10 max_steps=1000000 eval_every=5000 device=cuda"
            ) in reproduce_md


def test_few_sweeps_make_exactly_the_runs(tmp_path):
    root = tmp_path / "runs"
    fifty = "--max_steps 50000 --eval_every 5000"
    for variant in ("bc_10", "iql", "d3rlpy_iql"):
        for seed in (0, 1, 2):
            write_run(root, variant, CORE_MR, seed, {5000: 1.0}, budget=fifty)
    write_run(root, "iql", CORE_HC, 0, {5000: 1.0}, budget=fifty)  # one seed on a second dataset: its own sweep
    write_run(root, "bc_10", CORE_HC, 0, {5000: 1.0}, budget=fifty + " --compile true")  # other settings
    bc_25 = write_run(root, "bc_25", CORE_HC, 0, {5000: 1.0}, budget="--frac 0.25 " + fifty)  # a --define variant
    record = json.loads((bc_25 / "run.json").read_text())
    record["algo"], record["command"][1] = "bc_filtered", "algorithms/bc_filtered.py"
    (bc_25 / "run.json").write_text(json.dumps(record))
    loaded = runs_module.load_runs([root])
    assert [s.command() for s in reproduce.reproduce_sweeps(loaded)] == [
        f"python -m tools.sweep --variants bc_10 iql d3rlpy_iql --datasets {CORE_MR} --seeds 0 1 2 --workers 2 "
        "--root runs/bench --set max_steps=50000 eval_every=5000",
        f"python -m tools.sweep --variants bc_10 --datasets {CORE_HC} --seeds 0 --workers 2 --root runs/bench "
        "--set max_steps=50000 eval_every=5000 compile=true",
        f"python -m tools.sweep --variants iql --datasets {CORE_HC} --seeds 0 --workers 2 --root runs/bench "
        "--set max_steps=50000 eval_every=5000",
        f"python -m tools.sweep --variants bc_25 --define bc_25=bc_filtered --datasets {CORE_HC} --seeds 0 "
        "--workers 2 --root runs/bench --set frac=0.25 max_steps=50000 eval_every=5000"]
    # The sweep is what tools/sweep.py would run: its plan writes the same commands as the runs'.
    planned = variants.plan(["bc_10"], [CORE_MR], [0], tmp_path / "runs" / "bench", variants.parse_sets(
        ["max_steps=50000", "eval_every=5000"]), {})
    assert planned[0].args[-6:] == ["--frac", "0.1", "--max_steps", "50000", "--eval_every", "5000"]


def test_a_path_in_a_runs_command_reproduces_as_the_sweeps(tmp_path, monkeypatch):
    """The sweep makes a relative *_path absolute (each run works in its own directory); the reproduce command
    writes it back from runs/ on, as it was typed, so the command runs again from the project root."""
    monkeypatch.chdir(tmp_path)
    dynamics = f"runs/bench/mopo/{CORE_MR}/seed3/dynamics.pt"
    planned, = variants.plan(["mopo_nopen"], [CORE_MR], [3], tmp_path / "runs" / "bench",
                             variants.parse_sets(["max_steps=50000", f"dynamics_path={dynamics}"]), {})
    assert planned.args[-2:] == ["--dynamics_path", str(tmp_path / dynamics)]
    assert variants.parse_sets(["dynamics_path=None"]) == ["--dynamics_path", "None"]
    root = tmp_path / "results" / "runs"
    write_run(root, "mopo_nopen", CORE_MR, 3, {50000: 1.0}, budget=f"--max_steps 50000 --dynamics_path "
              f"{tmp_path / 'other-checkout' / dynamics}")
    sweep, = reproduce.reproduce_sweeps(runs_module.load_runs([root]))
    assert sweep.command() == (f"python -m tools.sweep --variants mopo_nopen --datasets {CORE_MR} --seeds 3 "
                               f"--workers 2 --root runs/bench --set max_steps=50000 dynamics_path={dynamics}")


def test_a_run_without_run_json_is_counted_not_parsed(tmp_path, fast_bootstrap):
    """The tools read run.json only: a run with a command.txt and no run.json is in the tables, not in the
    reproduce commands, and the header says so."""
    root = tmp_path / "runs"
    write_run(root, "iql", CORE_MR, 0, {10: 50.0})
    old = write_run(root, "iql", CORE_MR, 1, {10: 60.0})
    (old / "run.json").unlink()
    (old / "command.txt").write_text("cd /x && python algorithms/iql.py --seed 1 --max_steps 999\n")
    make_results(root, tmp_path / "results", command=None)
    md = (tmp_path / "results" / "scores.md").read_text()
    assert "Runs: 2 runs, made by `python -m tools.sweep --variants iql" in md and "(1 run without a run.json" in md
    assert "999" not in md and "| iql | 55.0 ± 7.1 / D4RL" in md


def test_gpu_sweeps_take_each_methods_full_budget():
    cpu = reproduce.Sweep(["dt", "mopo_nopen", "d3rlpy_dt", "d3rlpy_bc"], [CORE_MR], [0], "runs/bench",
                          ["max_steps=8000", "warmup_steps=800", "bc_steps=400", "model_max_epochs=50",
                           "compile=true", "dynamics_path=runs/bench/mopo/local/hopper/medium-replay-v0/seed0/"
                           "dynamics.pt", "device=cpu"])
    gpu = reproduce.gpu_sweeps([cpu])
    assert [(s.variants, s.sets) for s in gpu] == [
        (["dt", "d3rlpy_dt"], ["compile=true", "dynamics_path=runs/d4rl/mopo/local/hopper/medium-replay-v0/seed0/"
                               "dynamics.pt", "max_steps=100000", "eval_every=5000", "device=cuda"]),
        (["mopo_nopen", "d3rlpy_bc"], ["compile=true", "dynamics_path=runs/d4rl/mopo/local/hopper/medium-replay-v0/"
                                       "seed0/dynamics.pt", "max_steps=1000000", "eval_every=5000", "device=cuda"])]
    assert gpu[0].command("N", "results/runs-d4rl").startswith(
        f"python -m tools.sweep --variants dt d3rlpy_dt --datasets {CORE_MR} --seeds 0 --workers N --root runs/d4rl "
        "--commit-dir results/runs-d4rl --set compile=true")


def test_published_numbers_beside_ours(tmp_path, fast_bootstrap):
    root = tmp_path / "runs"
    for seed in (0, 1):
        write_run(root, "iql", CORE_MR, seed, {50000: 60.0 + 2 * seed}, returns={50000: 3234.3},
                  budget="--max_steps 50000")
    source = "Some et al. 2022, Table 1, locomotion rows"
    table_csv = tmp_path / "published.csv"
    with open(table_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "env", "dataset", "score", "std", "seeds", "budget_updates", "dataset_version",
                         "label", "source"])
        label = "Some et al. 2022"
        writer.writerow(["iql", "hopper", "medium-replay", "94.7", "8.6", "5", "1000000", "v2", label, source])
        writer.writerow(["iql", "walker2d", "medium", "78.3", "", "", "", "v2", label, source])
    out = tmp_path / "results"
    out.mkdir()
    published.write_published(stats.score_table(runs_module.load_runs([root])), ["head"], out, table_csv)
    text = (out / "published.md").read_text()
    assert text.startswith("# Published D4RL numbers beside ours: not directly comparable")
    assert "| Hopper | medium-replay | 94.7 ± 8.6 | 5 | 1M | v2 | Some et al. 2022 [1] | 100.0 ± 0.0 | 61.0 ± 1.4 | " \
           "2, 50k | 5% |" in text
    assert "| Walker2d | medium | 78.3 | - | - | v2 | Some et al. 2022 [1] | not run | not run | - | - |" in text
    assert f"1. {source}" in text


def test_plots_keep_panels_readable():
    many = ["bc", "bc_10", "awr", "bcq", "td3_bc", "cql", "iql", "dt", "mopo", "combo", "td3_nobc", "mopo_nopen",
            "dt_init1", "cql_mean_target", "td3_bc_500k", "iql_500k", "x1", "x2", *runs_module.PEERS.values()]
    rows = plots.panel_rows(many)
    assert all(0 < len(members) <= plots.MAX_LINES for _, members in rows)
    assert sorted(v for _, members in rows for v in members) == sorted(many)
    # One fixed color per method: the peer's and the longer budget take their method's, in another line style.
    assert plots.color_of("d3rlpy_iql") == plots.color_of("iql") == plots.color_of("iql_500k")
    assert (plots.style_of("iql"), plots.style_of("d3rlpy_iql"), plots.style_of("iql_500k")) == ("-", "--", ":")
    assert len({plots.color_of(v) for v in plots.COLORS}) == len(plots.COLORS)
    assert plots.color_of("x1") == plots.color_of("x1")
    # The curves are the core datasets only; the BC sanity runs are a table.
    run = lambda d: runs_module.RunRecord("bc", d, 0, [{"step": 1, "eval/normalized_score": 1.0}])  # noqa: E731
    found = [run(d) for d in ["local/hopper/expert-v0", CORE_ME, CORE_MR, "local/walker2d/medium-replay-v0"]]
    assert plots.curve_datasets(found, headline=True) == [CORE_MR, CORE_ME]
    pendulum = [run("local/pendulum/expert-v0"), run(MEDIUM_REPLAY)]
    assert plots.curve_datasets(pendulum, headline=False) == [MEDIUM_REPLAY]


def test_peer_run_json_has_the_scripts_shape():
    args = peer_d3rlpy.make_parser().parse_args(["--algo", "iql", "--seed", "2", "--max_steps", "100"])
    size = {"id": MEDIUM_REPLAY, "episodes": 3, "transitions": 600}
    record = peer_d3rlpy.run_record(args, "d3rlpy 2.8.1", "2.13.0", "abc", ["python", "tools/peer_d3rlpy.py"], size)
    assert set(record) == {"algo", "library", "config", "commit", "torch", "dataset", "command"}
    assert record["dataset"] == size
    assert record["algo"] == "iql" and record["config"]["max_steps"] == 100 and "setup" not in record["config"]


def test_a_rerun_on_newer_code_is_compared_with_the_older_seeds(fake_root, tmp_path):
    out = tmp_path / "results"
    write_run(out / "rerun", "td3_bc", MEDIUM_REPLAY, 0, {10: 61.0, 20: 72.0})  # older seeds score 65 and 85
    write_run(out / "rerun", "bc_10", MEDIUM_REPLAY, 1, {10: 10.0, 20: 40.0})  # older seeds score 11 and 12
    write_run(out / "rerun", "bc", MEDIUM_REPLAY, 0, {10: 20.0})  # another budget than the older runs': left out
    make_results(fake_root, out)
    text = (out / "rerun.md").read_text()
    assert (f"| td3_bc | {MEDIUM_REPLAY} | 0 | 20 | 65.0 (not recorded) | 66.5 (not recorded) | 75.0 ± 14.1 (n=2) "
            "| yes |") in text
    assert (f"| bc_10 | {MEDIUM_REPLAY} | 1 | 20 | 12.0 (not recorded) | 25.0 (not recorded) | 11.5 ± 0.7 (n=2) "
            "| NO |") in text
    assert "| bc |" not in text and (out / "rerun.png").stat().st_size > 0
    # The sweep commands come from the reruns' run.json, not from a sweeps.txt.
    assert f"made by `python -m tools.sweep --variants bc_10 --datasets {MEDIUM_REPLAY} --seeds 1 " in text
    assert (f"; `python -m tools.sweep --variants td3_bc --datasets {MEDIUM_REPLAY} --seeds 0 --workers 2 --root "
            f"runs/bench --commit-dir {out / 'rerun'} --set max_steps=20 eval_every=10 eval_episodes=5`") in text


def test_offline_to_online_runs_have_their_own_page(fake_root, tmp_path):
    for dataset in (CORE_MR, CORE_HC):
        for seed in (0, 1):  # 70 offline, 60 for the first 10k online steps, then 80 and 84
            write_online_run(fake_root, "iql_o2o", dataset, seed, 70.0,
                             lambda env: 60.0 if env <= 10000 else 80.0 + 4 * seed)
            write_online_run(fake_root, "sac_scratch_cql", dataset, seed, 0.0, lambda env: 20.0 + 4 * seed)
    out = tmp_path / "results"
    make_results(fake_root, out)
    text = (out / "o2o.md").read_text()
    # Switch 70 (the last 3 offline evaluations); end 82 ± 2.8 (the last 3); drop 70 - 60 (first fifth: 10k steps);
    # dip 70 - 60 (the lowest mean of 3 consecutive evaluations in the first 25k steps).
    assert (f"| iql_o2o | {CORE_MR} | 50k | 50k | 10 | 70.0 ± 0.0 (n=2) | 82.0 ± 2.8 (n=2) | 12.0 ± 2.8 (n=2) | "
            "10.0 ± 0.0 (n=2) | 10.0 ± 0.0 (n=2) | 0, 1 |") in text
    assert f"| sac_scratch_cql | {CORE_MR} | none | 50k | 10 | - | 22.0 ± 2.8 (n=2) | - | - | - | 0, 1 |" in text
    assert (out / "o2o.png").stat().st_size > 0
    scores = (out / "scores.md").read_text()
    assert "| iql_o2o |" not in scores and "| sac_scratch_cql |" not in scores


def test_the_dip_rule_and_its_placebo():
    # dip = the mean of before's last 3 minus the lowest mean of 3 consecutive evaluations of the window.
    assert o2o.dip([1.0, 2.0, 60.0, 60.0, 60.0], [10.0, 50.0, 20.0, 30.0, 70.0]) == pytest.approx(60 - 80 / 3)
    assert o2o.dip([], [1.0, 2.0, 3.0]) is None and o2o.dip([5.0], [1.0, 2.0]) is None
    # Claim 10b's budget: 10k offline updates, 10k online steps, an evaluation every 500.  Offline: 50, with a
    # placebo dip to 20 at updates 5.5k-6.5k; online: 10 for the first 1.5k steps, 0 at 6k-7k (past the window).
    run = runs_module.RunRecord("cql_o2o", CORE_ME, 0, [{"step": s, "eval/normalized_score": 1.0} for s in (1, 2, 3)])
    offline = [(s - 10000, 20.0 if 5500 <= s <= 6500 else 50.0) for s in range(500, 10001, 500)]
    online = [(env, 10.0 if env <= 1500 else 0.0 if 6000 <= env <= 7000 else 50.0) for env in range(500, 10001, 500)]
    view = o2o.Online(run, 10000, 10000, offline, online)
    assert (view.switch, view.dip, view.drop, view.placebo) == (50.0, 40.0, 40.0, 30.0)


def test_o2o_curves_keep_the_offline_phase_left_of_the_switch(fake_root):
    """o2o.png draws a run whole: offline evaluations at x = updates - max_steps (<= 0), online ones at env steps."""
    write_online_run(fake_root, "cql_o2o", CORE_MR, 0, 60.0, lambda env: {50: 30.0, 100: 70.0}[env],
                     budget=(50, 100, 50))
    run_dir = fake_root / "cql_o2o" / CORE_MR / "seed0"
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    early = {"step": 20, "env_steps": 0, "eval/normalized_score": 5.0, "wall_time": 0.0, "eval/return": RETURN}
    (run_dir / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [early, *rows]))
    (view,) = o2o.o2o_runs(runs_module.load_runs([fake_root]))[("cql_o2o", CORE_MR)]
    assert view.points == ([-30, 0, 50, 100], [5.0, 60.0, 30.0, 70.0])
    # The end is the run's score: its last 3 evaluations, here the switch's and the two online ones.
    assert view.switch == 32.5 and view.end == pytest.approx(160 / 3) and view.end_minus_switch == pytest.approx(
        160 / 3 - 32.5)


def test_fine_tuning_claims_wait_for_five_seeds_a_side(fake_root):
    write_online_run(fake_root, "iql_o2o", CORE_MR, 0, 70.0, lambda env: 80.0)
    for seed in (0, 1):
        write_online_run(fake_root, "cql_o2o", CORE_MR, seed, 60.0, lambda env: 10.0 + seed)
        write_online_run(fake_root, "calql_o2o", CORE_MR, seed, 60.0, lambda env: 50.0 + seed)
    found = by_label(claims_module.check_claims(runs_module.load_runs([fake_root])))
    assert found["9"].verdict == found["10"].verdict == found["11"].verdict == UNDECIDED
    assert (f"{CORE_MR}: iql_o2o - sac_scratch_cql (end of the online budget): missing: sac_scratch_cql not run at the "
            "claim's budget; iql_o2o 80.0 (n=1): UNDECIDED (missing).") == found["9"].lines[0]
    assert found["10"].reading.startswith("Undecided: fewer than 5 seeds (2 seeds a side, cql_o2o and calql_o2o at 10k "
                                          "updates + 10k environment steps); on these seeds 1 of 1 intervals lie on "
                                          "the claim's side;")
    assert found["10"].reading.endswith("the claim stays at its 2 seeds a side (results/protocol.md), so it reads "
                                        "UNDECIDED by design.")


def test_claim_9_reading_names_where_it_holds_and_where_not(fake_root):
    """Supported on HalfCheetah, contradicted on Hopper: CONTRADICTED, and the reading says which is which."""
    for dataset, end in ((CORE_MR, 10.0), (CORE_HC, 80.0)):
        for seed in range(5):
            write_online_run(fake_root, "iql_o2o", dataset, seed, 70.0, lambda env: end + seed)
            write_online_run(fake_root, "sac_scratch_cql", dataset, seed, 0.0, lambda env: 40.0 - 20.0 * (
                dataset == CORE_HC) + seed)
    claim = by_label(claims_module.check_claims(runs_module.load_runs([fake_root])))["9"]
    assert claim.verdict == CONTRADICTED
    assert claim.reading.startswith("Contradicted with 5 seeds a side, iql_o2o at 50k updates + 50k environment steps; "
                                    "sac_scratch_cql at 50k environment steps: iql_o2o - sac_scratch_cql (end of the "
                                    "online budget) = -30.0 [-32.3, -27.7] on Hopper medium-replay (below 0), while ")
    assert claim.reading.endswith("= +60.0 [57.7, 62.3] on HalfCheetah medium-replay hold.")


def test_claim_10b_counts_only_its_20_episode_runs(tmp_path):
    root = tmp_path / "runs"
    for seed in range(5):
        write_online_run(root, "cql_o2o", CORE_ME, seed, 60.0, lambda env: 10.0 + seed, episodes=20)
        write_online_run(root, "calql_o2o", CORE_ME, seed, 60.0, lambda env: 50.0 + seed, episodes=20)
    write_online_run(root, "cql_o2o", CORE_ME, 5, 60.0, lambda env: 60.0, episodes=10)
    claim = by_label(claims_module.check_claims(runs_module.load_runs([root])))["10b"]
    assert claim.verdict == SUPPORTED  # dips 50 - 0..4 and 10 - 0..4: +40
    assert "dip: cql_o2o 48.0 ± 1.6 (n=5) - calql_o2o 8.0 ± 1.6 (n=5) = +40.0" in claim.lines[0]
    assert "Not counted (not at 20 evaluation episodes): cql_o2o seed 5 (10 episodes)." in claim.lines


def test_half_budget_runs_stand_beside_the_published_numbers_not_in_the_readme_aggregate(tmp_path, fast_bootstrap):
    """Issue 33: a 500k-update run (td3_bc_500k) is shown beside the 50k runs of its method in published.md, and
    stays out of the README's aggregate (it runs on two datasets, not the core three)."""
    root = tmp_path / "runs"
    write_run(root, "td3_bc", CORE_MR, 0, {50000: 20.0}, budget="--max_steps 50000")
    write_run(root, "td3_bc_500k", CORE_MR, 0, {500000: 40.0}, budget="--max_steps 500000")
    table_csv = tmp_path / "published.csv"
    with open(table_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "env", "dataset", "score", "std", "seeds", "budget_updates", "dataset_version",
                         "label", "source"])
        writer.writerow(["td3_bc", "hopper", "medium-replay", "60.9", "", "", "1000000", "v2", "Some et al. 2022",
                         "Some et al. 2022"])
    out = tmp_path / "results"
    out.mkdir()
    published.write_published(stats.score_table(runs_module.load_runs([root])), ["head"], out, table_csv)
    row = next(line for line in (out / "published.md").read_text().splitlines() if line.startswith("| Hopper"))
    assert row.endswith("| 20.0; 40.0 | 1, 50k; 1, 500k | 5%; 50% |"), row
    section = readme.readme_section(["head"], {"td3_bc": {"note": "x"}, "td3_bc_500k": {"note": "y"}}, [], ["c"], [])
    assert any("| td3_bc |" in line for line in section) and not any("td3_bc_500k" in line for line in section)


def test_the_readme_aggregate_leaves_the_bf16_variants_to_precision_md():
    """A bf16 variant runs on one dataset for claim P: the README's aggregate of the core datasets does not list it."""
    agg = {"iql": {"note": "x"}, "iql_bf16": {"note": "partial: not run on local/hopper/medium-replay-v0"}}
    section = readme.readme_section(["head"], agg, [], ["c"], [])
    assert any("| iql |" in line for line in section) and not any("iql_bf16" in line for line in section)


def test_the_header_lists_offline_budgets_apart_from_fine_tuning_without_phantom_budgets(tmp_path, fast_bootstrap):
    """Issue 45 item 11: a fine-tuning run's 0 offline updates (sac_scratch learns online only) and its final update
    (offline + online) are not offline budgets: the header lists them apart, and says what the 0 is."""
    root = tmp_path / "runs"
    write_run(root, "iql", CORE_MR, 0, {40: 50.0, 50: 55.0}, budget="--max_steps 50 --eval_every 10 --eval_episodes 5")
    write_run(root, "bc", CORE_MR, 0, {10: 20.0, 20: 30.0}, budget="--max_steps 20 --eval_every 10 --eval_episodes 5")
    write_online_run(root, "iql_o2o", CORE_MR, 0, 50.0, lambda env: 60.0, budget=(50, 50, 10))
    write_online_run(root, "sac_scratch", CORE_MR, 0, 0.0, lambda env: 30.0, budget=(0, 40, 10))
    runs = runs_module.load_runs([root])
    head = headers.header(runs, ["c"], [root], "reproduce.md")
    offline = next(line for line in head if line.startswith("Budget:"))
    assert offline.startswith("Budget: 20, 50 updates per offline run (final evaluation at 20, 50);"), offline
    assert "100" not in offline and "40" not in offline  # no fine-tuning run's final update among offline budgets
    online = next(line for line in head if line.startswith("Offline-to-online runs"))
    assert "0 for sac_scratch, which learn online only" in online and "50 offline updates" in online
    assert "then 40, 50 online environment steps" in online and "final evaluation at update 40, 100" in online
    # Only offline runs (the Pendulum suite's, say): one budget line, no fine-tuning line.
    only = headers.header([r for r in runs if r.variant in ("bc", "iql")], ["c"], [root], "reproduce.md")
    assert not any(line.startswith("Offline-to-online") for line in only)


def test_every_plot_is_linked_from_the_page_that_describes_it(fake_root, tmp_path, fast_bootstrap):
    """Issue 45 item 11: profiles.png and curves-pendulum.png are linked from scores.md and the README section."""
    write_run(fake_root, "iql", CORE_MR, 0, {5000: 60.0}, budget="--max_steps 50000 --eval_every 5000")
    readme_path = tmp_path / "README.md"
    readme_path.write_text("<!-- results: begin -->\n<!-- results: end -->\n")
    out = tmp_path / "results"
    make_results(fake_root, out, readme=readme_path)
    md, section = (out / "scores.md").read_text(), readme_path.read_text()
    for name in ("profiles.png", "curves.png", "curves-pendulum.png"):
        assert (out / name).stat().st_size > 0
        assert f"]({name})" in md and f"](results/{name})" in section, name
    pendulum = md[md.index("## Pendulum: score"):md.index("## Pendulum: last evaluation")]
    assert "](curves-pendulum.png)" in pendulum


def test_the_longer_budget_runs_get_a_reading_from_the_dataset_sizes(tmp_path):
    """Issue 45 item 11: where the 500k runs are shown, one sentence says how they stand against 50k and, from the
    dataset size the runs recorded, how many passes their updates make and how many trajectories %BC keeps."""
    root = tmp_path / "runs"
    for variant, steps, score in (("bc_10", 50000, 30.0), ("bc_10_500k", 500000, 15.0), ("iql", 50000, 40.0),
                                  ("iql_500k", 500000, 20.0)):
        frac = " --frac 0.1" if variant.startswith("bc_10") else ""
        run_dir = write_run(root, variant, CORE_HC, 0, {steps - 10000: score, steps: score},
                            budget=f"--max_steps {steps} --eval_every 10000 --batch_size 256{frac}")
        record = json.loads((run_dir / "run.json").read_text())
        record["dataset"] = {"episodes": 40, "transitions": 40000}
        (run_dir / "run.json").write_text(json.dumps(record))
    runs = runs_module.load_runs([root])
    reading = scores_module.longer_budget_reading(stats.score_table(runs), runs)
    assert reading.startswith("The 500k-update runs score below the same method at its sweep budget in 2 of 2 cells")
    assert f"on {CORE_HC} 2 of 2: bc_10_500k 15.0 vs 30.0 at 50k, iql_500k 20.0 vs 40.0 at 50k" in reading
    assert "holds 40 episodes (40000 transitions), so 500k updates of batch 256 are about 3200 passes" in reading
    assert "bc_10_500k trains on its best 4 trajectories" in reading
    # On the page, under the MuJoCo scores.
    out = tmp_path / "results"
    make_results(root, out)
    md = (out / "scores.md").read_text()
    assert "about 3200 passes" in md[md.index("## MuJoCo: score"):md.index("## MuJoCo: last evaluation")]


def test_each_row_of_the_curves_has_one_x_scale_and_the_footnote_keys_only_the_styles_drawn(monkeypatch, tmp_path):
    """Issue 45 item 11: a row with a 500k curve in one panel is logarithmic in all its panels; a figure with
    only solid lines does not describe dashed or dotted ones."""
    made = {}
    monkeypatch.setattr(plots, "finish_figure", lambda fig, caption, *a: made.update(fig=fig, caption=caption))

    def run(variant, dataset, end, every):
        return runs_module.RunRecord(variant, dataset, 0, [{"step": s, "eval/normalized_score": 50.0}
                                                           for s in range(every, end + 1, every)])

    mujoco = [run("iql", CORE_MR, 50000, 5000), run("iql_500k", CORE_MR, 500000, 10000),
              run("iql", CORE_HC, 50000, 5000), run("bc", CORE_MR, 50000, 5000), run("bc", CORE_HC, 50000, 5000)]
    plots.plot_curves(mujoco, tmp_path / "c.png", "caption", [CORE_MR, CORE_HC])
    scales = [[ax.get_xscale() for ax in row] for row in _rows(made["fig"], 2)]
    assert scales == [["linear", "linear"], ["log", "log"]], scales
    assert "dotted: a longer-budget variant" in made["caption"] and "dashed" not in made["caption"]
    plots.plot_curves([run("bc", MEDIUM_REPLAY, 20, 10), run("td3_bc", MEDIUM_REPLAY, 20, 10)], tmp_path / "p.png",
                      "caption", [MEDIUM_REPLAY])
    assert "dashed" not in made["caption"] and "dotted" not in made["caption"]


def _rows(fig, cols: int) -> list:
    """The figure's panels, row by row (matplotlib lists them in that order)."""
    axes = fig.axes
    return [axes[i:i + cols] for i in range(0, len(axes), cols)]


@pytest.mark.parametrize("damage", [
    lambda run_dir: (run_dir / "log.jsonl").write_bytes(b'{"step": 10, "eval/normalized_score": 5\xff0.0}\n'),
    lambda run_dir: (run_dir / "run.json").write_bytes(b'{"config": "\xff"}'),
    lambda run_dir: (run_dir / "log.jsonl").write_text("[" * 100000 + "]" * 100000 + "\n"),
    lambda run_dir: (run_dir / "run.json").write_text('{"a": ' * 100000 + "1" + "}" * 100000),
    lambda run_dir: (run_dir / "log.jsonl").write_text('{"step": "10", "eval/normalized_score": 50.0}\n'),
    lambda run_dir: (run_dir / "log.jsonl").write_text('{"step": 10, "eval/normalized_score": "50"}\n'),
    lambda run_dir: (run_dir / "log.jsonl").write_text('[10, 50.0]\n'),
    lambda run_dir: (run_dir / "run.json").write_text("[1, 2]"),
    lambda run_dir: (run_dir / "run.json").write_text('{"config": [1]}'),
    lambda run_dir: (run_dir / "finished.json").write_text('{"step": ' * 100000),
], ids=["bad UTF-8 log", "bad UTF-8 run.json", "nested log", "nested run.json", "text step", "text score",
        "list row", "list run.json", "list config", "nested finished.json"])
def test_a_run_folder_with_foreign_json_is_skipped_with_one_warning(tmp_path, capsys, damage):
    """Bad UTF-8, JSON nested too deep, values of the wrong type: the run is skipped with one warning line naming it,
    the other runs are read (a line cut by a crash is skipped alone, as before)."""
    root = tmp_path / "runs"
    write_run(root, "iql", CORE_MR, 0, {10: 50.0}, lines=('{"step": 30, "eval/norm',))
    bad = write_run(root, "iql", CORE_MR, 1, {10: 60.0})
    damage(bad)
    found = runs_module.load_runs([root])
    warnings = capsys.readouterr().err.splitlines()
    assert [(r.seed, r.steps) for r in found if r.seed == 0] == [(0, [10])]
    assert [r.seed for r in found] == [0]
    assert len(warnings) == 1 and warnings[0].startswith("warning: skipped the run in ") and str(bad) in warnings[0]


def test_precision_page_decides_claim_p_from_five_seeds_a_side(tmp_path):
    """bf16 within 1 point of fp32 with 5 seeds a side: SUPPORTED (inside ±10) in precision.md's row and its claim
    line; a reported cell (cql) shows its difference without a verdict; a claim cell with no bf16 run says so."""
    from tools.results import precision

    root = tmp_path / "runs"
    for seed, noise in enumerate((-1.0, -0.5, 0.0, 0.5, 1.0)):
        claim_run(root, "td3_bc", CORE_HC, seed, 50.0 + noise)
        claim_run(root, "td3_bc_bf16", CORE_HC, seed, 50.5 + noise)
    for seed in (0, 1):
        claim_run(root, "cql", CORE_HC, seed, 30.0 + seed)
        claim_run(root, "cql_bf16", CORE_HC, seed, 29.0 + seed)
    runs = runs_module.load_runs([root])
    found = claims_module.check_claims(runs)
    precision.write_precision(runs, found, ["Runs: made up."], tmp_path)
    page = (tmp_path / "precision.md").read_text()
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line for line in page.splitlines()
            if line.startswith("| ") and not line.startswith("| script")}
    hc = runs_module.dataset_name(CORE_HC)
    assert "| 50.0 ± 0.8 (n=5, 50k) | 50.5 ± 0.8 (n=5, 50k) | +0.5 [-0.7, 1.7] | SUPPORTED |" in rows["td3_bc", hc]
    assert rows["iql", hc].endswith("| not run | not run | - | UNDECIDED (missing) |")
    assert rows["cql", hc].endswith("| -1.0 [-4.0, 2.0] | reported |")  # t(2) = 4.303 x 0.707
    assert "Claim P: **UNDECIDED**" in page  # iql has no bf16 run
