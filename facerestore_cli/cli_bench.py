"""`facerestore bench`: `run`'s options (the ones that shape the work), timed; see benchmark.py."""

from __future__ import annotations

import inspect
import json
import tempfile
from pathlib import Path

import typer

from facerestore_cli.errors import UsageError
from facerestore_cli.files import check_output_file
from facerestore_cli.settings import BENCH

OWN = (
    inspect.Parameter("reference", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
        False, "--reference", metavar="", rich_help_panel=BENCH,
        help="Also time the official scripts' way (one photo at a time, its faces as one batch, fp32, full-size "
             "detection, no overlap, no compile) on the same photos, and print the ratio.")),
    inspect.Parameter("startup", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
        True, "--startup/--no-startup", rich_help_panel=BENCH,
        help="Measure start-up (a fresh `facerestore run` process to its first face).")),
    inspect.Parameter("bench_json", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
        False, "--json", metavar="", rich_help_panel=BENCH, help="JSON Lines: one object, the result.")),
    inspect.Parameter("save", inspect.Parameter.KEYWORD_ONLY, annotation=Path | None, default=typer.Option(
        None, "--save", metavar="FILE.json", rich_help_panel=BENCH, help="Also write the JSON result to FILE.")),
)


def bench_command(knobs):
    """The bench command: run's settings but those only a run's results or talk need (`run_only`), the knobs, and
    the benchmark's own options."""
    from facerestore_cli.cli_run import run_settings
    from facerestore_cli.cli_signature import command

    settings = run_settings()
    dropped = {s.dest: s.default for s in settings if s.run_only}

    def bench(ctx: typer.Context, values: dict, reference: bool, startup: bool, bench_json: bool,
              save: Path | None) -> int:
        """Time the pipeline on photos (default: a built-in set of portraits, groups and 12-MP scans): faces/s,
        photos/s, seconds per stage, how busy the network was, peak memory, start-up.

        Example: facerestore bench --method difface --steps 20 --reference
        """
        from facerestore_cli.benchmark import describe, measure
        from facerestore_cli.benchset import write_builtin_set
        from facerestore_cli.cli_run import prepare_run

        if save is not None:
            check_output_file(save, "--save", "bench.json")
        if values["engine"] != "local":
            raise UsageError("bench times each stage of its own process's pipeline; with --engine ray the stages run "
                             "in Ray's workers, where it cannot time them",
                             hint="time a Ray run as a whole: time facerestore run PHOTOS -o OUT --engine ray")
        if "," in values["device"] or values["device"] == "all":
            raise UsageError(f"bench times one device's pipeline; --device {values['device']} starts a worker process "
                             "per device, which it cannot time stage by stage",
                             hint="bench each device alone (--device cuda:0), or time the run as a whole")
        with tempfile.TemporaryDirectory(prefix="facerestore-bench-") as tmp:
            scratch = Path(tmp)
            inputs, label = values["inputs"], "the given photos"
            if not inputs and values["files_from"] is None:
                inputs, label = [scratch / "inputs"], "the built-in set"
                write_builtin_set(inputs[0])
            opts, found = prepare_run(ctx, {**dropped, **values, "inputs": inputs, "output": scratch / "out"})
            result = measure(opts, found.jobs, scratch, reference, startup, label)
        if save is not None:
            save.parent.mkdir(parents=True, exist_ok=True)
            save.write_text(json.dumps(result, indent=2) + "\n")
        typer.echo(json.dumps(result) if bench_json else describe(result))
        return 1 if any(p["failed"] for p in result["passes"].values()) else 0

    return command(bench, tuple(s for s in settings if not s.run_only), knobs, OWN)
