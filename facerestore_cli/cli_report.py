"""`facerestore report merge OUT`: one state and one report from the shards of a split run."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

report_app = typer.Typer(no_args_is_help=True, add_completion=False)


@report_app.command("merge")
def merge_command(
    output: Path = typer.Argument(..., metavar="OUT", help="The output folder the shards wrote into."),
    report: Path = typer.Option(..., "--report", metavar="FILE.jsonl", help="Write the merged report here."),
    wait_lock: Optional[float] = typer.Option(None, "--wait-lock", metavar="SECONDS",
                                              help="If a run still holds OUT, wait this long instead of exiting 75."),
) -> int:
    """Fold every shard's state into OUT's one state file and write one report: each input's latest record, then the
    summary. Run it when all shards have finished: a shard still running holds OUT, and merge exits 75 (or waits
    --wait-lock seconds for it)."""
    from rich.console import Console

    from facerestore_cli.files import check_output_file
    from facerestore_cli.shards import merge
    from facerestore_cli.wording import counted

    check_output_file(report, "--report", "merged.jsonl")
    summary = merge(output, report, wait_seconds=wait_lock)
    Console(stderr=True, highlight=False).print(
        f"merged: {counted(summary.photos, 'photo')}: {summary.restored} restored, {summary.no_face} without faces "
        f"(copied), {summary.failed} failed, {counted(summary.faces, 'face')}", markup=False)
    return 1 if summary.failed else 0
