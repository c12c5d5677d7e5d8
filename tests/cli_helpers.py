"""Run the real CLI in-process (the console script's `main`) and capture its exit code and streams."""

from __future__ import annotations

import json
from pathlib import Path


def run_cli(capsys, *args) -> tuple[int, str, str]:
    from facerestore_cli.cli import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def read_report(path: Path) -> tuple[list[dict], dict]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    records = [r for r in lines if "summary" not in r]
    summaries = [r["summary"] for r in lines if "summary" in r]
    assert len(summaries) == 1, lines[-1]
    return records, summaries[0]
