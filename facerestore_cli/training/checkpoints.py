"""Training checkpoints in RUN/checkpoints/step-NNNNNNNN.pt, written atomically: model, EMA, optimizer, scaler, step,
data position, RNG state, and the settings that shape the math (a resume must match them), and export of the EMA
weights into the weights cache."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from facerestore_cli.errors import UsageError
from facerestore_cli.files import atomic_open

NAME = re.compile(r"^step-(\d{8})\.pt$")
# `train` options a --resume may change: how far to train, how often to log, sample and checkpoint, whether to log to
# TensorBoard too, and where and with how much memory to compute. The weights after step N do not depend on them (the
# data order and every draw are functions of the seed and the step). Every other setting that shapes the weights is stored in the checkpoint
# (Trainer.settings) and must match; so must the --data folder's images.
MAY_CHANGE_ON_RESUME = ("steps", "checkpoint_every", "sample_every", "log_every", "workers", "device",
                        "grad_checkpointing", "tensorboard", "val_data")


# settings added after the first checkpoints were written: what a checkpoint without them ran with
ADDED_SINCE = {"hflip": False, "gray_pairs": False, "condition": "lq"}
# the degradation a target trained on before checkpoints recorded it, where it was not the target's present one
FORMER_DEGRADATION = {"ipc": "difface"}


def checkpoint_dir(run: Path) -> Path:
    return run / "checkpoints"


def latest(run: Path) -> Path | None:
    found = sorted(p for p in checkpoint_dir(run).glob("step-*.pt") if NAME.match(p.name)) if run.is_dir() else []
    return found[-1] if found else None


def save(run: Path, state: dict, keep: int) -> Path:
    """Write one checkpoint atomically, then drop all but the newest `keep`."""
    folder = checkpoint_dir(run)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{state['step']:08d}.pt"
    with atomic_open(path, "wb") as handle:
        torch.save(state, handle)
    for old in sorted(p for p in folder.glob("step-*.pt") if NAME.match(p.name))[:-keep]:
        old.unlink()
    return path


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def check_resume(state: dict, target: str, settings: dict, data_fingerprint: str, path: Path) -> None:
    """A RUN folder continues only the run it holds: same target, same math, same data."""
    if state["target"] != target:
        raise UsageError(f"{path.parent.parent} holds checkpoints of {state['target']}, not {target}",
                         hint="choose another -o RUN folder for this target")
    before = {**ADDED_SINCE, **state["settings"]}
    changed = [f"{key}: {before.get(key)!r} → {value!r}" for key, value in settings.items() if before.get(key) != value]
    if changed:
        may = ", ".join("--" + name.replace("_", "-") for name in MAY_CHANGE_ON_RESUME)
        raise UsageError(f"cannot resume {path}: the run's settings changed ({'; '.join(changed)})",
                         hint=f"resume with the run's settings (only {may} may change), or train into a new -o RUN "
                              f"folder")
    if state["data"] != data_fingerprint:
        raise UsageError(f"cannot resume {path}: the --data folder's images changed since the run started",
                         hint="restore the folder, or train into a new -o RUN folder")


def export(run: Path, weight_id: str | None = None) -> tuple[str, Path, dict]:
    """The newest checkpoint's EMA weights as a plain state dict in RUN/export/, imported into the weights cache
    (checked against the network as the run configured it). Returns (weight id, cached path, the run's settings)."""
    from facerestore_cli.training.targets import TARGETS
    from facerestore_cli.weights.store import WeightStore

    path = latest(run)
    if path is None:
        raise UsageError(f"{run} holds no training checkpoint", hint="train into it first: facerestore train TARGET --data DIR -o RUN")
    state = load(path)
    store = WeightStore()
    wid = weight_id or TARGETS[state["target"]].weight_id
    spec, own = store.spec(wid), store.spec(TARGETS[state["target"]].weight_id)
    if spec.arch != own.arch:
        raise UsageError(f"{wid} is a {spec.arch} network; {state['target']} trains a {own.arch}")
    out = run / "export" / spec.file
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out, "wb") as handle:
        torch.save(state["ema"], handle)
    override = {k: v for k, v in state["config"].items() if spec.config.get(k) != v}
    return wid, store.import_file(wid, out, override or None), state["settings"]
