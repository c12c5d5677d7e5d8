"""`facerestore bench`: `run`'s options (the ones that shape the work), timed; see benchmark.py."""

from __future__ import annotations

import inspect
import json
import tempfile
from pathlib import Path

import typer

from facerestore_cli.errors import UsageError

# run options that only concern where results go and how a run talks or stops: bench writes into a temporary folder
RUN_ONLY = ("output", "report", "force", "redo_failed", "wait_lock", "fail_fast", "max_failures", "dry_run", "quiet",
            "verbose", "print_outputs", "json_out", "null")
BENCH = "Benchmark"


def bench_command(run):
    """The bench command: run's signature without RUN_ONLY, plus the benchmark's own options."""
    signature = inspect.signature(run, eval_str=True)
    dropped = {name: signature.parameters[name].default.default for name in RUN_ONLY}
    kept = [p for p in signature.parameters.values() if p.name not in RUN_ONLY and p.name != "knobs"]
    own = [
        inspect.Parameter("reference", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
            False, "--reference", metavar="", rich_help_panel=BENCH,
            help="Also time the official scripts' way (one photo at a time, its faces as one batch, fp32, full-size "
                 "detection, no overlap, no compile) on the same photos, and print the ratio.")),
        inspect.Parameter("startup", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
            True, "--startup/--no-startup", rich_help_panel=BENCH,
            help="Measure start-up (a fresh `facerestore run` process to its first face).")),
        inspect.Parameter("bench_json", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
            False, "--json", metavar="", rich_help_panel=BENCH, help="The result as one JSON object on stdout.")),
        inspect.Parameter("save", inspect.Parameter.KEYWORD_ONLY, annotation=Path | None, default=typer.Option(
            None, "--save", metavar="FILE.json", rich_help_panel=BENCH, help="Also write the JSON result to FILE.")),
        inspect.Parameter("knobs", inspect.Parameter.KEYWORD_ONLY, annotation=dict | None, default=None),
    ]

    def bench(ctx: typer.Context, reference: bool, startup: bool, bench_json: bool, save: Path | None, knobs=None,
              **values) -> int:
        """Time the pipeline on photos (default: a built-in set of portraits, groups and 12-MP scans): faces/s,
        photos/s, seconds per stage, how busy the network was, peak memory, start-up.

        Example: facerestore bench --method difface --steps 20 --reference
        """
        from facerestore_cli.benchmark import describe, measure
        from facerestore_cli.benchset import write_builtin_set
        from facerestore_cli.cli_run import prepare_run

        if save is not None and save.is_dir():
            raise UsageError(f"--save {save} is a folder", hint="name the JSON file, e.g. --save bench.json")
        with tempfile.TemporaryDirectory(prefix="facerestore-bench-") as tmp:
            scratch = Path(tmp)
            inputs, label = values["inputs"], "the given photos"
            if not inputs and values["files_from"] is None:
                inputs, label = [scratch / "inputs"], "the built-in set"
                write_builtin_set(inputs[0])
            opts, found = prepare_run(ctx, {**dropped, **values, "inputs": inputs, "output": scratch / "out",
                                            "knobs": knobs})
            result = measure(opts, found.jobs, scratch, reference, startup, label)
        if save is not None:
            save.parent.mkdir(parents=True, exist_ok=True)
            save.write_text(json.dumps(result, indent=2) + "\n")
        typer.echo(json.dumps(result) if bench_json else describe(result))
        return 1 if any(p["failed"] for p in result["passes"].values()) else 0

    bench.__signature__ = inspect.Signature([signature.parameters["ctx"], *[p for p in kept if p.name != "ctx"], *own])
    return bench
