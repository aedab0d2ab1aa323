"""Updates per second of each script's training step (no evaluation), eager and compiled.

  python -m tools.throughput                                   # every script, this machine's device
  python -m tools.throughput --algos td3_bc iql --device cpu --batch-sizes 256 --modes eager
  python -m tools.throughput --algos cql iql --precisions fp32 bf16   # fp32 against --precision bf16

For each (script, batch size, mode): the script's own trainer is built on a synthetic
Hopper-sized dataset (17-dim states, 6-dim actions, 100k transitions, on the device), warmed up,
then timed over several windows; the median window gives updates/s.  Peak memory is the device's
(CUDA) or the process's resident set (CPU).  Writes results/throughput.md with the command, the
machine and the date.  With --precisions fp32 bf16, the update runs as fit() runs it under each --precision
(bf16: under bf16 autocast), both trainers are built and warmed up, and their windows alternate (fp32, bf16, fp32,
...): one round is one window of each, so a load that changes during the measurement weighs on both alike; the
table gives each precision's median window and the median over rounds of the bf16 / fp32 ratio.
"""

import argparse
import datetime
import importlib.util
import itertools
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
STATE_DIM, ACTION_DIM, SIZE = 17, 6, 100_000


def load_script(algo: str):
    spec = importlib.util.spec_from_file_location(f"bench_{algo}", ROOT / "algorithms" / f"{algo}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic_data(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Transitions in the layout of the shared block's flatten_episodes, 1000-step episodes."""
    episode_ids = np.arange(SIZE) // 1000
    ends = (np.arange(SIZE) % 1000 == 999).astype(np.float32)
    rewards = rng.normal(size=SIZE).astype(np.float32)
    returns = np.repeat(np.add.reduceat(rewards, np.arange(0, SIZE, 1000)), 1000)
    return {
        "observations": rng.normal(size=(SIZE, STATE_DIM)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(SIZE, ACTION_DIM)).astype(np.float32),
        "rewards": rewards,
        "next_observations": rng.normal(size=(SIZE, STATE_DIM)).astype(np.float32),
        "terminals": np.zeros(SIZE, np.float32),
        "episode_ends": ends,
        "episode_ids": episode_ids,
        "episode_returns": returns.astype(np.float32),
    }


def make_step(algo: str, batch_size: str, device: torch.device, compiled: bool, precision: str = "fp32"):
    """A zero-argument callable doing one training update of `algo`, as its train() would (the
    model-based scripts' periodic rollouts happen outside the update and are not timed)."""
    module = load_script(algo)
    module.set_seed(0)
    config = module.TrainConfig(device=str(device), compile=compiled, precision=precision)
    if batch_size != "default":
        config.batch_size = int(batch_size)
    data = synthetic_data(np.random.default_rng(0))
    if algo == "dt":  # batches of left-padded trajectory windows
        mean, std = module.state_statistics(data["observations"], config.normalize_states)
        buffer = module.SequenceBuffer(data, mean, std, config, device)
        trainer = module.Trainer(STATE_DIM, ACTION_DIM, 1.0, config, device)
    else:
        buffer, _, _, _ = module.transition_buffer(data, config.normalize_states,
                                                getattr(config, "normalize_reward", False), device)
        if algo == "awr":  # the trainer keeps R^lambda and w per transition, looked up by the batch's index
            trajectories = {**buffer.data, "episode_ends": torch.as_tensor(data["episode_ends"], device=device)}
            buffer.data["index"] = torch.arange(buffer.size, device=device)
            trainer = module.Trainer(STATE_DIM, ACTION_DIM, 1.0, config, device, trajectories)
            trainer.periodic(config.value_steps + 1)  # the policy phase, AWR's most frequent update
        elif algo in ("mopo", "combo"):  # model rollouts happen in periodic(), outside the timed update
            rollouts = module.ModelRollouts(buffer, np.zeros(STATE_DIM, np.float32), np.ones(STATE_DIM, np.float32),
                                            1.0, module.no_termination, config.rollout_batch_size,
                                            config.rollout_length)
            trainer = module.Trainer(STATE_DIM, ACTION_DIM, 1.0, config, device, rollouts)
        else:
            trainer = module.Trainer(STATE_DIM, ACTION_DIM, 1.0, config, device)
        if algo == "fqe":  # pi(s') is computed once before training; any actions time the same
            buffer.data["next_actions"] = torch.rand(buffer.size, ACTION_DIM, device=device) * 2 - 1
    sample = lambda: buffer.sample(config.batch_size)  # noqa: E731
    if algo == "awr":  # the policy phase, AWR's most frequent update
        steps = itertools.repeat(config.value_steps + 1)
    else:  # counted from past any warm start (cql's bc_steps), as in a long run
        steps = itertools.count(getattr(config, "bc_steps", 0) + 1)
    update = torch.compile(trainer.update) if compiled else trainer.update  # as fit() compiles it

    def step():
        with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):  # as fit() runs it
            return update(sample(), next(steps))

    return step, config.batch_size


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(step, device: torch.device, warmup: int, windows: int, window_steps: int) -> dict:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    synchronize(device)
    warmup_seconds = time.perf_counter() - start
    rates = []
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(window_steps):
            step()
        synchronize(device)
        rates.append(window_steps / (time.perf_counter() - start))
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"updates_per_s": statistics.median(rates), "spread": (min(rates), max(rates)),
            "warmup_s": warmup_seconds, "peak_mib": peak}


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or "CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} torch threads"


