"""Process helpers shared by tools/sweep.py and tools/ope.py: child processes that a SIGTERM to the parent
stops too (run_child, stop_runs), copies whose marker file comes last (copy_in_order), the end of a child's
stderr as a terminal shows it (last_lines), and the machine a run ran on (machine_description)."""

from __future__ import annotations

import os
import platform
import shutil
import signal
import subprocess
import threading
from pathlib import Path


def machine_description() -> str:
    """CPU model, count and the vector instructions torch uses on it, and the GPU this process sees, e.g.
    'AMD EPYC 7B13 (2 CPUs, AVX2), no GPU' (the same model name comes with AVX2 or AVX512: they round differently,
    and bf16 is native only on some AVX512 CPUs)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu, vector = "no GPU", "?"
    try:
        import torch

        vector = torch.backends.cpu.get_cpu_capability()
        if torch.cuda.is_available():
            gpu = f"GPU {torch.cuda.get_device_name(0)}"
    except Exception:  # noqa: BLE001 - a broken CUDA install still gets a description
        pass
    return f"{cpu} ({os.cpu_count()} CPUs, {vector}), {gpu}"


def copy_in_order(source: Path, target: Path, names: tuple[str, ...]) -> None:
    """Copies the named files that exist, in order, each through a temporary file: with the marker file
    last, an interrupted copy never looks complete."""
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (source / name).exists():
            tmp = target / f".{name}.partial"
            shutil.copyfile(source / name, tmp)
            os.replace(tmp, target / name)


def last_lines(text: str, n: int) -> str:
    """The last n lines as a terminal shows them (a progress bar's carriage returns keep only its last state)."""
    lines = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    return "\n".join([line for line in lines if line.strip()][-n:])


class RunningRuns:
    """The processes started by run_child (a sweep's runs, ope's FQE runs), for stop_runs.  Pickles as a new
    empty registry (a Ray worker keeps its own)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.children: set[subprocess.Popen] = set()
        self.stopping = False

    def __reduce__(self):
        return RunningRuns, ()


RUNNING = RunningRuns()


def run_child(args: list[str], **popen) -> int:
    """subprocess.run, but the process is known to stop_runs while it runs; a run is not started once the
    sweep is stopping."""
    with RUNNING.lock:
        if RUNNING.stopping:
            return 128 + signal.SIGTERM
        child = subprocess.Popen(args, **popen)
        RUNNING.children.add(child)
    try:
        return child.wait()
    finally:
        with RUNNING.lock:
            RUNNING.children.discard(child)


def stop_runs(signum, frame) -> None:
    """SIGTERM handler of a sweep (or of ope): the running runs get SIGTERM (each checkpoints and exits), none starts,
    and the sweep unwinds as on Ctrl-C."""
    with RUNNING.lock:
        RUNNING.stopping = True
        for child in RUNNING.children:
            child.send_signal(signal.SIGTERM)
    raise KeyboardInterrupt
