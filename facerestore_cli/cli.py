"""Command line: a thin Typer layer over the pipeline. Heavy modules (torch, cv2) are imported inside commands."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Optional

import typer

from facerestore_cli import __version__
from facerestore_cli.errors import EXIT_USAGE, FacerestoreError, UsageError

EXIT_CODES = ("Exit codes: 0 all done (or already done) · 1 some files failed · 2 usage error · 3 no inputs matched · "
              "4 weights missing/corrupt or needed while offline · 5 requested device unavailable · 75 output folder "
              "locked by another run · 130/143 interrupted (SIGINT/SIGTERM) · 141 stdout closed by its reader "
              "(finished photos kept, as SIGPIPE ends other tools).")
EXIT_STDOUT_CLOSED = 141


def _stderr():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _known_presets(args: list[str]) -> list:
    """The presets whose methods' knobs `run` offers: the built-in ones and the one named by --preset."""
    from facerestore_cli import presets

    known = [presets.load_builtin(name) for name in presets.builtin_names()]
    for i, arg in enumerate(args):
        if arg == "--preset" and i + 1 < len(args):
            known.append(presets.load_file(Path(args[i + 1])))
        elif arg.startswith("--preset="):
            known.append(presets.load_file(Path(arg.split("=", 1)[1])))
    return known


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"facerestore {__version__}")
        raise typer.Exit()


def _global_options(
    version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True, metavar="",
                                 help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", metavar="", help="Show the traceback of an error (allowed anywhere "
                                                                  "on the command line)."),
) -> None:
    """Restore faces in photos with diffusion-based blind face restoration (DifFace, DR2, ...).

    Example: facerestore run ./photos -o ./restored --method difface --steps 100
    """


def build_app(args: list[str] | None = None) -> typer.Typer:
    """The command line; `run` and `bench` get the knobs of every method they may run (args: the command line, to
    find the method of a --preset file; only read for those commands, so other commands load no preset)."""
    from facerestore_cli.cli_bench import bench_command
    from facerestore_cli.cli_eval import eval_app
    from facerestore_cli.cli_run import run_settings
    from facerestore_cli.cli_signature import command
    from facerestore_cli.cli_train import degrade, train_app
    from facerestore_cli.cli_report import report_app
    from facerestore_cli.cli_review import review
    from facerestore_cli.cli_weights import weights_app

    app = typer.Typer(name="facerestore", epilog=EXIT_CODES, no_args_is_help=True, pretty_exceptions_enable=False,
                      add_completion=False, context_settings={"help_option_names": ["-h", "--help"]})
    app.callback()(_global_options)
    knobs = []
    if args and args[0] in ("run", "bench"):
        from facerestore_cli.methods import knob_table

        knobs = knob_table(_known_presets(args))
    app.command(epilog=EXIT_CODES)(command(run, run_settings(), knobs))
    app.command(name="bench")(bench_command(knobs))
    app.command()(methods)
    app.command()(doctor)
    app.add_typer(weights_app, name="weights", help="List, show, fetch, verify and import model weights.")
    app.command()(review)
    app.add_typer(report_app, name="report", help="Fold the shards of a split run into one state and report.")
    app.command()(degrade)
    evaluation, epilog = eval_app(args or [])
    if epilog is None:
        app.add_typer(evaluation, name="eval", help="Measure restorations (see `facerestore eval --help`).")
    else:
        app.command(name="eval", epilog=epilog)(evaluation)
    app.add_typer(train_app, name="train", help="Train the networks no one publishes weights for; export them.")
    return app


