"""`facerestore degrade` and `facerestore train TARGET|export`: make LQ test sets and the weights no one publishes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Optional

import typer

from facerestore_cli.errors import FacerestoreError, NoInputsError, UsageError
from facerestore_cli.training.targets import TARGETS

train_app = typer.Typer(no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]},
                        help="Train a network no one publishes weights for, then `train export RUN`.")


def _say(text: str) -> None:
    """A line on stderr; under torchrun only rank 0 speaks (errors reach stderr from every rank all the same)."""
    from rich.console import Console

    if os.environ.get("RANK", "0") == "0":
        Console(stderr=True, highlight=False, markup=False, soft_wrap=True).print(text)


def degrade(
    inputs: List[Path] = typer.Argument(..., metavar="PHOTO|FOLDER...", help="HQ face images and/or folders."),
    output: Path = typer.Option(..., "-o", "--output", metavar="DIR", help="Where the LQ images go (PNG)."),
    model: str = typer.Option(..., "--model", metavar="MODEL",
                              help="Whose degradation: diffbfr (DiffBFR Eq. 13), difface (DifFace Eq. 17), "
                                   "difface-celeba-test (DifFace's test set, Appendix A), dr2 (DR2 Eq. 13), dnr "
                                   "(Diffuse and Restore Eq. 10)."),
    seed: int = typer.Option(0, "--seed", metavar="N",
                             help="Each image's degradation is drawn from (seed, its relative path)."),
    keep_scale: bool = typer.Option(False, "--keep-scale", metavar="", help="Keep the downscaled size (default: "
                                                                             "back to the input size)."),
    recursive: bool = typer.Option(False, "-r", "--recursive", metavar="", help="Descend into sub-folders."),
    dr2_scale: Optional[int] = typer.Option(None, "--dr2-scale", metavar="4|8|16",
                                            help="With --model dr2: one of DR2's test sets, r fixed (§4.1)."),
    dr2_split: Optional[str] = typer.Option(None, "--dr2-split", metavar="mild|medium|severe",
                                            help="With --model dr2: the split fixed (§4.1)."),
) -> int:
    """Degrade HQ faces with a paper's synthetic model (a CelebA-Test-style set from your own faces); the parameters
    drawn for each image go to OUT/degradations.jsonl."""
    from facerestore_cli.degrade import DR2_SCALES, DR2_SPLITS, MODELS, degrade_files, dr2_test_set
    from facerestore_cli.discover import discover
    from facerestore_cli.files import atomic_open, check_output_folder

    if model not in MODELS:
        raise UsageError(f"unknown degradation model '{model}'", hint=f"choose one of: {', '.join(MODELS)}")
    chosen = MODELS[model]
    if (dr2_scale is not None or dr2_split is not None) and model != "dr2":
        raise UsageError("--dr2-scale and --dr2-split fix DR2's test sets: they need --model dr2")
    if (dr2_scale is None) != (dr2_split is None):
        raise UsageError("DR2's test sets fix both: give --dr2-scale and --dr2-split",
                         hint="e.g. --dr2-scale 16 --dr2-split severe")
    if dr2_scale is not None:
        if dr2_scale not in DR2_SCALES or dr2_split not in DR2_SPLITS:
            raise UsageError(f"--dr2-scale must be one of {', '.join(map(str, DR2_SCALES))} and --dr2-split one of "
                             f"{', '.join(DR2_SPLITS)}")
        chosen = dr2_test_set(dr2_scale, dr2_split)
    check_output_folder(output)
    found = discover(list(inputs), output, recursive=recursive)
    if not found.jobs:
        raise NoInputsError("no input images found" + (f": skipped {found.skipped_note()}" if found.skipped_note() else ""))
    records = degrade_files(found.jobs, chosen, seed, keep_scale, _say)
    output.mkdir(parents=True, exist_ok=True)
    with atomic_open(output / "degradations.jsonl", "w") as handle:
        handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    failed = sum(r["status"] == "failed" for r in records)
    _say(f"done: {len(records) - failed} degraded ({chosen.equation}), {failed} failed → {output}")
    return 1 if failed else 0


def _model_config(path: Optional[Path]) -> dict:
    if path is None:
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read --model-config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"--model-config {path} is not a mapping of network settings")
    return data


def _make_command(target: str):
    recipe = TARGETS[target].recipe

    def command(
        ctx: typer.Context,
        data: Optional[Path] = typer.Option(None, "--data", metavar="DIR",
                                            help="A folder of aligned HQ faces (any size); with --resume, the run's."),
        val_data: Optional[Path] = typer.Option(None, "--val-data", metavar="DIR",
                                                help="Aligned HQ faces held apart for validation: the first four are "
                                                     "scored and pictured every --sample-every steps (default: the "
                                                     "first four of --data)."),
        run: Path = typer.Option(..., "-o", "--output", metavar="RUN", help="The run folder (checkpoints, samples, metrics)."),
        steps: Optional[int] = typer.Option(None, "--steps", min=1, metavar="N",
                                            help=f"Optimizer steps to train to (default {recipe.steps:,})."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, metavar="N",
                                                 help=f"Faces per forward, per GPU (default {recipe.batch_size})."),
        grad_accum: int = typer.Option(1, "--grad-accum", min=1, metavar="N", help="Forwards per optimizer step."),
        lr: Optional[float] = typer.Option(None, "--lr", metavar="X",
                                           help=f"Adam learning rate after warm-up (default {recipe.lr:g})."),
        warmup: Optional[int] = typer.Option(None, "--warmup", min=0, metavar="N",
                                             help=f"Steps of linear learning-rate warm-up (default {recipe.warmup})."),
        lr_schedule: Optional[str] = typer.Option(None, "--lr-schedule", metavar="constant|cosine",
                                                  help="After warm-up: constant, or cosine annealing to --lr-min at "
                                                       f"--steps (default {recipe.lr_schedule})."),
        lr_min: Optional[float] = typer.Option(None, "--lr-min", metavar="X",
                                               help=f"Where the cosine schedule ends (default {recipe.lr_min:g})."),
        precision: str = typer.Option("auto", "--precision", metavar="auto|fp32|bf16|fp16",
                                      help="Autocast, as `run --precision` chooses it (auto: bf16 on a GPU that has "
                                           "it, else fp16; fp32 on the CPU); fp16 uses a gradient scaler."),
        seed: int = typer.Option(0, "--seed", metavar="N", help="Initialisation, data order, degradations and noise."),
        hflip: bool = typer.Option(True, "--hflip/--no-hflip",
                                   help="Mirror each sample with probability 1/2 (DiffBFR §5.1)."),
        condition: Optional[str] = typer.Option(None, "--condition", metavar="irm1|lq|ipc",
                                                help="diffbfr-irm2: IRM(-1) samples (Eq. 9; the default when IRM(-1) "
                                                     "weights exist) or the LQ face (a stand-in). ipc-prior: the LQ "
                                                     "face x (default, §3.2) or g_φ(x) (ipc, Eq. 5)."),
        irm1: Optional[str] = typer.Option(None, "--irm1", metavar="RUN|ID",
                                           help="diffbfr-irm2: the IRM(-1) to sample (a run folder or a weight id; "
                                                "default diffbfr-irm1)."),
        irm1_steps: Optional[int] = typer.Option(None, "--irm1-steps", min=1, metavar="N",
                                                 help="diffbfr-irm2: IRM(-1) evaluations per sample (default: the "
                                                      "diffbfr preset's, 2000)."),
        preset: Optional[Path] = typer.Option(None, "--preset", metavar="FILE.yaml",
                                              help="ipc-mask, ipc-prior --condition ipc: the ipc-guided preset whose "
                                                   "IPC and prior it trains against (default the built-in)."),
        ema_decay: float = typer.Option(0.9999, "--ema-decay", min=0.0, max=1.0, metavar="D",
                                        help="Decay of the weights' EMA, which export exports (0: the trained "
                                             "weights themselves); early steps use at most (1 + step)/(10 + step)."),
        loss: str = typer.Option("l1", "--loss", metavar="l1|l2", help="L1 (Table 6) or squared error (Eq. 8/9)."),
        model_config: Optional[Path] = typer.Option(None, "--model-config", metavar="FILE.yaml",
                                                    help="Override the network's config (keys of its registry entry)."),
        grad_checkpointing: str = typer.Option("auto", "--grad-checkpointing", metavar="auto|on|off",
                                               help="Recompute activations in backward (auto: on at 512)."),
        resume: bool = typer.Option(False, "--resume", metavar="",
                                    help="Continue the run RUN holds, exactly, with its settings (RUN/train.json); "
                                         "--steps, logging, workers and device may be given anew."),
        checkpoint_every: int = typer.Option(1000, "--checkpoint-every", min=1, metavar="N",
                                             help="Every N steps save RUN/checkpoints/step-NNNNNNNN.pt (model, "
                                                  "EMA, optimizer: what --resume and export read)."),
        sample_every: int = typer.Option(1000, "--sample-every", min=1, metavar="N",
                                         help="Write RUN/samples/step-N.png (LQ | EMA restoration | HQ)."),
        log_every: int = typer.Option(50, "--log-every", min=1, metavar="N",
                                      help="Every N steps append the loss and learning rate to "
                                           "RUN/metrics.jsonl."),
        workers: int = typer.Option(2, "--workers", min=0, metavar="N", help="DataLoader worker processes."),
        device: str = typer.Option("auto", "--device", metavar="DEVICE", help="auto, cpu, cuda or cuda:N."),
        tensorboard: bool = typer.Option(False, "--tensorboard", metavar="",
                                         help="Also log the scalars and validation grids to RUN/tensorboard."),
    ) -> int:
        from facerestore_cli.files import check_output_folder
        from facerestore_cli.training.trainer import Trainer

        check_output_folder(run)
        o = _stored_options(run, ctx) if resume else dict(ctx.params)
        if o["data"] is None:
            raise UsageError("--data names the faces to train on", hint="e.g. --data ~/ffhq512")
        if o["loss"] not in ("l1", "l2"):
            raise UsageError(f"--loss must be l1 or l2, not '{o['loss']}'")
        _check_conditions(target, o["condition"], o["irm1"], o["irm1_steps"], o["preset"])
        if o["lr_schedule"] not in (None, "constant", "cosine"):
            raise UsageError(f"--lr-schedule must be constant or cosine, not '{o['lr_schedule']}'")
        if o["lr_min"] is not None and (o["lr_schedule"] or recipe.lr_schedule) != "cosine":
            raise UsageError("--lr-min is where the cosine schedule ends: it needs --lr-schedule cosine")
        if o["grad_checkpointing"] not in ("auto", "on", "off"):
            raise UsageError(f"--grad-checkpointing must be auto, on or off, not '{o['grad_checkpointing']}'")
        cfg = train_config(target, run, o, resume)
        trainer = Trainer(cfg, _say)
        if not resume and os.environ.get("RANK", "0") == "0":
            _store_options(run, o, cfg.model_config)
        result = trainer.train()
        if result["loss"] is None:  # a resume of a run already at --steps: no step ran
            _say(f"nothing to train: {run} is at step {result['step']} (--steps {result['steps']}); raise --steps to "
                 f"train on, or: facerestore train export {run}")
            return 0
        _say(f"done: step {result['step']}, loss {result['loss']:.4f}, {result['seconds']}s → {run}; "
             f"next: facerestore train export {run}")
        return 0

    command.__doc__ = (f"{TARGETS[target].help} Degraded on the fly; --resume continues exactly. Defaults: "
                       f"{recipe.source}.")
    return command


# the options TrainConfig takes as they are given
PASSED = ("steps", "batch_size", "grad_accum", "lr", "warmup", "lr_schedule", "lr_min", "precision", "seed", "hflip",
          "ema_decay",
          "condition", "irm1", "irm1_steps", "loss", "tensorboard", "checkpoint_every", "sample_every", "log_every",
          "workers", "device")
OPTIONS_FILE = "train.json"  # in RUN: the options the run started with, for --resume


def train_config(target: str, run: Path, o: dict, resume: bool):
    """The TrainConfig of a command's options, or of those RUN/train.json stored (paths as strings, the model
    configuration as its mapping)."""
    from facerestore_cli.training.trainer import TrainConfig

    config = o["model_config"] if isinstance(o["model_config"], dict) else _model_config(o["model_config"])
    return TrainConfig(target=target, data=Path(o["data"]), run=run, **{name: o[name] for name in PASSED},
                       preset=None if o["preset"] is None else Path(o["preset"]), model_config=config,
                       val_data=None if o["val_data"] is None else Path(o["val_data"]),
                       model_config_file=None if isinstance(o["model_config"], dict) else o["model_config"],
                       grad_checkpointing={"auto": None, "on": True, "off": False}[o["grad_checkpointing"]],
                       resume=resume)


def _store_options(run: Path, options: dict, config: dict) -> None:
    from facerestore_cli.files import atomic_open

    stored = {name: str(Path(value).absolute()) if isinstance(value, Path) else value
              for name, value in options.items() if name not in ("run", "resume")}
    stored["model_config"] = config
    run.mkdir(parents=True, exist_ok=True)
    with atomic_open(run / OPTIONS_FILE, "w") as handle:
        json.dump(stored, handle, indent=2, sort_keys=True)


def _stored_options(run: Path, ctx) -> dict:
    """--resume: the options RUN/train.json stored, each given on the command line over it (the checkpoint then
    refuses those that change the math, naming them). A run started before the file existed: the command line's."""
    given = dict(ctx.params)
    try:
        stored = json.loads((run / OPTIONS_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return given
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {run / OPTIONS_FILE}: {exc}", hint="give every option again") from None
    explicit = {name for name in given if ctx.get_parameter_source(name).name in ("COMMANDLINE", "ENVIRONMENT")}
    return {**given, **{name: value for name, value in stored.items() if name in given and name not in explicit}}


def _check_conditions(target: str, condition, irm1, irm1_steps, preset) -> None:
    """--condition, --irm1, --irm1-steps and --preset go with the targets that take them."""
    choices = {"diffbfr-irm2": ("irm1", "lq"), "ipc-prior": ("lq", "ipc")}
    if condition is not None and target not in choices:
        raise UsageError(f"--condition chooses diffbfr-irm2's or ipc-prior's condition; {target} takes none")
    if condition is not None and condition not in choices[target]:
        raise UsageError(f"{target}'s --condition is {' or '.join(choices[target])}, not '{condition}'")
    if (irm1, irm1_steps) != (None, None) and (target != "diffbfr-irm2" or condition == "lq"):
        raise UsageError("--irm1 and --irm1-steps choose diffbfr-irm2's IRM(-1) (with --condition irm1)")
    if preset is not None and not (target == "ipc-mask" or (target == "ipc-prior" and condition == "ipc")):
        raise UsageError("--preset names the ipc-guided parts ipc-mask and ipc-prior --condition ipc train against")


for _name in TARGETS:
    train_app.command(_name, short_help=TARGETS[_name].help.rstrip("."))(_make_command(_name))


@train_app.command("export")
def export(run: Path = typer.Argument(..., metavar="RUN", help="The run folder `train` wrote (its -o)."),
           weight_id: Optional[str] = typer.Option(None, "--id", metavar="ID", help="The weight id to import as "
                                                                                   "(default: the target's).")) -> int:
    """Put a run's EMA weights into the weights cache, checked against the network (then `run` finds them)."""
    from facerestore_cli.training.checkpoints import export as export_run
    from facerestore_cli.weights.store import WeightStore

    try:
        wid, path, settings = export_run(run, weight_id)
    except FileNotFoundError as exc:
        raise FacerestoreError(f"cannot export {run}: {exc}") from None
    _say(f"{wid}: exported the EMA weights of {run} → {path}")
    recorded = WeightStore().recorded_config(wid)
    if recorded:
        _say(f"{wid}: its network differs from the registry's ({', '.join(f'{k}={v}' for k, v in recorded.items())}); "
             f"recorded beside it, so every preset naming {wid} builds that network")
    if settings["target"] == "ipc-prior" and settings.get("condition") == "ipc":
        _say("this prior was trained on g_φ(x) (Eq. 5): run ipc-guided with --prior-condition ipc (or set "
             "prior_condition: ipc in a copy of its preset)")
    return 0
