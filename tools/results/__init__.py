"""Tables, plots and the chapter's claims from the run directories of tools/sweep.py (the entry point:
python -m tools.make_results).

Reads ROOT/<variant>/<dataset_id>/seed<S>/: log.jsonl (the evaluations), run.json (what the run is: algorithm,
resolved config, the data it read, the machine, command), commit.txt and finished.json; nothing else.  Writes in
--out (results/):
  scores.md, scores.csv  normalized score per (variant, dataset), on the local scale and on D4RL's (D4RL's
                         reference returns, results/d4rl_reference.csv): the score (a run's mean over its last 3
                         evaluations, results/protocol.md), the last evaluation and the best, mean ± sample std over
                         seeds with n and the budget (updates) of every cell, "not run" for the cells of the planned
                         grid that have no run; and the aggregate: interquartile mean over (core dataset, seed) with a
                         stratified bootstrap 95% CI (rliable), grouped by budget, also in aggregate.csv
  published.md           the papers' and libraries' published D4RL numbers (results/published.csv) beside ours
  profiles.png           performance profiles on the core datasets, ours and the peer in separate panels
  curves.png             learning curves on the core datasets (curves-pendulum.png: Pendulum), at most 8 a panel
  peer.md, peer.csv      ours beside the peer library (d3rlpy_<algo>): the difference of means with its 95% Welch
                         t interval
  claims.md              the chapter's claims on MuJoCo under results/protocol.md, each SUPPORTED / CONTRADICTED /
                         UNDECIDED on 95% t intervals with a one-sentence reading, beside the verdicts of the
                         earlier protocol
  sanity.md              bc on each environment's expert data (about 100) and random data (about 0)
  reproduce.md           the sweep commands that make the runs again, derived from each run's run.json, and the
                         same sweeps at each method's full budget on a GPU
  rerun.md, rerun.png    when --out holds rerun/ (runs made again on newer code): each beside its older seeds
  precision.md           --precision bf16 beside fp32 on the same cells: the difference with its Welch interval, claim P
  o2o.md, o2o.png        offline-to-online fine-tuning (variants iql_o2o, awac_o2o, cql_o2o, calql_o2o, sac_scratch,
                         sac_scratch_cql): the score at the switch, through the online phase and at its end, end
                         minus switch, the initial collapse (drop) and the dip
and, when --out is the project's results/, the README's results section (between its markers).
Every file names the runs, the budget, the device and the date.

Modules: runs (loading, a run's score), stats (cells, t intervals, IQM), verdicts (the protocol's decisions),
claims (the claims' parts), readings (their sentences), headers (every page's head), tables (Markdown tables),
the pages scores, peer, sanity, reproduce, plots, published, rerun, o2o, and readme.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from . import stats
from .claims import CLAIMS, Claim, check_claims, write_claims
from .headers import display, header
from .o2o import O2O, write_o2o
from .peer import peer_rows, write_peer
from .plots import curve_datasets, plot_curves, plot_profiles
from .precision import write_precision
from .published import write_published
from .readme import readme_section, update_readme
from .reproduce import gpu_commands, reproduce_sweeps, write_reproduce
from .rerun import RERUN_DIR, write_rerun
from .runs import DEFAULT_ROOT, HEADLINE, PENDULUM, PROJECT, load_runs, suite
from .sanity import write_sanity
from .scores import aggregate, dataset_builds, problems, write_scores
from .stats import score_table
from .tables import grid

__all__ = ["make_results", "main", "CLAIMS", "Claim"]


def make_results(root: str | Path | list, out: str | Path = PROJECT / "results", command: Optional[str] = None,
                 readme: Optional[Path] = None) -> list[Claim]:
    """Writes every table and plot (see the module docstring); returns the claims.
    readme: the README whose results section to rewrite (default: the project's, when out is its results/)."""
    roots = [Path(r) for r in (root if isinstance(root, (list, tuple)) else [root])]
    out = Path(out)
    every_run = load_runs(roots)
    runs = [r for r in every_run if r.variant not in O2O]  # offline runs; fine-tuning has its own page, o2o.md
    if not any(r.evaluations for r in every_run):
        raise SystemExit(f"error: no run with an evaluation under {', '.join(map(str, roots))} "
                         f"(looked for */<dataset_id>/seed*/log.jsonl).")
    out.mkdir(parents=True, exist_ok=True)
    by_suite = {s: [r for r in every_run if suite(r.dataset) == s] for s in (HEADLINE, PENDULUM)}
    sweeps = {s: reproduce_sweeps(by_suite[s]) for s in by_suite}
    commands = {s: [command] if command else [w.command() for w in sweeps[s]] for s in by_suite}
    gpu = {s: gpu_commands(sweeps[s]) for s in by_suite}
    reproduce = display(out / "reproduce.md")
    head = header(by_suite[HEADLINE], commands[HEADLINE], roots, reproduce)
    pendulum_head = header(by_suite[PENDULUM], commands[PENDULUM], roots, reproduce) if by_suite[PENDULUM] else []
    write_reproduce({HEADLINE: (head if by_suite[HEADLINE] else [], commands[HEADLINE], gpu[HEADLINE]),
                     PENDULUM: (pendulum_head, commands[PENDULUM], gpu[PENDULUM])}, out / "reproduce.md")
    table = score_table(runs)
    variants, _ = grid(table, HEADLINE)
    agg = aggregate(table, variants)
    offline_runs = {which: [r for r in by_suite[which] if r.variant not in O2O] for which in by_suite}
    curves = {name: (which, suite_head, curve_datasets(offline_runs[which], which == HEADLINE))
              for which, name, suite_head in ((HEADLINE, "curves.png", head),
                                              (PENDULUM, "curves-pendulum.png", pendulum_head))}
    plots = ("profiles.png", *[name for name, (*_, datasets) in curves.items() if datasets])
    write_scores(table, head, pendulum_head, agg, problems(runs, roots), dataset_builds(runs), out, runs, plots)
    peer = peer_rows(table)
    write_peer(peer, head, out)
    write_sanity(table, head, out)
    write_published(table, head, out)
    caption = "\n".join(head).replace("`", "")
    plot_profiles(table, variants, out / "profiles.png", caption)
    for name, (which, suite_head, datasets) in curves.items():
        if datasets:
            plot_curves(offline_runs[which], out / name, "\n".join(suite_head).replace("`", ""), datasets)
    write_o2o(every_run, head, out)
    claims = check_claims(every_run)
    write_claims(claims, head, out / "claims.md")
    write_precision(runs, claims, head, out)
    if (out / RERUN_DIR).is_dir():
        write_rerun(out / RERUN_DIR, runs, out, head)
    if readme is None and out.resolve() == (PROJECT / "results").resolve():
        readme = PROJECT / "README.md"
    if readme is not None:
        update_readme(readme, readme_section(head, agg, claims, commands[HEADLINE], pendulum_head, plots))
    return claims


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.make_results", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", nargs="+", default=[str(PROJECT / DEFAULT_ROOT)],
                        help=f"run roots: the --commit-dir of tools/sweep.py (default {DEFAULT_ROOT}) or its --root")
    parser.add_argument("--out", default=str(PROJECT / "results"), help="where the tables and the plots go")
    parser.add_argument("--command", default=None,
                        help="the sweep command that made the runs (default: derived from each run's run.json)")
    parser.add_argument("--reps", type=int, default=stats.REPS, help="bootstrap resamples")
    args = parser.parse_args(argv)
    stats.REPS = args.reps
    claims = make_results(args.root, args.out, args.command)
    for c in claims:
        print(f"claim {c.label:>3}: {c.verdict:12s} (2026-12-04: {c.old:4s}) {c.short}")
    print(f"wrote {Path(args.out) / 'scores.md'}, scores.csv, aggregate.csv, published.md, profiles.png, curves.png, "
          f"peer.md, peer.csv, claims.md, precision.md, sanity.md, reproduce.md, o2o.md")
    return 0
