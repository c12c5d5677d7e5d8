"""Command line: a thin Typer layer over the pipeline. Heavy modules (torch, cv2) are imported inside commands."""

from __future__ import annotations

import functools
import inspect
import json
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from facerestore_cli import __version__
from facerestore_cli.errors import EXIT_USAGE, FacerestoreError, UsageError
from facerestore_cli.faces import DEFAULT_DETECTOR

EXIT_CODES = ("Exit codes: 0 all done (or already done) · 1 some files failed · 2 usage error · 3 no inputs matched · "
              "4 weights missing/corrupt or needed while offline · 5 requested device unavailable · 75 output folder "
              "locked by another run · 130/143 interrupted (SIGINT/SIGTERM).")
IO, METHOD, KNOBS, DEVICE = "Input and output", "Method", "Method knobs (default: the preset's)", "Device"
FACES, PASTE = "Faces (default: the preset's)", "Paste-back and output size"
ARCHIVAL, EXTRAS, STDOUT = "Archival runs", "Output format and extras", "Progress and stdout"


def _stderr():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _with_knobs(func: Callable[..., Any], knobs) -> Callable[..., Any]:
    """`func`'s options plus one per method knob (shown after the Method panel); the knob values reach `func` as
    `knobs` (flag → value or None). A method owns its flags: they come from its Params, never from a line here. A
    bool knob is an on-flag."""
    signature = inspect.signature(func, eval_str=True)
    static = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in signature.parameters.values() if p.name != "knobs"]
    after = next(i for i, p in enumerate(static) if p.name == "identity_score") + 1
    extra = [inspect.Parameter(spec.dest, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[spec.type],
                               default=typer.Option(None, spec.flag, metavar="" if spec.type is bool else spec.metavar,
                                                    show_default=False, rich_help_panel=KNOBS,
                                                    help=f"{spec.help} ({', '.join(users)})"))
             for spec, users in knobs]

    @functools.wraps(func)
    def command(**values):
        return func(**{k: v for k, v in values.items() if k not in {s.dest for s, _ in knobs}},
                    knobs={spec.flag: values[spec.dest] for spec, _ in knobs})

    command.__signature__ = signature.replace(parameters=static[:after] + extra + static[after:])
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
    from facerestore_cli.cli_train import degrade, train_app
    from facerestore_cli.cli_report import report_app
    from facerestore_cli.cli_weights import weights_app

    app = typer.Typer(name="facerestore", epilog=EXIT_CODES, no_args_is_help=True, pretty_exceptions_enable=False,
                      add_completion=False, context_settings={"help_option_names": ["-h", "--help"]})
    app.callback()(_global_options)
    knobs = []
    if args and args[0] in ("run", "bench"):
        from facerestore_cli.methods import knob_table

        knobs = knob_table(_known_presets(args))
    app.command(epilog=EXIT_CODES)(_with_knobs(run, knobs))
    app.command(name="bench")(_with_knobs(bench_command(run), knobs))
    app.command()(methods)
    app.command()(doctor)
    app.add_typer(weights_app, name="weights", help="List, show, fetch, verify and import model weights.")
    app.add_typer(report_app, name="report", help="Fold the shards of a split run into one state and report.")
    app.command()(degrade)
    app.add_typer(train_app, name="train", help="Train the networks no one publishes weights for; export them.")
    return app


