"""Run a benchmark grid: variants x datasets x seeds, each run one algorithm script in its own process.

  python -m tools.sweep --variants bc bc_10 awr td3_bc iql \\
      --datasets local/hopper/medium-replay-v0 local/halfcheetah/medium-replay-v0 local/hopper/medium-expert-v0 \\
      --seeds 0 1 2 --workers 2 --root runs/bench --commit-dir results/runs --set max_steps=50000 eval_every=5000
  python -m tools.make_results --root results/runs   # then the tables, curves and claims

A variant is a name for (script, extra flags): "bc" is bc_filtered with --frac 1.0, "bc_10" is
bc_filtered with --frac 0.1, "mopo_nopen" is mopo with its uncertainty penalty off (--penalty_coef 0.0),
"td3_nobc" is td3_bc without its BC term (--bc_coef 0.0, plain TD3), "dt_init1" is dt with the
authors' N(0, 1) timestep embedding (--timestep_embedding_std 1.0), "cql_mean_target" is cql with the
policy's mean next action in its target (--target_action mean, as the peer library d3rlpy does), "iql_o2o",
"awac_o2o", "cql_o2o" and "calql_o2o" (Cal-QL) are fine-tuned online after their offline updates and "sac_scratch"
learns online from nothing (each with --set online_steps=N), "td3_bc_bf16", "iql_bf16", "cql_bf16" and "combo_bf16"
are the script with --precision bf16 (the equivalence runs of issue 47), "d3rlpy_<algo>" is the peer
library (tools/peer_d3rlpy.py, in its own environment), and every script in algorithms/ is a variant
of its own name with no flags; --define adds more ("bc_25=bc_filtered --frac 0.25": NAME=, the script, then its
flags, words separated by spaces, no quoting).  Each run is

  python algorithms/<script>.py --config_path configs/<script>/<env>-<kind>.yaml --seed S
         --checkpoints_path ROOT/<variant>/<dataset_id>/seed<S> <variant flags> <--set flags>

in ROOT/<variant>/<dataset_id>/seed<S>/, where the script writes run.json (what the run is, as data: its
algorithm, resolved config, the size and content hash of the data it read, and command; builds of a collected
dataset on two machines can differ, and this record tells them apart), the sweep adds the machine to it ("machine":
CPU model and count, GPU; when the run's process ends), and writes command.txt (the exact shell command), commit.txt
(the git commit of the checkout; a script copied alone has no git, so it records none), stdout.log, stderr.log and,
when the run fails, error.txt (the end of its stderr).  Each run works in its run directory (the script and its
config are passed by absolute path), so that what a library writes to the working directory stays with its run:
MuJoCo's warnings go to MUJOCO_LOG.TXT there.
A run that wrote finished.json (all its updates done) is skipped; an interrupted run resumes from its
checkpoint (the scripts do that themselves); a failed run is reported and the others go on.  Ctrl-C or
SIGTERM to the sweep stops it: its running runs get the signal too (they checkpoint and exit), no new
run starts, and the same command resumes.

Runs outlive a session with --commit-dir (default results/runs; "none" turns it off): each finished
run's small files (log.jsonl, run.json, command.txt, commit.txt, finished.json; never checkpoints or policies) are
copied to COMMIT_DIR/<variant>/<dataset_id>/seed<S>/ as soon as it finishes, for git; a run whose finished.json is
already there (committed by an earlier session) is skipped without being rerun.  Each sweep command is appended to
ROOT/sweeps.txt and COMMIT_DIR/sweeps.txt, a history for people: no tool reads it (make_results derives the commands
that reproduce the tables from each run's run.json).  Benchmark grids use it;
python -m tools.make_results --root results/runs rebuilds every table and plot from those files alone.

Locally, --workers runs go at a time, each with OMP_NUM_THREADS=--threads-per-run (1), so N
workers use N cores.  With --ray-address the same runs are Ray tasks on a cluster (num_cpus=1
each, or num_gpus=--gpu-per-run): the project checkout and ROOT must be at the same paths on
every node (shared storage).  --ray-address local starts a Ray instance on this machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, Optional

from tqdm import tqdm

from tools.processes import copy_in_order, last_lines, machine_description, run_child, stop_runs
from tools.variants import PROJECT, Run, parse_define, parse_sets, plan

# A committed run keeps only these files of its run directory (kilobytes; never checkpoints or policies).
COMMITTED_FILES = ("log.jsonl", "run.json", "command.txt", "commit.txt", "finished.json")
DEFAULT_COMMIT_DIR = "results/runs"
# Environment variables a Ray task takes from the driver (a local run inherits the whole environment).
FORWARDED = ("MINARI_DATASETS_PATH", "WANDB_MODE")
ERROR_LINES = 20  # lines of stderr kept in error.txt
STOPPED_CODES = (128 + signal.SIGTERM, -signal.SIGTERM, 128 + signal.SIGINT, -signal.SIGINT)  # checkpointed, resumable


def git_commit(project: str) -> str:
    """The commit of the project checkout the runs use ("unknown" outside git), for commit.txt."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return result.stdout.strip() or "unknown"


