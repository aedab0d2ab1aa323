"""results/precision.md (issue 47): each script's score under --precision bf16 beside the same script in fp32 on the
same data, the bf16 - fp32 difference of the protocol's score with its 95% Welch t interval, and claim P's verdict."""

from __future__ import annotations

from pathlib import Path

from .claims import BF16, BF16_REPORTED, HALFCHEETAH_MEDIUM_REPLAY, Claim, compare
from .runs import BF16_SUFFIX, dataset_name
from .stats import cell, interval_text, score_table
from .tables import markdown_table
from .verdicts import EQUIVALENT, MARGIN, SEEDS, counted

SWEEP = ("python -m tools.sweep --variants {variants} --datasets {dataset} --seeds 0 1 2 3 4 --workers 1 --root runs/bench "
         "--commit-dir results/runs --set max_steps={steps} eval_every={every} eval_episodes=10 logging=disabled "
         "compile=true")


def precision_rows(table) -> list[list[str]]:
    """One row per (script, dataset) with a bf16 cell, and claim P's cells even before they have runs."""
    rows = []
    for variant in BF16 + BF16_REPORTED:
        datasets = sorted({d for v, d in table if v == variant + BF16_SUFFIX} | (
            {HALFCHEETAH_MEDIUM_REPLAY} if variant in BF16 else set()))
        for dataset in datasets:
            fp32, bf16 = cell(table, variant, dataset), cell(table, variant + BF16_SUFFIX, dataset)
            part = compare(table, variant + BF16_SUFFIX, variant, dataset, EQUIVALENT)
            difference = (f"{part.diff:+.1f} {interval_text(part.low, part.high)}" if part.low is not None
                          else f"{part.diff:+.1f}" if part.diff is not None else "-")
            decided = part.verdict + (f" ({part.reason})" if part.reason else "") if variant in BF16 else "reported"
            rows.append([variant, dataset_name(dataset), fp32.text() if fp32 else "not run",
                         bf16.text() if bf16 else "not run", difference, decided])
    return rows


def write_precision(runs, claims: list[Claim], head: list[str], out: Path) -> None:
    """runs: the offline runs; only those at their claim's budget and cadence count, as in claims.md."""
    table = score_table([r for r in runs if counted(r)])
    claim = next(c for c in claims if c.label == "P")
    commands = [SWEEP.format(variants=" ".join(v + BF16_SUFFIX for v in BF16), dataset=HALFCHEETAH_MEDIUM_REPLAY,
                             steps=50000, every=5000),
                SWEEP.format(variants=" ".join(v + BF16_SUFFIX for v in BF16_REPORTED),
                             dataset=HALFCHEETAH_MEDIUM_REPLAY, steps=10000, every=2000)]
    lines = ["# bf16 against fp32: the scores", "", *[f"{line}  " for line in head], "",
             "The same script, data, seeds, budget and evaluation cadence, once with the default `--precision fp32` and "
             "once with `--precision bf16` (the update's hidden layers in bf16 under autocast; output layers, losses, "
             "log-probabilities and optimizer states fp32). A run's score is the mean of its last 3 evaluations "
             "([protocol.md](protocol.md)); cells are mean ± sample std over seeds; the difference bf16 - fp32 has its "
             f"95% Welch t interval. Claim P, registered in protocol.md before its runs: {claim.text} It is SUPPORTED "
             f"when the interval lies inside ±{MARGIN:g} with {SEEDS} seeds a side.", "",
             f"Claim P: **{claim.verdict}**. {claim.reading}", "",
             *markdown_table(["script", "dataset", "fp32", "bf16", "bf16 - fp32 [95% CI]", "verdict"],
                             precision_rows(table)),
             "", "The bf16 runs (sweep variants `<script>_bf16`; the fp32 cells are the evidence sweeps' runs of the "
             "same budget):", "", *[f"    {c}" for c in commands], "",
             "bf16 pays only on a CPU with native bf16 instructions (AVX512-BF16, AMX) or a GPU; without them (AVX2) the "
             "update runs about 16x slower, which puts a 50k-update td3_bc run at hours: "
             "[throughput.md](throughput.md)."]
    (out / "precision.md").write_text("\n".join(lines) + "\n")