def main(argv=None) -> int:
    algos_present = sorted(p.stem for p in (ROOT / "algorithms").glob("*.py"))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", default=algos_present)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", nargs="+", default=["256", "default"],
                        help="batch sizes to time; 'default' is the script's own TrainConfig batch_size")
    parser.add_argument("--modes", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"])
    parser.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                        help="fp32 bf16: both, their windows alternating, and the bf16 / fp32 ratio")
    parser.add_argument("--warmup", type=int, default=50, help="untimed updates first (compilation happens here)")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--window-steps", type=int, default=200)
    parser.add_argument("--window-seconds", type=float, default=None,
                        help="with --precisions: each script's window steps chosen from a timed probe of the first "
                             "precision, so that a window lasts about this long (instead of --window-steps)")
    parser.add_argument("--out", default=str(ROOT / "results" / "throughput.md"))
    args = parser.parse_args(argv)
    unknown = [a for a in args.algos if a not in algos_present]
    if unknown:
        print(f"error: unknown algorithm(s) {', '.join(unknown)}; valid: {', '.join(algos_present)}.", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    command = "python -m tools.throughput " + " ".join(argv or sys.argv[1:])
    if args.precisions != ["fp32"]:
        return compare_precisions(args, device, command)
    rows = []
    for algo in args.algos:
        for batch_size in args.batch_sizes:
            for mode in args.modes:
                try:
                    step, size = make_step(algo, batch_size, device, mode == "compiled")
                    if batch_size == "default" and size == 256 and "256" in args.batch_sizes:
                        continue  # the same measurement as batch 256
                    result = measure(step, device, args.warmup, args.windows, args.window_steps)
                except Exception as e:  # noqa: BLE001 - one script failing must not hide the others
                    size, result = batch_size, {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"}
                rows.append({"algo": algo, "batch_size": size, "mode": mode, **result})
                print(rows[-1], flush=True)
    write_table(Path(args.out), rows, device, command)
    return 0


def compare_precisions(args, device: torch.device, command: str) -> int:
    """Per (script, batch size, mode): a trainer per precision, warmed up, then args.windows rounds of one window
    of each precision in turn."""
    rows = []
    for algo, batch_size, mode in itertools.product(args.algos, args.batch_sizes, args.modes):
        row = {"algo": algo, "batch_size": batch_size, "mode": mode}
        try:
            steps = {}
            for precision in args.precisions:
                steps[precision], row["batch_size"] = make_step(algo, batch_size, device, mode == "compiled", precision)
            if batch_size == "default" and row["batch_size"] == 256 and "256" in args.batch_sizes:
                continue  # the same measurement as batch 256
            for step in steps.values():
                for _ in range(args.warmup):
                    step()
            window_steps = args.window_steps
            if args.window_seconds:
                probe = measure(steps[args.precisions[0]], device, 0, 1, 3)["updates_per_s"]
                window_steps = max(3, round(probe * args.window_seconds))
            rates = {precision: [] for precision in args.precisions}
            for _ in range(args.windows):
                for precision, step in steps.items():
                    rates[precision].append(measure(step, device, 0, 1, window_steps)["updates_per_s"])
            row.update({precision: statistics.median(r) for precision, r in rates.items()}, rounds=args.windows,
                       window_steps=window_steps)
            if {"fp32", "bf16"} <= set(rates):
                row["ratio"] = statistics.median(b / f for b, f in zip(rates["bf16"], rates["fp32"]))
                row["ratio_range"] = (min(b / f for b, f in zip(rates["bf16"], rates["fp32"])),
                                      max(b / f for b, f in zip(rates["bf16"], rates["fp32"])))
        except Exception as e:  # noqa: BLE001 - one script failing must not hide the others
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
        rows.append(row)
        print(rows[-1], flush=True)
    write_precision_table(Path(args.out), rows, args.precisions, device, command)
    return 0


def page_head(title: str, command: str, device: torch.device) -> list[str]:
    """The lines every throughput page opens with: its title, the command, the machine and the date."""
    return [title, "", f"Command: `{command}`  ", f"Machine: {machine(device)} (torch {torch.__version__}, device {device})  ",
            f"Date: {datetime.date.today().isoformat()}", ""]


def write_precision_table(path: Path, rows: list[dict], precisions: list[str], device: torch.device,
                          command: str) -> None:
    ratio = {"fp32", "bf16"} <= set(precisions)
    lines = [
        *page_head("# Training throughput: --precision " + " against ".join(precisions), command, device),
        "Updates per second of the training step alone (synthetic 17-dim states, 6-dim actions, 100k transitions"
        " on the device), run as fit() runs it under each --precision (bf16: bf16 autocast, output layers fp32), after"
        " the warm-up.  The precisions' windows alternate; each column is the median of the rounds, and bf16 / fp32 is"
        " the median of the rounds' ratios (range: their lowest and highest).",
        "",
        "| script | batch | mode | " + " | ".join(f"{p} updates/s" for p in precisions)
        + (" | bf16 / fp32 | range |" if ratio else " |") + " rounds | steps per window |",
        "|---|---:|---|" + "---:|" * len(precisions) + ("---:|---|" if ratio else "") + "---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['algo']} | {r['batch_size']} | {r['mode']} | failed: {r['error']} |")
            continue
        cells = [f"{r[p]:.1f}" if r[p] < 10 else f"{r[p]:.0f}" for p in precisions]
        if ratio:
            cells += [f"{r['ratio']:.2f}", f"{r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f}"]
        lines.append(f"| {r['algo']} | {r['batch_size']} | {r['mode']} | " + " | ".join(cells)
                     + f" | {r['rounds']} | {r['window_steps']} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def write_table(path: Path, rows: list[dict], device: torch.device, command: str) -> None:
    eager = {(r["algo"], r["batch_size"]): r.get("updates_per_s") for r in rows if r["mode"] == "eager"}
    lines = [
        *page_head("# Training throughput", command, device),
        "Updates per second of the training step alone (synthetic 17-dim states, 6-dim actions, 100k transitions"
        " on the device), median of the timed windows (min-max in brackets), after the warm-up.",
        "",
        "| script | batch | mode | updates/s | min-max | x eager | warm-up s | peak MiB |",
        "|---|---:|---|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['algo']} | {r['batch_size']} | {r['mode']} | failed: {r['error']} | | | | |")
            continue
        base = eager.get((r["algo"], r["batch_size"]))
        speedup = f"{r['updates_per_s'] / base:.2f}" if base else ""
        lines.append(f"| {r['algo']} | {r['batch_size']} | {r['mode']} | {r['updates_per_s']:.0f} | "
                     f"{r['spread'][0]:.0f}-{r['spread'][1]:.0f} | {speedup} | {r['warmup_s']:.1f} | {r['peak_mib']:.0f} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