def record_machine(path: Path) -> None:
    """Adds "machine" (machine_description(): CPU model and count, GPU) to the run.json the script wrote when it
    started (and rewrites at each start); a run stopped before it wrote one has none to add to."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(record, dict):
        tmp = path.with_name(f".{path.name}.partial")
        tmp.write_text(json.dumps({**record, "machine": machine_description()}, indent=1))
        os.replace(tmp, path)


def in_run_directory(args: list[str], project: str) -> list[str]:
    """A run's arguments (relative to the project) for a process working in its run directory: the script and
    --config_path as absolute paths."""
    return [os.path.join(project, arg) if i == 0 or args[i - 1] == "--config_path" else arg for i, arg in enumerate(args)]


def finished(run_dir: Path, max_steps: Optional[int]) -> bool:
    """The script wrote finished.json, the file a run writes only when it has done all its updates
    (unknown max_steps: any finished run counts)."""
    marker = run_dir / "finished.json"
    if not marker.exists():
        return False
    try:
        step = json.loads(marker.read_text())["step"]
    except (ValueError, KeyError):
        return False
    return max_steps is None or step >= max_steps


def commit_run(run_dir: Path, commit_dir: Path) -> bool:
    """Copies a finished run's small files (COMMITTED_FILES) to commit_dir, each through a temporary file
    and finished.json last, so that an interrupted copy never looks committed.  False when there was
    nothing new to commit (the run is unfinished, or the same finished.json is committed already)."""
    marker = run_dir / "finished.json"
    if not marker.exists():
        return False
    committed = commit_dir / "finished.json"
    if committed.exists() and committed.read_bytes() == marker.read_bytes() \
            and (commit_dir / "log.jsonl").exists():
        return False
    committed.unlink(missing_ok=True)  # uncommitted until the copy is complete
    copy_in_order(run_dir, commit_dir, COMMITTED_FILES)
    return True


def run_one(run: Run, env: dict[str, str], project: str) -> dict:
    """One run in a subprocess: skipped (finished here or committed), done or failed (with the end of its
    stderr).  Never raises."""
    run_dir = Path(run.run_dir)
    result = {"variant": run.variant, "dataset": run.dataset, "seed": run.seed, "run_dir": run.run_dir,
              "status": "skipped", "seconds": 0.0, "error": ""}
    start = time.time()
    try:
        if run.commit_dir and finished(Path(run.commit_dir), run.max_steps):
            return {**result, "committed": True}
        run_dir.mkdir(parents=True, exist_ok=True)
        if finished(run_dir, run.max_steps):
            return result
        prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        python = "python" if run.python == sys.executable else shlex.quote(run.python)
        args = in_run_directory(run.args, project)
        (run_dir / "command.txt").write_text(f"cd {shlex.quote(str(run_dir))} && {prefix} {python} {shlex.join(args)}\n")
        (run_dir / "commit.txt").write_text(git_commit(project) + "\n")
        stdout_log, stderr_log = run_dir / "stdout.log", run_dir / "stderr.log"
        with open(stdout_log, "ab") as out, open(stderr_log, "wb") as err:
            code = run_child([run.python, *args], cwd=run_dir, env={**os.environ, **env},
                             stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        result["seconds"] = time.time() - start
        record_machine(run_dir / "run.json")
        if code in STOPPED_CODES:
            return {**result, "status": "stopped"}
        if code != 0:
            tail = last_lines(stderr_log.read_text(errors="replace"), ERROR_LINES) or f"exit status {code}"
            (run_dir / "error.txt").write_text(f"exit status {code}\n{tail}\n")
            return {**result, "status": "failed", "error": tail.splitlines()[-1]}
        (run_dir / "error.txt").unlink(missing_ok=True)
        return {**result, "status": "done" if finished(run_dir, run.max_steps) else "stopped"}
    except Exception as e:  # noqa: BLE001 - one broken run directory must not stop the grid
        return {**result, "status": "failed", "error": f"{type(e).__name__}: {e}", "seconds": time.time() - start}


def run_local(runs: list[Run], env: dict[str, str], workers: int, report: Callable[[dict], None]) -> None:
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        futures = [pool.submit(run_one, run, env, str(PROJECT)) for run in runs]
        for future in as_completed(futures):
            report(future.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # Ctrl-C: no new run starts; running ones get the SIGINT too


def run_ray(runs: list[Run], env: dict[str, str], address: str, workers: int, gpus: float,
            report: Callable[[dict], None]) -> None:
    import ray

    # The workers import tools.sweep (run_one) from the project checkout, which is at the same path on every node.
    project = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")]))}}
    started = not ray.is_initialized()
    if started and address == "local":
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    elif started:
        ray.init(address=address, log_to_driver=False)
    try:
        resources = {"num_cpus": 1, "num_gpus": gpus} if gpus else {"num_cpus": 1}
        task = ray.remote(run_one).options(runtime_env=project, **resources)  # also on an instance started before
        env = {**{k: os.environ[k] for k in FORWARDED if k in os.environ}, **env}
        runs_of = {task.remote(run, env, str(PROJECT)): run for run in runs}
        pending = list(runs_of)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            try:
                report(ray.get(ready[0]))
            except Exception as e:  # noqa: BLE001 - a lost node or worker: this run failed, the others go on
                run = runs_of[ready[0]]
                report({"variant": run.variant, "dataset": run.dataset, "seed": run.seed, "run_dir": run.run_dir,
                        "status": "failed", "seconds": 0.0, "error": f"Ray task failed: {type(e).__name__}: {e}"})
    finally:
        if started:
            ray.shutdown()


def append_history(command: str, folders: list[Path]) -> None:
    """Appends the sweep command, with the time, to each folder's sweeps.txt: a history for people, read by no tool."""
    stamped = f"{datetime.datetime.now().isoformat(timespec='seconds')}  {command}\n"
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "sweeps.txt", "a") as f:
            f.write(stamped)


