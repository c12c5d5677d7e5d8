"""The result as the papers print it: one row per restored set, one column per measure with its direction (↑
higher is better, ↓ lower), in at most 80 columns."""

from __future__ import annotations

import math
import textwrap

from facerestore_cli.evaluation.metrics import METRICS

WIDTH, CELL = 80, 8
FID_FEATURES = 2048


def describe(rows: list, names: list[str]) -> str:
    """rows: RowResult-like records ({"name", "pairs", "left_out", "metrics"})."""
    name_width = max(8, min(28, WIDTH - CELL * len(names) - 6))
    head = f"{'set':<{name_width}} {'n':>5}" + "".join(f"{METRICS[n].label + METRICS[n].arrow:>{CELL}}" for n in names)
    lines = [head, "-" * len(head)]
    for row in rows:
        label = row["name"] if len(row["name"]) <= name_width else "…" + row["name"][-(name_width - 1):]
        cells = "".join(f"{_number(row['metrics'][n]):>{CELL}}" for n in names)
        lines.append(f"{label:<{name_width}} {row['pairs']:>5}{cells}")
    small = [row["counts"]["fid"] for row in rows if row["counts"].get("fid")]
    if small and min(small) < FID_FEATURES:
        lines += textwrap.wrap(f"FID over {min(small)} images (< {FID_FEATURES}, its feature size): the covariance is "
                               "singular and FID depends on the set size; compare FID only between sets of one size.",
                               WIDTH)
    for row in rows:
        for note in row.get("notes", []):
            lines += textwrap.wrap(f"{row['name']}: {note}", WIDTH)
    left = [row for row in rows if row["left_out"]]
    for row in left:
        lines.append(f"{row['name']}: {row['left_out']} left out (see --json or the messages above)")
    return "\n".join(lines)


def markdown_table(rows: list, names: list[str]) -> str:
    """The same table in Markdown (for results files), every value with four significant decimals."""
    head = "| set | n | " + " | ".join(METRICS[n].label + METRICS[n].arrow for n in names) + " |"
    lines = [head, "|" + " --- |" * (len(names) + 2)]
    for row in rows:
        lines.append(f"| {row['name']} | {row['pairs']} | " + " | ".join(_number(row["metrics"][n]) for n in names)
                     + " |")
    for row in rows:
        lines += [f"\n{row['name']}: {note}" for note in row.get("notes", [])]
    return "\n".join(lines)


def _number(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, str) or math.isinf(value):
        return "inf"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"
