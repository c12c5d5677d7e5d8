"""Command line: a thin Typer layer over the pipeline. Heavy modules (torch, cv2) are imported inside commands."""

from __future__ import annotations

import functools
import inspect
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from facerestore_cli.errors import EXIT_USAGE, FacerestoreError, UsageError
from facerestore_cli.weights.store import offline as offline_from_environment

EXIT_CODES = """Exit codes: 0 all done (or already done) · 1 some files failed · 2 usage error · 3 no inputs matched ·
4 weights missing/corrupt or needed while offline · 5 requested device unavailable · 75 output folder locked by
another run · 130/143 interrupted (SIGINT/SIGTERM)."""

KNOB_PANEL = "Method knobs (default: the preset's; each lists the presets that take it)"


def _stderr():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _with_knobs(func: Callable[..., Any], knobs) -> Callable[..., Any]:
    """`func`'s options plus one per method knob; the knob values reach `func` as `knobs` (flag → value or None).
    A method owns its flags: they come from its Params, never from a line here."""
    signature = inspect.signature(func, eval_str=True)
    static = [p for p in signature.parameters.values() if p.name != "knobs"]
    extra = [inspect.Parameter(spec.dest, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[spec.type],
                               default=typer.Option(None, spec.flag, metavar=spec.metavar, show_default=False,
                                                    help=f"{spec.help} ({', '.join(users)})",
                                                    rich_help_panel=KNOB_PANEL))
             for spec, users in knobs]

    @functools.wraps(func)
    def command(**values):
        return func(**{k: v for k, v in values.items() if k not in {s.dest for s, _ in knobs}},
                    knobs={spec.flag: values[spec.dest] for spec, _ in knobs})

    command.__signature__ = signature.replace(parameters=static + extra)
    return command


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


