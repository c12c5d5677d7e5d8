"""`facerestore review OUT`: the static review page of a run's results (review.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def review(
    output: Path = typer.Argument(..., metavar="OUT", help="The output folder of a run (its -o)."),
    report: Optional[Path] = typer.Option(None, "--report", metavar="FILE.jsonl",
                                          help="Show this report's records instead of OUT's run state."),
    page: Optional[Path] = typer.Option(None, "-o", "--output", metavar="FILE.html",
                                        help="Write the page here (default OUT/review.html); its thumbnails go "
                                             "into the folder beside it named after it (review_files/)."),
) -> int:
    """Write one static page to look at a run's results: each photo before/after, each face's crops with its
    identity score and gate verdict, failed and gated photos first. Open it in any browser; no server.

    Example: facerestore review ./restored && xdg-open ./restored/review.html
    """
    from facerestore_cli.review import build, report_line

    result = build(output, report=report, page=page, warn=_warn)
    _warn(report_line(result))
    return 0


def _warn(text: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False).print(text, markup=False, soft_wrap=True)