def run(ctx: typer.Context, values: dict) -> int:
    """Restore every face in the given photos and write the results to OUT.

    Example: facerestore run ./photos -o ./restored --method difface --steps 100
    """
    from facerestore_cli.cli_run import prepare_run
    from facerestore_cli.files import check_output_file
    from facerestore_cli.runner import run as run_pipeline
    from facerestore_cli.progress import Progress
    from facerestore_cli.report import StdoutClosed, StdoutSink

    quiet, verbose = values["quiet"], values["verbose"]
    if quiet and verbose:
        raise UsageError("-q and -v contradict each other")
    if values["print_outputs"] and values["json"]:
        raise UsageError("--print-outputs and --json both want stdout", hint="choose one")
    if values["report"] is not None:
        check_output_file(values["report"], "--report", "run.jsonl")
    opts, found = prepare_run(ctx, values)
    if values["review"] and opts.shard is not None:
        raise UsageError("--review shows all of OUT, which the other shards are still writing",
                         hint="when every shard has finished, run `facerestore review OUT`")
    if values["review"] and opts.dry_run:
        raise UsageError("--dry-run writes nothing, and --review writes a page", hint="drop one of them")
    console = _stderr()
    progress = Progress(console, "quiet" if quiet else "plain" if verbose else Progress.choose_mode(False),
                        verbose=verbose)
    sink = StdoutSink("json" if values["json"] else "paths" if values["print_outputs"] else "none",
                      null=values["null"])
    try:
        summary = run_pipeline(opts, progress, found.jobs, found.skipped_hidden, found.skipped_not_image, sink)
    except StdoutClosed:  # a dry run's plan lines
        return EXIT_STDOUT_CLOSED
    if sink.closed:
        return EXIT_STDOUT_CLOSED
    if not quiet and not opts.dry_run:
        skipped = found.skipped_hidden + found.skipped_not_image
        console.print(f"done: {summary.counts()}"
                      + (f"; {skipped} non-image/hidden files skipped ({found.skipped_note()})" if skipped else ""),
                      soft_wrap=True, markup=False)
    if values["review"]:
        from facerestore_cli.review import build, report_line

        page = build(opts.output, warn=lambda text: console.print(text, markup=False, soft_wrap=True))
        if not quiet:
            console.print(report_line(page), markup=False, soft_wrap=True)
    return 1 if summary.failed else 0


def methods(json_out: bool = typer.Option(False, "--json", metavar="",
                                          help="JSON Lines: one object per preset.")) -> int:
    """Each preset: whether it can run now, its components, weights and defaults."""
    from facerestore_cli.readiness import builtin_verdicts
    from facerestore_cli.weights.store import WeightStore

    verdicts = builtin_verdicts(WeightStore())
    if json_out:
        for v in verdicts:
            typer.echo(json.dumps(v.as_record(), ensure_ascii=False))
        return 0
    def say(text: str, indent: str = "  ", then: str = "    ") -> None:  # at most 80 columns
        typer.echo(textwrap.fill(text, 80, initial_indent=indent, subsequent_indent=then, break_on_hyphens=False))

    for v in verdicts:
        say(f"{v.preset}: {v.title}", "", "  ")
        say(v.summary)
        if v.runs_as:
            say(f"runs as {v.runs_as}")
        role_width = max(len(c["role"]) for c in v.components)
        for c in v.components:
            status = c["status"] + (", optional" if c["optional"] else "")
            say(f"{c['role']:<{role_width}} {c['weights']}: {status}")
            if c["provenance"]:
                say(c["provenance"], " " * (role_width + 3), " " * (role_width + 3))
        say("defaults: " + " ".join(f"{k}={val}" for k, val in v.defaults.items()))
        typer.echo("")
    return 0


def doctor(json_out: bool = typer.Option(False, "--json", metavar="",
                                         help="JSON Lines: one object, the findings.")) -> int:
    """Check python, torch, CUDA, the weights cache and which presets can run; exits 1 when none can (stdout)."""
    from rich.console import Console

    from facerestore_cli.doctor import report

    return report(Console(highlight=False), json_out)


def main(argv: Optional[list[str]] = None) -> None:
    from facerestore_cli.cli_help import plain_help

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        command = typer.main.get_command(build_app(args))
        plain_help(command)
        rv = command.main(args=args, prog_name="facerestore", standalone_mode=False)
    except FacerestoreError as exc:
        if debug:
            raise
        from rich.markup import escape

        console = _stderr()
        console.print(f"[red]error:[/red] {escape(exc.message)}", markup=True, highlight=False, soft_wrap=True)
        if exc.hint:
            console.print(f"hint: {exc.hint}", markup=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # typer's vendored click: bad options, missing arguments
        exc.show() if hasattr(exc, "show") else _stderr().print(f"error: {exc.format_message()}", markup=False)
        sys.exit(getattr(exc, "exit_code", EXIT_USAGE) or EXIT_USAGE)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except Exception as exc:  # an unexpected bug: one line, traceback with --debug
        if debug:
            raise
        from rich.markup import escape

        _stderr().print(f"[red]error:[/red] internal error: {escape(f'{type(exc).__name__}: {exc}')}", markup=True,
                        soft_wrap=True)
        _stderr().print("hint: rerun with --debug for the traceback and report it", markup=False)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)