def run_grid(variants: list[str], datasets: list[str], seeds: list[int], root: str | Path = "runs/bench",
             sets: Optional[list[str]] = None, workers: int = 1, threads_per_run: int = 1,
             defines: Optional[dict[str, tuple[str, list[str]]]] = None, ray_address: Optional[str] = None,
             gpu_per_run: float = 0.0, command: Optional[str] = None, progress: bool = True,
             commit_dir: str | Path | None = None) -> list[dict]:
    """Runs the grid and returns one result per run: variant, dataset, seed, run_dir, status
    ("done", "stopped" (exited early, e.g. stop_after), "skipped" or "failed"), seconds, error (the last line
    of stderr of a failed run), and with commit_dir: committed (its small files are in commit_dir: copied
    now, or already there, in which case the run was skipped)."""
    root = Path(root).resolve()
    runs = plan(variants, datasets, seeds, root, parse_sets(sets or []), defines or {})
    root.mkdir(parents=True, exist_ok=True)
    if commit_dir is not None:
        commit_dir = Path(commit_dir).resolve()
        for run in runs:
            run.commit_dir = str(commit_dir / run.variant / run.dataset / f"seed{run.seed}")
    if command:
        append_history(command, [root] if commit_dir is None else [root, commit_dir])
    env = {"OMP_NUM_THREADS": str(threads_per_run), "MKL_NUM_THREADS": str(threads_per_run)}
    if "MINARI_DATASETS_PATH" in os.environ:
        env["MINARI_DATASETS_PATH"] = os.environ["MINARI_DATASETS_PATH"]
    results = []
    bar = tqdm(total=len(runs), desc="runs", unit="run", disable=not progress)

    by_key = {(r.variant, r.dataset, r.seed): r for r in runs}

    def report(result: dict) -> None:
        run = by_key[result["variant"], result["dataset"], result["seed"]]
        if run.commit_dir and result["status"] in ("done", "skipped") and not result.get("committed"):
            try:
                if finished(Path(run.run_dir), run.max_steps):
                    commit_run(Path(run.run_dir), Path(run.commit_dir))
                    result = {**result, "committed": True}
            except OSError as e:  # a full disk must not stop the grid: the run itself is fine
                bar.write(f"could not commit {run.run_dir} to {run.commit_dir}: {e}")
        results.append(result)
        if result["status"] == "failed":
            bar.write(f"FAILED {result['variant']} {result['dataset']} seed {result['seed']}: {result['error']}")
        bar.set_postfix({s: sum(r["status"] == s for r in results) for s in ("done", "stopped", "skipped", "failed")})
        bar.update()

    try:
        if ray_address:
            run_ray(runs, env, ray_address, workers, gpu_per_run, report)
        else:
            run_local(runs, env, workers, report)
    finally:
        bar.close()
    order = {(r.variant, r.dataset, r.seed): i for i, r in enumerate(runs)}
    return sorted(results, key=lambda r: order[(r["variant"], r["dataset"], r["seed"])])


