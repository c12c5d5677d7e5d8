"""`facerestore eval`: measure restored sets against ground truth and/or inputs, as the papers' tables do; and
`facerestore eval fid-stats DIR -o STATS.npz`, a reference set's FID statistics saved once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from facerestore_cli.errors import EXIT_SOME_FAILED, UsageError
from facerestore_cli.files import check_output_file
from facerestore_cli.wording import counted

EVAL_EXIT = "Exit codes: 0 measured · 1 files left out (unpaired, unreadable, size mismatch) · 2 usage error · " \
            "3 no images · 4 a metric network missing (`facerestore weights fetch`)."


def _stderr():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _progress(total: int, quiet: bool):
    """A Rich bar on a terminal's stderr; nothing otherwise (or with -q)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = _stderr()
    if quiet or not console.is_terminal:
        return None, lambda n: None
    bar = Progress(TextColumn("eval"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                   transient=True)
    task = bar.add_task("eval", total=total)
    return bar, lambda n: bar.advance(task, n)


def _chosen_metrics(text: Optional[str], truth: bool, given_input: bool, fid: bool) -> list[str]:
    from facerestore_cli.evaluation.metrics import INPUT, METRICS, SET, TRUTH, WITH_TRUTH, WITHOUT_TRUTH

    if text is None:
        names = list(WITH_TRUTH if truth else WITHOUT_TRUTH if given_input else ("niqe",))
        names += ["ids-in"] if truth and given_input else []
        names += ["fid"] if fid else []
    else:
        names = [n.strip().lower() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in METRICS]
        if unknown or not names:
            raise UsageError(f"--metrics: unknown metric {', '.join(unknown) or '(none given)'}",
                             hint=f"choose from: {', '.join(METRICS)}")
    needs = {TRUTH: (truth, "--gt"), INPUT: (given_input, "--input"), SET: (fid, "--fid-ref")}
    for name in names:
        present, flag = needs.get(METRICS[name].needs, (True, ""))
        if not present:
            raise UsageError(f"{METRICS[name].label} needs {flag}", hint=METRICS[name].help)
    return list(dict.fromkeys(names))


def eval_command(
    restored: Optional[List[Path]] = typer.Argument(None, metavar="RESTORED...", show_default=False,
                                                    help="Folders of restored faces, one table row each."),
    truth: Optional[Path] = typer.Option(None, "--gt", metavar="DIR", help="Ground-truth faces, paired by relative "
                                                                           "path, any extension."),
    inputs: Optional[Path] = typer.Option(None, "--input", metavar="DIR", help="The inputs (LQ) of the restored "
                                                                               "faces: adds IDS-in."),
    run: Optional[Path] = typer.Option(None, "--run", metavar="OUT", help="Judge every restored face of a finished "
                                       "`facerestore run` into OUT (identity to its input crop, NIQE)."),
    metrics: Optional[str] = typer.Option(None, "--metrics", metavar="LIST", help="Comma-separated: psnr, ssim, "
                                          "lpips, ids, deg, lmd, niqe, fid, ids-in (default: all that apply)."),
    fid_ref: Optional[Path] = typer.Option(None, "--fid-ref", metavar="DIR|STATS.npz",
                                           help="FID's reference: a folder of images or `eval fid-stats` output."),
    y_channel: bool = typer.Option(False, "--y-channel", metavar="", help="PSNR and SSIM on the Y channel."),
    crop_border: int = typer.Option(0, "--crop-border", min=0, metavar="N", help="Pixels left out at each edge."),
    lpips_net: str = typer.Option("alex", "--lpips-net", metavar="alex|vgg", help="LPIPS backbone."),
    detector: str = typer.Option("retinaface_resnet50", "--detector", metavar="NAME",
                                 help="LMD's landmark detector: retinaface_resnet50 or retinaface_mobile0.25."),
    allow_missing: bool = typer.Option(False, "--allow-missing", metavar="",
                                       help="Measure the pairs there are; say how many were left out (exit 0)."),
    json_out: bool = typer.Option(False, "--json", metavar="", help="JSON Lines: one object, the result."),
    markdown: bool = typer.Option(False, "--markdown", metavar="", help="The table in Markdown on stdout."),
    per_image: Optional[Path] = typer.Option(None, "--per-image", metavar="FILE.jsonl",
                                             help="Also write one JSON line per image."),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help="auto, cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, metavar="N", help="Images per network forward."),
    quiet: bool = typer.Option(False, "-q", "--quiet", metavar="", help="No progress bar."),
) -> int:
    """Measure restorations as the papers' tables do: PSNR, SSIM, LPIPS, IDS/Deg., LMD, NIQE, FID.

    Example: facerestore eval out/difface out/dr2 --gt celeba-test/hq --fid-ref ffhq-stats.npz
    (`facerestore eval fid-stats DIR -o STATS.npz` saves a reference set's FID statistics once.)
    """
    from facerestore_cli.evaluation.measure import EvalSettings
    from facerestore_cli.faces import DETECTOR_WEIGHTS

    if json_out and markdown:
        raise UsageError("--json and --markdown both want stdout", hint="choose one")
    if lpips_net not in ("alex", "vgg"):
        raise UsageError(f"--lpips-net must be alex or vgg, not '{lpips_net}'")
    if detector not in DETECTOR_WEIGHTS:
        raise UsageError(f"unknown detector '{detector}'", hint=f"choose one of: {', '.join(DETECTOR_WEIGHTS)}")
    if run is not None and (restored or truth or inputs):
        raise UsageError("--run measures a run's own faces: give no RESTORED folders, --gt or --input with it")
    if run is None and not restored:
        raise UsageError("no restored folders given", hint="facerestore eval RESTORED... --gt GT (or --run OUT)")
    if fid_ref is not None and not fid_ref.exists():
        raise UsageError(f"--fid-ref {fid_ref} does not exist")
    if per_image is not None:
        check_output_file(per_image, "--per-image", "faces.jsonl")
    names = _chosen_metrics(metrics, truth is not None, inputs is not None or run is not None, fid_ref is not None)
    if run is not None and set(names) - {"niqe", "ids-in", "fid"}:
        raise UsageError("--run measures without ground truth: niqe, ids-in and fid only")
    settings = EvalSettings(tuple(names), crop_border, y_channel, lpips_net, detector, batch_size)
    from facerestore_cli.evaluation.session import evaluate

    result = evaluate(settings, [Path(r) for r in restored or []], truth, inputs, run, fid_ref, device, per_image,
                      allow_missing, lambda total: _progress(total, quiet))
    return _report(result, names, json_out, markdown)


def _report(result: dict, names: list[str], json_out: bool, markdown: bool) -> int:
    from facerestore_cli.evaluation.table import describe, markdown_table

    console = _stderr()
    for row in result["rows"]:
        for problem in row["problems"]:
            console.print(f"{row['name']}: left out {problem['file']}: {problem['reason']}", markup=False,
                          soft_wrap=True)
    if json_out:
        typer.echo(json.dumps(result, ensure_ascii=False))
    elif result["measured"]:
        typer.echo((markdown_table if markdown else describe)(result["rows"], names))
    else:
        left = sum(row["left_out"] for row in result["rows"])
        console.print(f"error: nothing measured: {counted(left, 'file')} without a partner (listed above)", markup=False)
        console.print("hint: --allow-missing measures the pairs there are", markup=False)
    left = sum(row["left_out"] for row in result["rows"])
    return EXIT_SOME_FAILED if left and not result["allow_missing"] else 0


def fid_stats(folder: Path = typer.Argument(..., metavar="DIR", help="The reference images (e.g. FFHQ at 512)."),
              output: Path = typer.Option(..., "-o", "--output", metavar="STATS.npz", help="Where to save μ and Σ."),
              device: str = typer.Option("auto", "--device", metavar="DEVICE", help="auto, cpu, cuda or cuda:N."),
              batch_size: int = typer.Option(8, "--batch-size", min=1, metavar="N", help="Images per forward."),
              quiet: bool = typer.Option(False, "-q", "--quiet", metavar="", help="No progress bar.")) -> int:
    """Save a reference set's FID statistics (pytorch-fid's mu and sigma) for `eval --fid-ref STATS.npz`."""
    from facerestore_cli.evaluation.session import save_fid_stats

    check_output_file(output, "-o", "ffhq-stats.npz")
    count = save_fid_stats(folder, output, device, batch_size, lambda total: _progress(total, quiet))
    if not quiet:
        _stderr().print(f"{output}: FID statistics of {count} images", markup=False)
    return 0


def eval_app(args: list[str]) -> tuple[object, str | None]:
    """`eval` as a command, or (for `eval fid-stats ...`) a group holding fid-stats."""
    if len(args) > 1 and args[1] == "fid-stats":
        group = typer.Typer(context_settings={"help_option_names": ["-h", "--help"]}, add_completion=False)
        group.command("fid-stats", epilog=EVAL_EXIT)(fid_stats)
        return group, None
    return eval_command, EVAL_EXIT