def run(
    ctx: typer.Context,
    inputs: Optional[List[Path]] = typer.Argument(None, help="Image files and/or folders.", show_default=False,
                                                  metavar="PHOTO|FOLDER..."),
    output: Path = typer.Option(..., "-o", "--output", help="Output folder; mirrors the input tree.", show_default=False,
                                metavar="DIR", rich_help_panel=IO),
    recursive: bool = typer.Option(False, "-r", "--recursive", metavar="", help="Descend into sub-folders.", rich_help_panel=IO),
    files_from: Optional[str] = typer.Option(None, "--files-from", metavar="FILE|-", rich_help_panel=IO,
                                             help="Read input paths from FILE (one per line), '-' for stdin."),
    base: Optional[Path] = typer.Option(None, "--base", metavar="DIR", rich_help_panel=IO,
                                        help="Outputs of named files mirror their paths relative to DIR (default: "
                                             "their common folder)."),
    method: str = typer.Option("difface", "-m", "--method", help="Method preset (see `facerestore methods`).",
                               metavar="NAME", rich_help_panel=METHOD),
    preset_file: Optional[Path] = typer.Option(None, "--preset", metavar="FILE.yaml", rich_help_panel=METHOD,
                                               help="A preset file instead of --method."),
    identity_score: bool = typer.Option(False, "--identity-score", metavar="", rich_help_panel=METHOD,
                                        help="Report each face's ArcFace identity cosine to the input and to the "
                                             "method's estimate (needs arcface-ir-se50)."),
    detector: str = typer.Option(DEFAULT_DETECTOR, "--detector", metavar="NAME", rich_help_panel=FACES,
                                 help="retinaface_resnet50 or retinaface_mobile0.25 (or their weight ids)."),
    aligned: bool = typer.Option(False, "--aligned", metavar="", rich_help_panel=FACES,
                                 help="Inputs are already aligned face crops (no detection, no paste-back)."),
    det_threshold: Optional[float] = typer.Option(None, "--det-threshold", metavar="P", rich_help_panel=FACES,
                                                  help="Detector score a face needs (diffusion presets 0.8, as "
                                                       "DifFace; facexlib 0.97)."),
    det_min_side: Optional[int] = typer.Option(None, "--det-min-side", min=0, metavar="PX", rich_help_panel=FACES,
                                               help="Detect on a copy scaled up so its short side is at least PX "
                                                    "(diffusion presets 640; 0: never scale up)."),
    min_face: Optional[int] = typer.Option(None, "--min-face", min=0, metavar="PX", rich_help_panel=FACES,
                                           help="Leave out faces whose box is smaller than PX (diffusion presets 0: "
                                                "faces whose eyes are under 5 px apart at a 512-px short side are "
                                                "left out instead)."),
    min_score: Optional[float] = typer.Option(None, "--min-score", min=0, max=1, metavar="P", rich_help_panel=FACES,
                                              help="Leave out faces the detector scored below P."),
    faces: Optional[str] = typer.Option(None, "--faces", metavar="0,2", rich_help_panel=FACES,
                                        help="Restore only these faces, numbered as the report and --draw-boxes "
                                             "number them (left to right)."),
    only_center_face: bool = typer.Option(False, "--only-center-face", metavar="", rich_help_panel=FACES,
                                          help="Restore only the face nearest the photo's center."),
    largest_face: bool = typer.Option(False, "--largest-face", metavar="", rich_help_panel=FACES,
                                      help="Restore only the largest face."),
    detect_max_side: int = typer.Option(2048, "--detect-max-side", min=0, metavar="PX", rich_help_panel=FACES,
                                        help="Detect faces on a copy of larger photos shrunk to this long side "
                                             "(landmarks mapped back); 0: at full resolution."),
    upscale: Optional[int] = typer.Option(None, "--upscale", metavar="1|2|4", rich_help_panel=PASTE,
                                          help="Write photos N times larger: the background enlarged by "
                                               "--bg-upsampler, the faces pasted at N× (default 1)."),
    bg_upsampler: Optional[str] = typer.Option(None, "--bg-upsampler", metavar="NAME", rich_help_panel=PASTE,
                                               help="realesrgan (Real-ESRGAN x2plus/x4plus, as DifFace's sampler), "
                                                    "bicubic, or none (bilinear, as facexlib without one)."),
    bg_tile: Optional[int] = typer.Option(None, "--bg-tile", min=0, metavar="PX", rich_help_panel=PASTE,
                                          help="Real-ESRGAN tile size (default 400, 10 px overlap; 0: whole photo)."),
    blend: Optional[float] = typer.Option(None, "--blend", metavar="W", rich_help_panel=PASTE,
                                          help="Mix each restored face with its input before paste-back: 1 restored "
                                               "only (default), 0 the input."),
    draw_boxes: bool = typer.Option(False, "--draw-boxes", metavar="", rich_help_panel=PASTE,
                                    help="Also write a copy of each output with numbered face boxes under "
                                         "OUT/_boxes/ (green restored, red left out)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, metavar="N", rich_help_panel=DEVICE,
                                             help="Faces per forward (default: 1 on CPU; on a GPU what fits, from the "
                                                  "memory one face was measured to take)."),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", rich_help_panel=DEVICE,
                               help="auto, cpu, cuda or cuda:N; a list (cuda:0,cuda:1) or all: one worker process "
                                    "per device, sharing the photos."),
    precision: str = typer.Option("auto", "--precision", metavar="NAME", rich_help_panel=DEVICE,
                                  help="auto, fp32, fp16 or bf16 (auto: fp32 on CPU, bf16 or fp16 on GPU)."),
    compile_networks: bool = typer.Option(False, "--compile", metavar="", rich_help_panel=DEVICE,
                                          help="torch.compile the restoration networks (CUDA graphs on a GPU); the "
                                               "first batch takes longer."),
    channels_last: bool = typer.Option(False, "--channels-last", metavar="", rich_help_panel=DEVICE,
                                       help="NHWC convolution weights (CUDA only)."),
    engine: str = typer.Option("local", "--engine", metavar="local|ray", rich_help_panel=DEVICE,
                               help="ray: run as a Ray Data pipeline (CPU actors read and write, one restoring actor "
                                    "per GPU) on --ray-address or a local Ray; needs facerestore[ray]."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", metavar="ADDR", rich_help_panel=DEVICE,
                                              help="An existing Ray cluster (e.g. ray://head:10001, auto); default: "
                                                   "a local Ray."),
    io_workers: Optional[int] = typer.Option(None, "--io-workers", min=0, max=32, metavar="N", rich_help_panel=DEVICE,
                                             help="Threads that read photos ahead and write them behind the network "
                                                  "(0: one thread does everything in turn; default 2 on a GPU, 0 on "
                                                  "a CPU, where the network already keeps every core busy)."),
    report: Optional[Path] = typer.Option(None, "--report", metavar="FILE.jsonl", rich_help_panel=ARCHIVAL,
                                          help="Write one JSON line per photo and a summary."),
    force: bool = typer.Option(False, "--force", metavar="", help="Redo every input, even those already done.",
                               rich_help_panel=ARCHIVAL),
    redo_failed: bool = typer.Option(False, "--redo-failed", metavar="", rich_help_panel=ARCHIVAL,
                                     help="Redo inputs that failed last time (others done stay skipped)."),
    shard: Optional[str] = typer.Option(None, "--shard", metavar="I/N", rich_help_panel=ARCHIVAL,
                                        help="Do only shard I of N (0 to N-1) of the inputs, split by a hash of their "
                                             "paths, beside the other shards in the same OUT (Slurm arrays, "
                                             "Kubernetes Indexed Jobs); see `report merge`."),
    wait_lock: Optional[float] = typer.Option(None, "--wait-lock", metavar="SECONDS", rich_help_panel=ARCHIVAL,
                                              help="If another run holds OUT, wait this long instead of exiting 75."),
    fail_fast: bool = typer.Option(False, "--fail-fast", metavar="", help="Stop at the first failed file.",
                                   rich_help_panel=ARCHIVAL),
    max_failures: Optional[int] = typer.Option(None, "--max-failures", min=1, metavar="N", rich_help_panel=ARCHIVAL,
                                               help="Stop after N failed files."),
    max_pixels: Optional[int] = typer.Option(None, "--max-pixels", min=1, metavar="N", rich_help_panel=ARCHIVAL,
                                             help="Refuse images above N pixels (default 178,956,970)."),
    offline: bool = typer.Option(False, "--offline", metavar="", rich_help_panel=ARCHIVAL,
                                 help="Never touch the network (also FACERESTORE_OFFLINE=1)."),
    dry_run: bool = typer.Option(False, "--dry-run", metavar="", rich_help_panel=ARCHIVAL,
                                 help="Check everything, then list each input, its output and why it would run or "
                                      "be skipped (stdout); loads no model."),
    fmt: Optional[str] = typer.Option(None, "--format", metavar="png|jpg|webp|tiff", rich_help_panel=EXTRAS,
                                      help="Write this format instead of the input's."),
    quality: Optional[int] = typer.Option(None, "--quality", min=1, max=100, metavar="N", rich_help_panel=EXTRAS,
                                          help="JPEG/WebP quality (default 95)."),
    metadata: str = typer.Option("keep", "--metadata", metavar="keep|strip", rich_help_panel=EXTRAS,
                                 help="Keep or strip EXIF/ICC/XMP/IPTC."),
    provenance: bool = typer.Option(False, "--provenance", metavar="", rich_help_panel=EXTRAS,
                                    help="Note tool, version, method and parameters in the output's EXIF Software."),
    save_faces: bool = typer.Option(False, "--save-faces", metavar="", rich_help_panel=EXTRAS,
                                    help="Also write restored face crops under OUT/_faces/."),
    save_compare: bool = typer.Option(False, "--save-compare", metavar="", rich_help_panel=EXTRAS,
                                      help="Also write input | restored sheets per face under OUT/_compare/."),
    quiet: bool = typer.Option(False, "-q", "--quiet", metavar="", rich_help_panel=STDOUT,
                               help="No progress output (errors still go to stderr)."),
    verbose: bool = typer.Option(False, "-v", "--verbose", metavar="", rich_help_panel=STDOUT,
                                 help="A line per photo on stderr, naming it."),
    print_outputs: bool = typer.Option(False, "--print-outputs", metavar="", rich_help_panel=STDOUT,
                                       help="Write each finished output path to stdout (and nothing else)."),
    json_out: bool = typer.Option(False, "--json", metavar="", rich_help_panel=STDOUT,
                                  help="Write the per-file records as JSON lines to stdout."),
    null: bool = typer.Option(False, "-0", "--null", metavar="", rich_help_panel=STDOUT,
                              help="NUL-separated paths for --files-from and --print-outputs."),
    knobs: Optional[dict] = None,
) -> int:
    """Restore every face in the given photos and write the results to OUT.

    Example: facerestore run ./photos -o ./restored --method difface --steps 100
    """
    from facerestore_cli.cli_run import check_report, prepare_run
    from facerestore_cli.runner import run as run_pipeline
    from facerestore_cli.progress import Progress
    from facerestore_cli.report import StdoutSink

    if quiet and verbose:
        raise UsageError("-q and -v contradict each other")
    if print_outputs and json_out:
        raise UsageError("--print-outputs and --json both want stdout", hint="choose one")
    check_report(report)
    values = dict(locals())
    opts, found = prepare_run(ctx, values)
    console = _stderr()
    progress = Progress(console, "quiet" if quiet else "plain" if verbose else Progress.choose_mode(False),
                        verbose=verbose)
    sink = StdoutSink("json" if json_out else "paths" if print_outputs else "none", null=null)
    summary = run_pipeline(opts, progress, found.jobs, found.skipped_hidden, found.skipped_not_image, sink)
    if not quiet and not dry_run:
        skipped = found.skipped_hidden + found.skipped_not_image
        console.print(f"done: {summary.counts()}"
                      + (f"; {skipped} non-image/hidden files skipped ({found.skipped_note()})" if skipped else ""),
                      soft_wrap=True, markup=False)
    return 1 if summary.failed else 0


