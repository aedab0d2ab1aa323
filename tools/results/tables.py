"""Markdown tables, and the grid of a suite's table (variants x datasets: for MuJoCo the planned grid, run or not)."""

from __future__ import annotations

from typing import Optional

from .runs import CORE, HEADLINE, PLANNED, dataset_key, suite, variant_key
from .stats import Stat


def cell_text(stat: Optional[Stat]) -> str:
    return stat.both_text() if stat is not None else "not run"


def markdown_table(head: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table; a "|" inside a cell (|G|) is escaped."""
    line = lambda cells: "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"  # noqa: E731
    return [line(head), "|" + "---|" * len(head), *[line(r) for r in rows]]


def grid(table, which_suite: str) -> tuple[list[str], list[str]]:
    """Rows (variants) and columns (datasets) of a suite's table: for MuJoCo the planned grid (the core
    datasets and PLANNED variants, run or not) plus whatever else ran; for the others what ran."""
    ran = [(v, d) for v, d in table if suite(d) == which_suite]
    planned = which_suite == HEADLINE
    variants = sorted({v for v, _ in ran} | (set(PLANNED) if planned else set()), key=variant_key)
    datasets = sorted({d for _, d in ran} | (set(CORE) if planned else set()), key=dataset_key)
    return variants, datasets


def suite_table(table, which_suite: str, which: str = "score", datasets: Optional[list[str]] = None) -> list[str]:
    variants, all_datasets = grid(table, which_suite)
    datasets = all_datasets if datasets is None else datasets
    variants = [v for v in variants if v in PLANNED or any((v, d) in table for d in datasets)]
    rows = [[v, *[cell_text(table[v, d][which]) if (v, d) in table else "not run" for d in datasets]]
            for v in variants]
    return markdown_table(["variant", *datasets], rows)