def build_app(args: list[str] | None = None) -> typer.Typer:
    """The command line; `run` gets the knobs of every method it may run (args: the command line, to find the
    method of a --preset file; only read when the command is `run`, so other commands load no preset)."""
    from facerestore_cli.cli_weights import weights_app

    app = typer.Typer(
        name="facerestore",
        help="Restore faces in photos with diffusion-based blind face restoration (DifFace, DR2, ...).\n\n"
        "Example: facerestore run ./photos -o ./restored --method difface --steps 100",
        epilog=EXIT_CODES,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    knobs = []
    if args and "run" in args[:1]:
        from facerestore_cli.methods import knob_table

        knobs = knob_table(_known_presets(args))
    app.command(epilog=EXIT_CODES)(_with_knobs(run, knobs))
    app.command()(methods)
    app.command()(doctor)
    app.add_typer(weights_app, name="weights", help="List, fetch, verify and import model weights.")
    return app


def run(
    ctx: typer.Context,
    inputs: Optional[List[Path]] = typer.Argument(None, help="Image files and/or folders.", show_default=False),
    output: Path = typer.Option(..., "-o", "--output", help="Output folder; mirrors the input tree.", show_default=False),
    recursive: bool = typer.Option(False, "-r", "--recursive", help="Descend into sub-folders."),
    files_from: Optional[str] = typer.Option(None, "--files-from", metavar="FILE|-", help="Read input paths from FILE (one per line), '-' for stdin."),
    method: str = typer.Option("difface", "-m", "--method", help="Method preset name (see `facerestore methods`)."),
    preset_file: Optional[Path] = typer.Option(None, "--preset", metavar="FILE.yaml", help="Use a preset file instead of --method."),
    identity_score: bool = typer.Option(False, "--identity-score", help="Report each face's ArcFace identity cosine to the input and to the method's estimate (needs arcface-ir-se50)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Faces per forward (default: 1 on CPU, up to 8 on GPU by free memory)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N"),
    precision: str = typer.Option("auto", "--precision", help="auto | fp32 | fp16 | bf16 (auto: fp32 on CPU, bf16/fp16 on GPU)."),
    detector: str = typer.Option("retinaface_resnet50", "--detector", help="retinaface_resnet50 | retinaface_mobile0.25"),
    aligned: bool = typer.Option(False, "--aligned", help="Inputs are already aligned face crops (no detection, no paste-back)."),
    save_faces: bool = typer.Option(False, "--save-faces", help="Also write restored face crops under OUT/_faces/."),
    save_compare: bool = typer.Option(False, "--save-compare", help="Also write input|restored sheets under OUT/_compare/."),
    report: Optional[Path] = typer.Option(None, "--report", metavar="FILE.jsonl", help="Write one JSON line per photo and a summary."),
    min_face: int = typer.Option(20, "--min-face", min=1, help="Skip faces whose box is smaller than this many pixels."),
    offline: bool = typer.Option(False, "--offline", help="Never touch the network (also FACERESTORE_OFFLINE=1)."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress output (errors still go to stderr)."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="One line per photo on stderr."),
    force: bool = typer.Option(False, "--force", help="Redo every input, even those already done."),
    redo_failed: bool = typer.Option(False, "--redo-failed", help="Redo inputs that failed last time (others done stay skipped)."),
    wait_lock: Optional[float] = typer.Option(None, "--wait-lock", metavar="SECONDS", help="If another run holds OUT, wait this long instead of exiting 75."),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Stop at the first failed file."),
    max_failures: Optional[int] = typer.Option(None, "--max-failures", min=1, help="Stop after N failed files."),
    max_pixels: Optional[int] = typer.Option(None, "--max-pixels", min=1, help="Refuse images above N pixels (decompression-bomb guard; default 178,956,970)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List input, output and why it would run or be skipped (stdout); load no model."),
    print_outputs: bool = typer.Option(False, "--print-outputs", help="Write each finished output path to stdout (and nothing else)."),
    json_out: bool = typer.Option(False, "--json", help="Write the per-file records as JSON lines to stdout."),
    null: bool = typer.Option(False, "-0", "--null", help="NUL-separated paths for --files-from and --print-outputs."),
    fmt: Optional[str] = typer.Option(None, "--format", metavar="png|jpg|webp|tiff", help="Write this format instead of the input's."),
    quality: Optional[int] = typer.Option(None, "--quality", min=1, max=100, help="JPEG/WebP quality (default 95)."),
    metadata: str = typer.Option("keep", "--metadata", metavar="keep|strip", help="Keep or strip EXIF/ICC/XMP/IPTC."),
    provenance: bool = typer.Option(False, "--provenance", help="Note tool, version, method and parameters in the output's metadata (EXIF Software)."),
    knobs: Optional[dict] = None,
) -> int:
    """Restore every face in the given photos and write the results to OUT.

    Example: facerestore run ./photos -o ./restored --method difface --steps 100
    """
    from facerestore_cli.discover import discover, read_list
    from facerestore_cli.methods import method_for
    from facerestore_cli.models import DETECTOR_WEIGHTS
    from facerestore_cli.pipeline import RunOptions
    from facerestore_cli.pipeline import run as run_pipeline
    from facerestore_cli.progress import Progress
    from facerestore_cli.report import StdoutSink

    if quiet and verbose:
        raise UsageError("-q and -v contradict each other")
    if print_outputs and json_out:
        raise UsageError("--print-outputs and --json both want stdout", hint="choose one")
    if detector not in DETECTOR_WEIGHTS:
        raise UsageError(f"unknown detector '{detector}'", hint=f"choose one of: {', '.join(DETECTOR_WEIGHTS)}")
    if aligned and (detector != "retinaface_resnet50" or min_face != 20):
        raise UsageError("--detector/--min-face do not apply with --aligned (no detection is done)")
    if metadata not in ("keep", "strip"):
        raise UsageError(f"--metadata must be keep or strip, not '{metadata}'")
    fmt = _check_format(fmt)
    preset = _load_preset(ctx, method, preset_file)
    chosen = method_for(preset)
    params = chosen.Params.resolve(preset, knobs)
    paths = list(inputs or [])
    if files_from is not None:
        paths += [Path(p) for p in read_list(files_from, null_separated=null)]
    if not paths:
        raise UsageError("no inputs given", hint="pass image files or folders, or --files-from FILE")
    found = discover(paths, output, recursive=recursive, fmt=fmt)
    opts = RunOptions(
        inputs=paths, output=output, preset=preset, method=chosen, params=params, recursive=recursive,
        batch_size=batch_size,
        device=device, precision=precision, detector=detector, aligned=aligned, save_faces=save_faces,
        save_compare=save_compare, report=report, min_face=min_face,
        offline=offline or offline_from_environment(),
        force=force, redo_failed=redo_failed, wait_lock=wait_lock, fail_fast=fail_fast, max_failures=max_failures,
        dry_run=dry_run, fmt=fmt, quality=quality, metadata=metadata, provenance=provenance, max_pixels=max_pixels,
        identity_score=identity_score,
    )
    console = _stderr()
    progress = Progress(console, "plain" if verbose else Progress.choose_mode(quiet), interval=0.0 if verbose else 10.0)
    sink = StdoutSink("json" if json_out else "paths" if print_outputs else "none", null=null)
    summary = run_pipeline(opts, progress, found.jobs, found.skipped_hidden, found.skipped_not_image, sink)
    if not quiet and not dry_run:
        skipped = found.skipped_hidden + found.skipped_not_image
        console.print(f"done: {summary.restored} restored, {summary.no_face} without faces (copied), "
                      f"{summary.failed} failed, {summary.faces} faces in {summary.seconds:.1f}s"
                      + (f"; {summary.skipped} already done, skipped" if summary.skipped else "")
                      + (f"; {skipped} non-image/hidden files skipped" if skipped else ""), soft_wrap=True,
                      markup=False)
    return 1 if summary.failed else 0


def _load_preset(ctx: typer.Context, method: str, preset_file: Optional[Path]):
    from facerestore_cli import presets

    if preset_file is not None and ctx.get_parameter_source("method").name == "COMMANDLINE":
        raise UsageError("--method and --preset both name a preset", hint="give one of them")
    return presets.load_file(preset_file) if preset_file else presets.load_builtin(method)


def _check_format(fmt: Optional[str]) -> Optional[str]:
    if fmt is None:
        return None
    fmt = fmt.lower()
    if fmt not in ("png", "jpg", "jpeg", "webp", "tiff", "tif"):
        raise UsageError(f"unsupported --format '{fmt}'", hint="choose png, jpg, webp or tiff")
    return {"jpeg": "jpg", "tif": "tiff"}.get(fmt, fmt)


def methods() -> int:
    """List method presets, their components and weights, and whether the weights are present locally."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from facerestore_cli import presets
    from facerestore_cli.weights.store import WeightStore

    store = WeightStore()
    table = Table(title="facerestore methods")
    for col in ("method", "title", "components (weights)", "defaults"):
        table.add_column(col)
    for name in presets.builtin_names():
        p = presets.load_builtin(name)
        provenance = p.raw.get("provenance", {})
        parts = [f"{role}: {c['weights']} [{'present' if store.is_present(c['weights']) else 'missing'}"
                 f"{', optional' if c.get('optional') else ''}]"
                 + (f" — {provenance[role]}" if role in provenance else "") for role, c in p.components.items()]
        defaults = ", ".join(f"{k}={v}" for k, v in p.parameters.items())
        table.add_row(p.name, p.title, escape("\n".join(parts)), defaults)  # "[present]" is text, not a style tag
    Console().print(table)
    return 0


def doctor() -> int:
    """Check python, torch, CUDA, the weights cache and which weights are present."""
    from facerestore_cli.doctor import report

    return report(_stderr())


def main(argv: Optional[list[str]] = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        rv = build_app(args)(args=args, prog_name="facerestore", standalone_mode=False)
    except FacerestoreError as exc:
        if debug:
            raise
        from rich.markup import escape

        console = _stderr()
        console.print(f"[red]error:[/red] {escape(exc.message)}", markup=True, highlight=False, soft_wrap=True)
        if exc.hint:
            console.print(f"hint: {exc.hint}", markup=False, soft_wrap=True)
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
