"""tools/sweep.py and tools/make_results.py: tables, intervals, the peer table and every claim (PASS and
FAIL) from hand-written logs (numbers checked by hand), the commit directory, then a real tiny grid run
locally (skip on rerun, a failing run beside a good one, commits) and on a local Ray instance."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import make_results
import sweep
from conftest import TINY as TINY_SIZE

MEDIUM_REPLAY = "local/pendulum/medium-replay-v0"
CORE_MR, CORE_HC, CORE_ME = make_results.CORE
TINY = ["max_steps=20", "eval_every=10", "eval_episodes=1", "logging=disabled", "device=cpu"]


def write_run(root: Path, variant: str, dataset: str, seed: int, scores: dict, extra: dict | None = None,
              lines: tuple = (), budget: str = "--max_steps 20 --eval_every 10 --eval_episodes 5") -> Path:
    """A run directory with one evaluation record per (step: score), a training-only record between them."""
    run_dir = root / variant / dataset / f"seed{seed}"
    run_dir.mkdir(parents=True)
    records = []
    for step, score in scores.items():
        records.append({"step": step - 5, "wall_time": 0.0, "train/loss": 1.0})
        records.append({"step": step, "wall_time": 0.0, "eval/return": -200.0, "eval/normalized_score": score,
                        **(extra or {})})
    text = "".join(json.dumps(r) + "\n" for r in records) + "".join(lines)
    (run_dir / "log.jsonl").write_text(text)
    script, flags = sweep.VARIANTS.get(variant, (variant, []))
    (run_dir / "command.txt").write_text(
        f"cd /x && OMP_NUM_THREADS=1 python algorithms/{script}.py --config_path configs/{script}/x.yaml "
        f"--dataset_id {dataset} --seed {seed} --checkpoints_path /x/runs/bench/{variant}/{dataset}/seed{seed} "
        f"{' '.join(flags)} {budget}\n")
    return run_dir


@pytest.fixture
def fast_bootstrap(monkeypatch):
    monkeypatch.setattr(make_results, "REPS", 300)


@pytest.fixture
def fake_root(tmp_path, fast_bootstrap):
    root = tmp_path / "runs"
    write_run(root, "bc", MEDIUM_REPLAY, 0, {10: 20.0, 20: 30.0})
    # seed 1 was resumed: step 20 is logged twice and the last record wins; a line cut by a crash is ignored.
    write_run(root, "bc", MEDIUM_REPLAY, 1, {10: 50.0, 20: 99.0},
              lines=(json.dumps({"step": 20, "eval/normalized_score": 40.0}) + "\n", '{"step": 3'))
    write_run(root, "td3_bc", MEDIUM_REPLAY, 0, {10: 60.0, 20: 70.0})
    write_run(root, "td3_bc", MEDIUM_REPLAY, 1, {10: 90.0, 20: 80.0})
    write_run(root, "bc_10", MEDIUM_REPLAY, 0, {10: 10.0, 20: 12.0})
    write_run(root, "bc_10", MEDIUM_REPLAY, 1, {10: 10.0, 20: 14.0})
    return root


def read_csv(path: Path) -> dict:
    return {(row["variant"], row["dataset"]): row for row in csv.DictReader(path.open())}


def assert_records_the_dataset_build(run_dir: Path) -> None:
    """The run's dataset.txt names the build it read: episodes and steps of Minari's local copy."""
    assert re.fullmatch(rf"local/pendulum/medium-v0: \d+ episodes, {TINY_SIZE} steps\n",
                        (run_dir / "dataset.txt").read_text())


def test_scores_from_hand_written_logs(fake_root, tmp_path):
    out = tmp_path / "results"
    make_results.make_results(fake_root, out, command="python tools/sweep.py --fake")
    rows = read_csv(out / "scores.csv")
    # bc: final 30 and 40 -> 35 +- 5 (population std); best 30 and 50 -> 40 +- 10.
    bc = rows["bc", MEDIUM_REPLAY]
    assert (bc["n_seeds"], float(bc["final_mean"]), float(bc["final_std"]), bc["updates"]) == ("2", 35.0, 5.0, "20")
    assert (float(bc["best_mean"]), float(bc["best_std"]), bc["suite"]) == (40.0, 10.0, "Pendulum")
    # td3_bc: final 70 and 80 -> 75 +- 5; best 70 and 90 -> 80 +- 10.
    td3 = rows["td3_bc", MEDIUM_REPLAY]
    assert (float(td3["final_mean"]), float(td3["final_std"]), float(td3["best_mean"])) == (75.0, 5.0, 80.0)
    # The MuJoCo grid has no run: every planned core cell is there, as not run.
    assert rows["iql", CORE_MR]["updates"] == "not run" and rows["iql", CORE_MR]["n_seeds"] == "0"
    md = (out / "scores.md").read_text()
    assert "| bc | 35.0 ± 5.0 (n=2, 20) |" in md and "| td3_bc | 75.0 ± 5.0 (n=2, 20) |" in md
    assert "python tools/sweep.py --fake" in md and "20 updates per run" in md
    assert (out / "curves-pendulum.png").stat().st_size > 0 and (out / "profiles.png").stat().st_size > 0
    claims = (out / "claims.md").read_text()
    assert claims.count("NOT RUN") >= 8  # no MuJoCo run: every claim names what is missing
    assert "missing: bc_10 not run on local/hopper/medium-replay-v0; bc not run on" in claims


def test_iqm_and_intervals_on_known_cases(fast_bootstrap):
    # IQM of 0..7: the middle half 2, 3, 4, 5 -> 3.5, inside its interval.
    point, low, high = make_results.iqm_interval([[0, 1, 2, 3], [4, 5, 6, 7]])
    assert point == 3.5 and low < 3.5 < high
    # Stratified: every dataset's seeds agree, so every resample is the same (an unstratified bootstrap
    # over the pooled 10, 10, 20, 20 would vary).
    assert make_results.iqm_interval([[10, 10], [20, 20]]) == (15.0, 15.0, 15.0)
    # The difference of means resamples each side on its own: constant sides give a point.
    assert make_results.difference_interval([3, 3, 3], [1, 1]) == (2.0, 2.0, 2.0)
    diff, low, high = make_results.difference_interval([1, 2, 3], [0, 0, 0])
    assert diff == 2.0 and 1.0 <= low < 2.0 < high <= 3.0
    # The same logs give the same intervals.
    assert make_results.difference_interval([1, 5, 9], [2, 3]) == make_results.difference_interval([1, 5, 9], [2, 3])


def test_partial_grid_is_shown_as_partial(tmp_path, fast_bootstrap):
    root = tmp_path / "runs"
    for seed, score in enumerate([40.0, 50.0]):
        write_run(root, "iql", CORE_MR, seed, {2500: score - 10, 5000: score})
    write_run(root, "iql", CORE_ME, 0, {1000: 70.0})
    out = tmp_path / "results"
    make_results.make_results(root, out, command="x")
    md = (out / "scores.md").read_text()
    final = md[md.index("## MuJoCo: final score"):md.index("## MuJoCo: best score")]
    assert f"| variant | {CORE_MR} | {CORE_HC} | {CORE_ME} |" in final
    assert "| iql | 45.0 ± 5.0 (n=2, 5k) | not run | 70.0 ± 0.0 (n=1, 1k) |" in final
    assert "| bc | not run | not run | not run |" in final
    assert f"| iql | partial: not run on {CORE_HC} | - | - |" in md
    agg = list(csv.DictReader((out / "aggregate.csv").open()))
    assert {r["variant"]: r["note"] for r in agg}["bc"] == "not run"


def test_aggregate_iqm_over_the_core_datasets(tmp_path, fast_bootstrap):
    root = tmp_path / "runs"
    for dataset, scores in zip(make_results.CORE, ([0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11])):
        for seed, score in enumerate(scores):
            write_run(root, "td3_bc", dataset, seed, {10: float(score)})
    out = tmp_path / "results"
    make_results.make_results(root, out, command="x")
    row = {r["variant"]: r for r in csv.DictReader((out / "aggregate.csv").open())}["td3_bc"]
    # 0..11: the middle half 3..8 -> 5.5.
    assert float(row["iqm"]) == 5.5 and float(row["ci_low"]) < 5.5 < float(row["ci_high"])
    assert row["seeds_per_core_dataset"] == "4 + 4 + 4" and row["note"] == ""
    assert "| td3_bc | 5.5 [" in (out / "scores.md").read_text()


def test_peer_table_side_by_side(tmp_path, fast_bootstrap):
    root = tmp_path / "runs"
    for seed, (ours, peer) in enumerate([(60.0, 50.0), (62.0, 52.0), (64.0, 54.0)]):
        write_run(root, "iql", CORE_MR, seed, {10: ours})
        write_run(root, "d3rlpy_iql", CORE_MR, seed, {10: peer})
    write_run(root, "bc", CORE_MR, 0, {10: 30.0})
    write_run(root, "d3rlpy_bc", CORE_MR, 0, {10: 20.0})
    out = tmp_path / "results"
    make_results.make_results(root, out, command="x")
    peer = (out / "peer.md").read_text()
    line = next(l for l in peer.splitlines() if l.startswith(f"| iql | {CORE_MR} |"))
    assert "| 62.0 ± 1.6 (n=3, 10) | 52.0 ± 1.6 (n=3, 10) | +10.0 [" in line
    low, high = map(float, line.rsplit("[", 1)[1].rstrip(" |]").split(", "))
    assert 6.0 <= low < 10.0 < high <= 14.0  # each mean resampled within [60, 64] and [50, 54]
    assert "+10.0 (no interval: 2 seeds a side needed)" in peer  # bc: one seed a side
    assert f"| cql | {CORE_MR} | not run | not run | - |" in peer
    rows = {(r["algorithm"], r["dataset"]): r for r in csv.DictReader((out / "peer.csv").open())}
    assert (rows["iql", CORE_MR]["ours_n"], float(rows["iql", CORE_MR]["difference"])) == ("3", 10.0)


# A grid on which every claim holds, and its mirror on which every claim fails.
TARGETS_UP = {"eval/target_3000/normalized_score": 90.0, "eval/target_1500/normalized_score": 45.0}
TARGETS_DOWN = {"eval/normalized_score_3000": 40.0, "eval/normalized_score_1500": 45.0}  # the older key format


def claim_grid(root: Path, holds: bool) -> None:
    def runs(variant, dataset, scores, extra=None):
        for seed, score in enumerate(scores):
            write_run(root, variant, dataset, seed, {10: score - 1.0, 20: score},
                      extra(seed) if callable(extra) else extra)

    up = [0.0, 2.0, 4.0]
    for dataset in (CORE_MR, CORE_HC):
        runs("bc", dataset, [20 + x for x in up])
        runs("bc_10", dataset, [(40 if holds else 10) + x for x in up])
        runs("td3_bc", dataset, [(60 if holds else 5) + x for x in up], {"eval/q_initial": 100.0,
                                                                         "eval/discounted_return": 100.0})
        runs("td3_nobc", dataset, [(5 if holds else 70) + x for x in up],
             {"eval/q_initial": 1000.0 if holds else 110.0, "eval/discounted_return": 100.0})
        runs("iql", dataset, [(70 if holds else 25) + x for x in up])
        runs("awr", dataset, [30 + x for x in up])
        runs("dt", dataset, [(30 if holds else 80) + x for x in up], TARGETS_UP)
    runs("bc_10", CORE_ME, [90.0, 92.0, 94.0])
    runs("dt", CORE_ME, [91.0, 93.0, 95.0] if holds else [50.0, 52.0, 54.0], TARGETS_UP if holds else TARGETS_DOWN)
    runs("cql", CORE_MR, [55.0, 56.0, 57.0],
         lambda seed: {"eval/q_initial": 50.0 if holds or seed < 2 else 150.0, "eval/discounted_return": 100.0})
    runs("mopo", CORE_MR, [(50 if holds else 10) + x for x in up])
    runs("mopo_nopen", CORE_MR, [12.0, 13.0, 14.0])


@pytest.mark.parametrize("holds", [True, False])
def test_every_claim_passes_and_fails_on_its_intervals(tmp_path, fast_bootstrap, holds):
    root = tmp_path / "runs"
    claim_grid(root, holds)
    claims = make_results.make_results(root, tmp_path / "results", command="x")
    verdicts = [result for _, result, _ in claims]
    assert len(verdicts) == 8
    assert verdicts == ["PASS" if holds else "FAIL"] * 8, [(v, lines) for (_, v, lines) in claims]
    details = {i: "\n".join(lines) for i, (_, _, lines) in enumerate(claims, 1)}
    text = (tmp_path / "results" / "claims.md").read_text()
    if holds:
        assert f"{CORE_MR}: iql 72.0 ± 1.6 (n=3, 20) - bc 22.0 ± 1.6 (n=3, 20) = +50.0, 95% CI [" in details[1]
        assert f"{CORE_HC}: not run (decided without them): cql, bcq, mopo, combo." in details[1]
        assert "R_hat_1 = 1500: 45.0, R_hat_1 = 3000: 90.0" in details[4]
        assert "seed 2: Q = 50.0, G = 100.0 (update 20)" in details[5]
        assert "mean Q - G = +900.0, 95% CI [900.0, 900.0], far above means above 0.5 abs(G) = 50.0: supports" \
            in details[8] and "td3_bc for reference: mean Q - G = +0.0" in details[8]
        assert "best TD method iql" in details[3] and "inside ±10" in details[3]
    else:
        assert "not above 0, does not support bc_10 > bc" in details[2]
        assert "not inside ±10" in details[3]
        assert "seed 2: Q = 150.0, G = 100.0" in details[5] and "not every seed below" in details[5]
        assert "does not support the overestimation" in details[8]
    assert "| 8 | Extrapolation error" in text


def test_one_seed_is_shown_not_decided(tmp_path, fast_bootstrap):
    root = tmp_path / "runs"
    claim_grid(root, holds=True)
    write_run(root, "bcq", CORE_MR, 0, {10: 1.0})  # one seed below bc: shown, cannot fail claim 1
    write_run(root, "cql", CORE_HC, 0, {10: 40.0}, {"eval/q_initial": 30.0, "eval/discounted_return": 80.0})
    for dataset in make_results.CORE:
        write_run(root, "combo", dataset, 0, {10: 50.0})
    claims = make_results.make_results(root, tmp_path / "results", command="x")
    assert [claims[0][1], claims[4][1]] == ["PASS", "PASS"]
    details = {i: "\n".join(lines) for i, (_, _, lines) in enumerate(claims, 1)}
    assert f"{CORE_MR}: bcq 1.0 ± 0.0 (n=1, 10) - bc 22.0 ± 1.6 (n=3, 20) = -21.0: 1 seed, shown, not decided " \
           "(an interval needs 2)." in details[1]
    assert f"{CORE_HC}: Q(s0, pi(s0)) - G per seed at the final evaluation: seed 0: Q = 30.0, G = 80.0 (update 10): " \
           f"below G; cql has 1 seed on {CORE_HC} (an interval needs 2): shown, not decided." in details[5]
    combo = {r["variant"]: r for r in csv.DictReader((tmp_path / "results" / "aggregate.csv").open())}["combo"]
    assert (float(combo["iqm"]), combo["ci_low"], combo["seeds_per_core_dataset"]) == (50.0, "", "1 + 1 + 1")
    assert combo["note"] == f"no CI: fewer than 2 seeds on {', '.join(make_results.CORE)}"
    # With only one-seed runs the claim names what is missing instead of passing.
    alone = tmp_path / "alone"
    write_run(alone, "cql", CORE_HC, 0, {10: 40.0}, {"eval/q_initial": 30.0, "eval/discounted_return": 80.0})
    assert make_results.make_results(alone, tmp_path / "r2", command="x")[4][1] == "NOT RUN"


def test_a_critic_still_rising_is_said_beside_the_lower_bound(tmp_path, fast_bootstrap):
    root = tmp_path / "runs"
    for seed in (0, 1):
        write_run(root, "cql", CORE_MR, seed, {10: 30.0, 20: 31.0, 30: 32.0}, lines=tuple(
            json.dumps({"step": step, "eval/normalized_score": 30.0, "eval/q_initial": q,
                        "eval/discounted_return": 100.0}) + "\n" for step, q in ((10, 5.0), (20, 9.0), (30, 12.0 + seed))))
    claims = make_results.make_results(root, tmp_path / "results", command="x")
    verdict, details = claims[4][1], "\n".join(claims[4][2])
    assert verdict == "PASS"
    assert "still rising at the final evaluation on every seed (first, last two: 5.0 -> 9.0 -> 12.0; " \
           "5.0 -> 9.0 -> 13.0)" in details


def test_claims_not_run_name_what_is_missing(tmp_path, fast_bootstrap):
    root = tmp_path / "runs"
    write_run(root, "bc", CORE_MR, 0, {10: 20.0})
    write_run(root, "bc_10", CORE_MR, 0, {10: 30.0})
    write_run(root, "cql", CORE_MR, 0, {10: 30.0})  # no Q at the initial states in its log
    write_run(root, "cql", CORE_MR, 1, {10: 30.0})
    claims = make_results.make_results(root, tmp_path / "results", command="x")
    assert [result for _, result, _ in claims] == ["NOT RUN"] * 8
    details = {i: "\n".join(lines) for i, (_, _, lines) in enumerate(claims, 1)}
    assert f"bc_10 has 1 seed on {CORE_MR} (an interval needs 2)" in details[2]
    assert f"bc_10 not run on {CORE_HC}" in details[2]
    assert "2 of 2 cql seeds on local/hopper/medium-replay-v0 logged no eval/q_initial and eval/discounted_return" \
        in details[5]
    assert "mopo_nopen not run on local/hopper/medium-replay-v0" in details[6]


def test_sanity_table(tmp_path, fast_bootstrap):
    root = tmp_path / "runs"
    write_run(root, "bc", "local/hopper/expert-v0", 0, {10: 98.0})
    write_run(root, "bc", "local/hopper/random-v0", 0, {10: 25.0})
    write_run(root, "bc", "local/pendulum/expert-v0", 0, {10: 101.0})
    make_results.make_results(root, tmp_path / "results", command="x")
    text = (tmp_path / "results" / "sanity.md").read_text()
    assert "| hopper | 98.0 ± 0.0 (n=1, 10) | 2.0 points from 100 (within 10) | 25.0 ± 0.0 (n=1, 10) | " \
           "25.0 points from 0 (MORE than 10) |" in text
    assert "| pendulum | 101.0 ± 0.0 (n=1, 10) | 1.0 points from 100 (within 10) | not run | - |" in text


def test_readme_section_headlines_mujoco_and_keeps_pendulum(fake_root, tmp_path, fast_bootstrap):
    for seed in (0, 1):
        write_run(fake_root, "iql", CORE_MR, seed, {5000: 60.0 + seed},
                  budget="--max_steps 50000 --eval_every 5000 --eval_episodes 10")
    readme = tmp_path / "README.md"
    readme.write_text("# title\n\nbefore\n<!-- results: begin -->\nstale table\n<!-- results: end -->\nafter\n")
    make_results.make_results(fake_root, tmp_path / "results", readme=readme)
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n<!-- results: begin -->")
    assert text.endswith("<!-- results: end -->\nafter\n")
    assert "stale table" not in text
    mujoco, pendulum = text.split("### Pendulum")
    assert "### MuJoCo locomotion" in mujoco and "| iql | 60.5 ± 0.5 (n=2, 5k) | not run | not run |" in mujoco
    cpu = (f"python tools/sweep.py --variants iql --datasets {CORE_MR} --seeds 0 1 --workers 2 --root runs/bench "
           "--set max_steps=50000 eval_every=5000 eval_episodes=10")
    assert f"Runs: 2 runs, made by `{cpu}`" in mujoco and f"```bash\n{cpu}\npython tools/make_results.py\n```" in mujoco
    assert "IQM [95% CI]" in mujoco and "| 1 | TD methods beat BC on medium-replay | NOT RUN |" in mujoco
    assert (f"python tools/sweep.py --variants iql --datasets {CORE_MR} --seeds 0 1 --workers N --root runs/d4rl "
            "--commit-dir results/runs-d4rl --set eval_episodes=10 max_steps=1000000 eval_every=5000 device=cuda"
            ) in mujoco
    assert MEDIUM_REPLAY not in mujoco  # the Pendulum runs go with the Pendulum section
    assert "| bc | 35.0 ± 5.0 (n=2, 20) |" in pendulum
    pendulum_sweep = (f"python tools/sweep.py --variants bc bc_10 td3_bc --datasets {MEDIUM_REPLAY} --seeds 0 1 "
                      "--workers 2 --root runs/bench --set max_steps=20 eval_every=10 eval_episodes=5")
    assert f"Runs: 6 runs, made by `{pendulum_sweep}`" in pendulum
    reproduce = (tmp_path / "results" / "reproduce.md").read_text()
    assert cpu in reproduce and pendulum_sweep in reproduce


def test_few_sweeps_make_exactly_the_runs(tmp_path):
    root = tmp_path / "runs"
    fifty = "--max_steps 50000 --eval_every 5000"
    for variant in ("bc_10", "iql", "d3rlpy_iql"):
        for seed in (0, 1, 2):
            write_run(root, variant, CORE_MR, seed, {5000: 1.0}, budget=fifty)
    write_run(root, "iql", CORE_HC, 0, {5000: 1.0}, budget=fifty)  # one seed on a second dataset: its own sweep
    write_run(root, "bc_10", CORE_HC, 0, {5000: 1.0}, budget=fifty + " --compile true")  # other settings
    write_run(root, "bc_25", CORE_HC, 0, {5000: 1.0}, budget="--frac 0.25 " + fifty)  # a --define variant
    (root / "bc_25" / CORE_HC / "seed0" / "command.txt").write_text(
        (root / "bc_25" / CORE_HC / "seed0" / "command.txt").read_text().replace("bc_25.py", "bc_filtered.py"))
    runs = make_results.load_runs([root])
    assert [s.command() for s in make_results.reproduce_sweeps(runs)] == [
        f"python tools/sweep.py --variants bc_10 iql d3rlpy_iql --datasets {CORE_MR} --seeds 0 1 2 --workers 2 "
        "--root runs/bench --set max_steps=50000 eval_every=5000",
        f"python tools/sweep.py --variants bc_10 --datasets {CORE_HC} --seeds 0 --workers 2 --root runs/bench "
        "--set max_steps=50000 eval_every=5000 compile=true",
        f"python tools/sweep.py --variants iql --datasets {CORE_HC} --seeds 0 --workers 2 --root runs/bench "
        "--set max_steps=50000 eval_every=5000",
        f"python tools/sweep.py --variants bc_25 --define bc_25=bc_filtered --datasets {CORE_HC} --seeds 0 "
        "--workers 2 --root runs/bench --set frac=0.25 max_steps=50000 eval_every=5000"]
    # The sweep is what tools/sweep.py would run: its plan writes the same commands as the runs'.
    planned = sweep.plan(["bc_10"], [CORE_MR], [0], tmp_path / "runs" / "bench", sweep.parse_sets(
        ["max_steps=50000", "eval_every=5000"]), {})
    assert planned[0].args[-6:] == ["--frac", "0.1", "--max_steps", "50000", "--eval_every", "5000"]


def test_gpu_sweeps_take_each_methods_full_budget():
    cpu = make_results.Sweep(["dt", "mopo_nopen", "d3rlpy_dt", "d3rlpy_bc"], [CORE_MR], [0], "runs/bench",
                             ["max_steps=8000", "warmup_steps=800", "bc_steps=400", "model_max_epochs=50",
                              "compile=true", "dynamics_path=runs/bench/mopo/local/hopper/medium-replay-v0/seed0/"
                              "dynamics.pt", "device=cpu"])
    gpu = make_results.gpu_sweeps([cpu])
    assert [(s.variants, s.sets) for s in gpu] == [
        (["dt", "d3rlpy_dt"], ["compile=true", "dynamics_path=runs/d4rl/mopo/local/hopper/medium-replay-v0/seed0/"
                               "dynamics.pt", "max_steps=100000", "eval_every=5000", "device=cuda"]),
        (["mopo_nopen", "d3rlpy_bc"], ["compile=true", "dynamics_path=runs/d4rl/mopo/local/hopper/medium-replay-v0/"
                                       "seed0/dynamics.pt", "max_steps=1000000", "eval_every=5000", "device=cuda"])]
    assert gpu[0].command("N", "results/runs-d4rl").startswith(
        f"python tools/sweep.py --variants dt d3rlpy_dt --datasets {CORE_MR} --seeds 0 --workers N --root runs/d4rl "
        "--commit-dir results/runs-d4rl --set compile=true")


def test_variants_and_sets_become_flags(tmp_path):
    runs = sweep.plan(["bc", "bc_10", "td3_bc"], ["local/pendulum/medium-v0"], [3], tmp_path,
                      sweep.parse_sets(["max_steps=50", "eval_targets=[-150.0]"]), {})
    bc, bc_10, td3 = runs
    assert bc.args[:3] == ["algorithms/bc_filtered.py", "--config_path", "configs/bc_filtered/pendulum-medium.yaml"]
    assert bc.args[-6:] == ["--frac", "1.0", "--max_steps", "50", "--eval_targets", "[-150.0]"]
    assert bc_10.args[bc_10.args.index("--frac") + 1] == "0.1" and td3.args[0] == "algorithms/td3_bc.py"
    assert bc.run_dir == str(tmp_path / "bc" / "local/pendulum/medium-v0" / "seed3") and bc.max_steps == 50
    # The ablations of the claims: MOPO without its penalty, TD3+BC without its BC term.
    mopo_nopen, td3_nobc = sweep.plan(["mopo_nopen", "td3_nobc"], ["local/pendulum/medium-v0"], [0], tmp_path, [], {})
    assert mopo_nopen.args[0] == "algorithms/mopo.py" and mopo_nopen.args[-2:] == ["--penalty_coef", "0.0"]
    assert td3_nobc.args[0] == "algorithms/td3_bc.py" and td3_nobc.args[-2:] == ["--bc_coef", "0.0"]
    # DT with the authors' N(0, 1) timestep embedding (ours starts it as GPT-2, std 0.02).
    dt_init1, = sweep.plan(["dt_init1"], ["local/pendulum/medium-v0"], [0], tmp_path, [], {})
    assert dt_init1.args[0] == "algorithms/dt.py" and dt_init1.args[-2:] == ["--timestep_embedding_std", "1.0"]
    # Without --set max_steps, the config's value decides when a run is finished.
    assert sweep.plan(["iql"], ["local/pendulum/medium-v0"], [0], tmp_path, [], {})[0].max_steps == 30_000
    with pytest.raises(SystemExit, match="no_such_algo"):
        sweep.plan(["no_such_algo"], ["local/pendulum/medium-v0"], [0], tmp_path, [], {})
    # CQL with the policy's mean next action in its target (the peer's choice), beside the authors' sampled a'.
    mean_target, = sweep.plan(["cql_mean_target"], ["local/pendulum/medium-v0"], [0], tmp_path, [], {})
    assert mean_target.args[0] == "algorithms/cql.py" and mean_target.args[-2:] == ["--target_action", "mean"]


@pytest.mark.parametrize("argv,expected", [
    (["--set", "max_steps=abc"], "max_steps must be a positive integer, got 'abc'"),
    (["--workers", "0"], "--workers must be at least 1"),
    (["--seeds", "-1"], "--seeds must be 0 or more"),
])
def test_bad_sweep_flags_are_one_sentence(argv, expected, tmp_path):
    with pytest.raises(SystemExit, match=expected):
        sweep.main(["--variants", "iql", "--datasets", "local/pendulum/medium-v0", "--root", str(tmp_path),
                    "--commit-dir", "none", "--dry-run", *argv])


def test_commit_run_copies_the_small_files_of_a_finished_run(tmp_path):
    run_dir = write_run(tmp_path / "bench", "bc", CORE_MR, 0, {10: 1.0})
    (run_dir / "checkpoint.pt").write_bytes(b"big")
    (run_dir / "policy.pt2").write_bytes(b"big")
    (run_dir / "machine.txt").write_text("cpu\n")
    committed = tmp_path / "committed" / "bc" / CORE_MR / "seed0"
    assert not sweep.commit_run(run_dir, committed)  # unfinished: nothing to commit
    (run_dir / "finished.json").write_text('{"step": 20}')
    assert sweep.commit_run(run_dir, committed)
    assert sorted(p.name for p in committed.iterdir()) == ["command.txt", "finished.json", "log.jsonl", "machine.txt"]
    assert not sweep.commit_run(run_dir, committed)  # the same run is committed already


def test_sweep_skips_a_run_committed_by_an_earlier_session(tmp_path, monkeypatch):
    started = []

    def fake_script(args, **kwargs):  # the script's side of the contract: a log, a checkpoint, finished.json
        run_dir = Path(args[args.index("--checkpoints_path") + 1])
        started.append(run_dir.name)
        (run_dir / "log.jsonl").write_text(json.dumps({"step": 20, "eval/normalized_score": 1.0}) + "\n")
        (run_dir / "checkpoint.pt").write_bytes(b"big")
        (run_dir / "finished.json").write_text('{"step": 20}')
        return 0

    monkeypatch.setattr(sweep, "run_child", fake_script)
    committed, bench = tmp_path / "committed", tmp_path / "bench"
    done = committed / "bc" / "local/pendulum/medium-v0" / "seed0"
    done.mkdir(parents=True)
    (done / "finished.json").write_text('{"step": 20}')
    (done / "log.jsonl").write_text("")
    grid = dict(sets=TINY, progress=False, commit_dir=committed, command="python tools/sweep.py --the-grid")
    # Seed 0 is committed at the budget asked for: skipped without running.  Seed 1 runs and is committed.
    results = sweep.run_grid(["bc"], ["local/pendulum/medium-v0"], [0, 1], bench, **grid)
    assert [(r["status"], r["committed"]) for r in results] == [("skipped", True), ("done", True)]
    assert started == ["seed1"] and not (bench / "bc" / "local/pendulum/medium-v0" / "seed0").exists()
    assert sorted(p.name for p in (committed / "bc" / "local/pendulum/medium-v0" / "seed1").iterdir()) == \
        ["command.txt", "dataset.txt", "finished.json", "log.jsonl", "machine.txt"]
    # A run committed at a smaller budget is run again (resuming in ROOT) and its commit replaced.
    (done / "finished.json").write_text('{"step": 10}')
    again = sweep.run_grid(["bc"], ["local/pendulum/medium-v0"], [0, 1], bench, **grid)
    assert [(r["status"], r["committed"]) for r in again] == [("done", True), ("skipped", True)]
    assert started == ["seed1", "seed0"] and json.loads((done / "finished.json").read_text())["step"] == 20
    # The command is recorded once in the commit directory, however often the sweep runs.
    assert (committed / "sweeps.txt").read_text().count("--the-grid") == 1
    assert (bench / "sweeps.txt").read_text().count("--the-grid") == 2


def test_sweep_runs_skips_and_reports_a_failure(minari_root, tmp_path):
    root = tmp_path / "bench"
    grid = dict(sets=TINY, workers=2, progress=False)
    # An unknown dataset fails both its runs; the good runs beside them still finish.
    committed = tmp_path / "committed"
    first = sweep.run_grid(["bc"], ["local/pendulum/nonexistent-v0", "local/pendulum/medium-v0"], [0, 1], root,
                           commit_dir=committed, **grid)
    assert [r["status"] for r in first] == ["failed", "failed", "done", "done"], first
    assert [bool(r.get("committed")) for r in first] == [False, False, True, True]
    assert not (committed / "bc" / "local/pendulum/nonexistent-v0").exists()
    assert sorted(p.name for p in (committed / "bc" / "local/pendulum/medium-v0" / "seed1").iterdir()) == \
        ["command.txt", "dataset.txt", "finished.json", "log.jsonl", "machine.txt"]
    assert "nonexistent" in first[0]["error"]
    assert "nonexistent" in (root / "bc" / "local/pendulum/nonexistent-v0" / "seed1" / "error.txt").read_text()
    assert "2 done, 0 skipped, 2 failed" in sweep.summary(first)
    run_dir = root / "bc" / "local/pendulum/medium-v0" / "seed1"
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "eval/normalized_score" in r] == [10, 20]
    command = (run_dir / "command.txt").read_text()
    assert "OMP_NUM_THREADS=1" in command and "--frac 1.0" in command and "--seed 1" in command
    assert_records_the_dataset_build(run_dir)

    again = sweep.run_grid(["bc"], ["local/pendulum/medium-v0"], [0, 1], root, **grid)
    assert [r["status"] for r in again] == ["skipped", "skipped"]

    make_results.make_results(root, tmp_path / "results", command="tiny")
    row = read_csv(tmp_path / "results" / "scores.csv")["bc", "local/pendulum/medium-v0"]
    assert row["n_seeds"] == "2"
    assert re.search(rf"- local/pendulum/medium-v0: \d+ episodes, {TINY_SIZE} steps: 2 runs\n",
                     (tmp_path / "results" / "scores.md").read_text())
    assert "nonexistent-v0/seed1: failed" in (tmp_path / "results" / "scores.md").read_text()
    # The committed logs alone (no checkpoint, no run directory) give the same table.
    make_results.make_results(committed, tmp_path / "from_commit", command="tiny")
    assert read_csv(tmp_path / "from_commit" / "scores.csv")["bc", "local/pendulum/medium-v0"] == row


def test_sigterm_to_the_sweep_stops_its_runs_resumably(minari_root, tmp_path):
    """kill <sweep pid> must not leave its runs going on alone (a second sweep would then share their directories):
    the run gets SIGTERM, checkpoints and exits, and the sweep exits with 143."""
    root = tmp_path / "bench"
    command = [sys.executable, "tools/sweep.py", "--variants", "bc", "--datasets", "local/pendulum/medium-v0",
               "--seeds", "0", "--root", str(root), "--commit-dir", "none", "--set", "max_steps=1000000",
               "eval_every=500000", "logging=disabled", "device=cpu"]
    sweeper = subprocess.Popen(command, cwd=Path(sweep.__file__).parents[1], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    log = root / "bc" / "local/pendulum/medium-v0" / "seed0" / "log.jsonl"
    deadline = time.time() + 120
    while not (log.exists() and log.read_text()) and time.time() < deadline:  # the run is training
        time.sleep(0.5)
    assert log.exists(), sweeper.stderr.read() if sweeper.poll() is not None else "the run never logged"
    sweeper.send_signal(signal.SIGTERM)
    assert sweeper.wait(timeout=120) == 143
    assert "the same command resumes" in sweeper.stderr.read()
    assert (log.parent / "checkpoint.pt").exists() and not (log.parent / "finished.json").exists()
    assert subprocess.run(["pgrep", "-f", str(log.parent)], capture_output=True).returncode == 1  # no run left


def test_sweep_on_a_local_ray_instance(minari_root, tmp_path):
    ray = pytest.importorskip("ray")
    try:
        results = sweep.run_grid(["bc_10"], ["local/pendulum/medium-v0"], [0, 1], tmp_path / "bench", sets=TINY,
                                 workers=2, ray_address="local", progress=False)
        assert not ray.is_initialized()  # the sweep shuts down the instance it started
    finally:
        if ray.is_initialized():
            ray.shutdown()
    assert [r["status"] for r in results] == ["done", "done"], results
    for seed in (0, 1):
        run_dir = tmp_path / "bench" / "bc_10" / "local/pendulum/medium-v0" / f"seed{seed}"
        assert (run_dir / "checkpoint.pt").exists() and "--frac 0.1" in (run_dir / "command.txt").read_text()
        # The Ray worker imports make_datasets too (tools/ on its path) and reads the same local copy.
        assert_records_the_dataset_build(run_dir)


def test_sweep_on_a_ray_instance_started_by_the_caller(minari_root, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        results = sweep.run_grid(["bc"], ["local/pendulum/medium-v0"], [0], tmp_path / "bench", sets=TINY,
                                 workers=1, ray_address="local", progress=False)
        assert ray.is_initialized()  # the caller's instance is left to the caller
    finally:
        ray.shutdown()
    assert [r["status"] for r in results] == ["done"], results
    run_dir = tmp_path / "bench" / "bc" / "local/pendulum/medium-v0" / "seed0"
    assert_records_the_dataset_build(run_dir)