def summary(results: list[dict]) -> str:
    counts = {s: sum(r["status"] == s for r in results) for s in ("done", "stopped", "skipped", "failed")}
    committed = sum(bool(r.get("committed")) for r in results)
    lines = [f"{len(results)} runs: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed"
             + (f", {counts['stopped']} stopped early (rerun to resume)" if counts["stopped"] else "")
             + (f"; {committed} in the commit directory" if committed else "")]
    lines += [f"  failed: {r['variant']} {r['dataset']} seed {r['seed']}: {r['error']} "
              f"(see {Path(r['run_dir']) / 'error.txt'})" for r in results if r["status"] == "failed"]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", required=True, help="variant names (see above)")
    parser.add_argument("--datasets", nargs="+", required=True, help="Minari dataset ids")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--root", default="runs/bench", help="directory of the run directories")
    parser.add_argument("--commit-dir", default=DEFAULT_COMMIT_DIR,
                        help="where each finished run's small files go, for git; runs found there are skipped "
                             f"('none': no commit directory; default {DEFAULT_COMMIT_DIR}, in the project)")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="TrainConfig fields given to every run, e.g. max_steps=20000")
    parser.add_argument("--define", nargs="*", default=[], metavar="NAME=SCRIPT FLAGS",
                        help="more variants, e.g. 'bc_25=bc_filtered --frac 0.25' (words separated by spaces)")
    parser.add_argument("--workers", type=int, default=1, help="runs at a time (Ray: CPUs of a local instance)")
    parser.add_argument("--threads-per-run", type=int, default=1, help="OMP_NUM_THREADS of each run")
    parser.add_argument("--ray-address", default=None,
                        help="dispatch the runs as Ray tasks to this cluster ('auto', 'ray://host:10001', or "
                             "'local' for a Ray instance on this machine)")
    parser.add_argument("--gpu-per-run", nargs="?", type=float, const=1.0, default=0.0, metavar="FRACTION",
                        help="Ray: each run asks for this many GPUs (1 when given without a value)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    args = parser.parse_args(argv)
    for name in ("workers", "threads_per_run"):
        if getattr(args, name) < 1:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
    if any(seed < 0 for seed in args.seeds):
        raise SystemExit(f"error: --seeds must be 0 or more, got {' '.join(map(str, args.seeds))}.")
    defines = dict(parse_define(d) for d in args.define)
    if args.dry_run:
        runs = plan(args.variants, args.datasets, args.seeds, Path(args.root).resolve(), parse_sets(args.set), defines)
        print("\n".join(f"{shlex.quote(run.python)} {shlex.join(run.args)}" for run in runs))
        return 0
    command = "python -m tools.sweep " + shlex.join(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, stop_runs)
    commit_dir = None if args.commit_dir.lower() == "none" else \
        PROJECT / args.commit_dir if args.commit_dir == DEFAULT_COMMIT_DIR else Path(args.commit_dir)
    try:
        results = run_grid(args.variants, args.datasets, args.seeds, args.root, args.set, args.workers,
                           args.threads_per_run, defines, args.ray_address, args.gpu_per_run, command,
                           commit_dir=commit_dir)
    except KeyboardInterrupt:
        print("stopped: the running runs checkpointed; the same command resumes the grid.", file=sys.stderr)
        return 128 + signal.SIGTERM
    print(summary(results))
    return 1 if any(r["status"] == "failed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