def methods(json_out: bool = typer.Option(False, "--json", metavar="", help="One JSON object per preset.")) -> int:
    """Each preset: whether it can run now, its components, weights and defaults."""
    from facerestore_cli.readiness import builtin_verdicts
    from facerestore_cli.weights.store import WeightStore

    verdicts = builtin_verdicts(WeightStore())
    if json_out:
        for v in verdicts:
            typer.echo(json.dumps(v.as_record(), ensure_ascii=False))
        return 0
    for v in verdicts:
        typer.echo(f"{v.preset}: {v.title}\n  {v.summary}")
        for c in v.components:
            status = c["status"] + (", optional" if c["optional"] else "")
            typer.echo(f"  {c['role']:<13} {c['weights']:<22} {status}" + (f" — {c['provenance']}" if c["provenance"] else ""))
        typer.echo("  defaults: " + " ".join(f"{k}={val}" for k, val in v.defaults.items()) + "\n")
    return 0


def doctor(json_out: bool = typer.Option(False, "--json", metavar="", help="The findings as one JSON object.")) -> int:
    """Check python, torch, CUDA, the weights cache and which presets can run; exits 1 when none can."""
    from facerestore_cli.doctor import report

    return report(_stderr(), json_out)


def _plain_help_flags(command) -> None:
    """Show -h/--help like the other flags (no `<bool>`), in every command."""
    option = command.get_help_option(typer.Context(command))
    if option is not None:
        option.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _plain_help_flags(sub)


def main(argv: Optional[list[str]] = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        command = typer.main.get_command(build_app(args))
        _plain_help_flags(command)
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
