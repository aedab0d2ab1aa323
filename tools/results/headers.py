"""The header every page starts with (runs, budget, device, date): the offline runs' budgets, and apart from them the
offline-to-online runs'."""

from __future__ import annotations

import datetime
from pathlib import Path

from tools.processes import machine_description

from .runs import PROJECT, RunRecord, plural, steps_text, variant_key


def display(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(PROJECT)) if path.is_relative_to(PROJECT) else str(path)


def header(runs: list[RunRecord], commands: list[str], roots: list[Path], reproduce: str) -> list[str]:
    """Runs, budget, device, date: the lines every table, plot and the README start with; the offline runs' budgets,
    and apart from them the offline-to-online runs' (offline updates, 0 for a learner from scratch, then online
    environment steps).  commands: the sweep commands that made the runs, listed in the file reproduce when there
    are several."""
    def values(name, group):
        found = sorted({str(r.config[name]) for r in group if name in r.config}, key=lambda x: (len(x), x))
        return ", ".join(found) or "unknown"

    def finals(group):
        return ", ".join(steps_text(s) for s in sorted({r.steps[-1] for r in group if r.evaluations})) or "-"

    seeds = sorted({r.seed for r in runs})
    offline, online = split_online(runs)
    devices = set()
    for r in runs:
        device = str(r.config.get("device", "auto"))
        if device == "auto" and r.machine:
            device = "cuda" if "no GPU" not in r.machine else "cpu"
        devices.add(f"{device} on {r.machine}" if r.machine else device)
    device = "; ".join(sorted(devices)) if devices else "unknown"
    if runs and all(not r.machine for r in runs):
        device += f" (runs did not record their machine; this machine: {machine_description()})"
    logs = f"logs in {', '.join(f'`{display(root)}`' for root in roots)}"
    unknown = sum(not r.command for r in runs)
    made = (f"made by `{commands[0]}`" if len(commands) == 1 else
            f"made by the {len(commands)} sweep commands in `{reproduce}`" if commands else "made by commands unknown")
    made += f" ({plural(unknown, 'run')} without a run.json not among them)" if unknown and commands else ""
    return [
        f"Runs: {plural(len(runs), 'run')}, {made} ({logs}).",
        *([f"Budget: {values('max_steps', offline)} updates per offline run (final evaluation at {finals(offline)}); "
           f"evaluation every {values('eval_every', offline)} updates, {values('eval_episodes', offline)} episode(s); "
           f"seeds {', '.join(map(str, seeds)) or '-'}."] if offline or not online else []),
        *([online_budget(online, values, finals) + ("" if offline else f"; seeds {', '.join(map(str, seeds))}") + "."]
          if online else []),
        f"Device: {device}.",
        f"Made by `python -m tools.make_results` on {datetime.date.today().isoformat()}.",
    ]


def split_online(runs: list[RunRecord]) -> tuple[list[RunRecord], list[RunRecord]]:
    """The offline runs and the offline-to-online ones (online_steps > 0 in their config)."""
    def steps(r):
        try:
            return int(r.config.get("online_steps") or 0)
        except (TypeError, ValueError):
            return 0

    return [r for r in runs if steps(r) == 0], [r for r in runs if steps(r) > 0]


def online_budget(online: list[RunRecord], values, finals) -> str:
    """The fine-tuning runs' budget, apart from the offline runs': offline updates (0: online only, named), then
    online environment steps; their final evaluation at offline + online updates."""
    scratch = sorted({r.variant for r in online if int(r.config.get("max_steps") or 0) == 0}, key=variant_key)
    pretrained = [r for r in online if r.variant not in scratch]
    offline = (f"{values('max_steps', pretrained)} offline updates" if pretrained else "")
    if scratch:
        offline += (" (or " if offline else "") + f"0 for {', '.join(scratch)}, which learn online only, from scratch" \
            + (")" if pretrained else "")
    return (f"Offline-to-online runs (results/o2o.md): {offline}, then {values('online_steps', online)} online "
            f"environment steps (final evaluation at update {finals(online)}: offline plus online updates); "
            f"evaluation every {values('eval_every', online)} updates")
