"""One `eval`: every check first (pairs, metric networks, the FID reference), then each row measured, streamed, and
the per-image lines put in place only once everything is measured."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from facerestore_cli.errors import UsageError
from facerestore_cli.evaluation.measure import EvalSettings, Evaluator, finite
from facerestore_cli.evaluation.pairs import image_index, pair_folders


def _loader(settings: EvalSettings, device: str, with_fid: bool):
    from facerestore_cli.device import resolve
    from facerestore_cli.evaluation import networks
    from facerestore_cli.networks import NetworkLoader
    from facerestore_cli.weights.store import WeightStore

    store = WeightStore()
    networks.require(store, networks.weights_for(list(settings.metrics), settings.lpips_net, settings.detector,
                                                 with_fid))
    return NetworkLoader(store, resolve(device, "fp32"))


def _fid_reference(evaluator: Evaluator, fid_ref: Path, progress) -> tuple[np.ndarray, np.ndarray]:
    if fid_ref.is_dir():
        index, _problems = image_index(fid_ref, "--fid-ref folder")
        bar, advance = progress(len(index))
        with bar or contextlib.nullcontext():
            return evaluator.set_statistics(sorted(index.values()), advance)
    return load_fid_stats(fid_ref)


def load_fid_stats(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """pytorch-fid's saved statistics (keys mu and sigma)."""
    try:
        with np.load(path) as stats:
            mu, sigma = stats["mu"], stats["sigma"]
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"--fid-ref {path} is not FID statistics (an .npz with mu and sigma): {exc}") from None
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise UsageError(f"--fid-ref {path}: mu {mu.shape} and sigma {sigma.shape} do not fit together")
    return mu, sigma


def evaluate(settings: EvalSettings, restored: list[Path], truth: Path | None, inputs: Path | None,
             run: Path | None, fid_ref: Path | None, device: str, per_image: Path | None, allow_missing: bool,
             progress) -> dict:
    """The JSON-ready result of one eval; progress(total) → (a bar or None, advance)."""
    from facerestore_cli.evaluation.run_faces import FaceCropper, run_faces
    from facerestore_cli.files import atomic_open

    if run is not None:
        rows = [(str(run), run_faces(run), [], FaceCropper())]
    else:
        rows = []
        for folder in restored:
            pairing = pair_folders(folder, truth, inputs)
            rows.append((str(folder), pairing.pairs, pairing.problems, None))
    unpaired = [(name, p) for name, _items, problems, _load in rows for p in problems]
    if unpaired and not allow_missing:
        return {"rows": [{"name": name, "pairs": 0, "left_out": len(problems), "metrics": {}, "counts": {},
                          "problems": [{"file": f, "reason": r} for f, r in problems]}
                         for name, _items, problems, _load in rows],
                "allow_missing": False, "measured": False}
    evaluator = Evaluator(settings, _loader(settings, device, "fid" in settings.metrics))
    if "fid" in settings.metrics:
        evaluator.fid_reference = _fid_reference(evaluator, fid_ref, progress)
    results = []
    with tempfile.TemporaryFile("w+", encoding="utf-8") as lines:  # per-image lines, streamed to disk
        bar, advance = progress(sum(len(items) for _name, items, _problems, _load in rows))
        with bar or contextlib.nullcontext():
            for name, items, problems, load in rows:
                row = evaluator.row(name, items, problems, lambda record: lines.write(_line(record)), advance, load)
                results.append(row.as_record(settings.metrics))
        complete = allow_missing or not any(row["left_out"] for row in results)
        if per_image is not None and complete:  # written whole, or not at all
            lines.seek(0)
            per_image.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(per_image, "w") as handle:
                shutil.copyfileobj(lines, handle)
    for row in results:
        row["metrics"] = {k: finite(v) for k, v in row["metrics"].items()}
    return {"rows": results, "metrics": list(settings.metrics), "allow_missing": allow_missing, "measured": True,
            "settings": {"crop_border": settings.crop_border, "y_channel": settings.y_channel,
                         "lpips_net": settings.lpips_net, "detector": settings.detector,
                         "fid_ref": None if fid_ref is None else str(fid_ref)}}


def _line(record: dict) -> str:
    return json.dumps({k: finite(v) if isinstance(v, float) else v for k, v in record.items()},
                      ensure_ascii=False) + "\n"


def save_fid_stats(folder: Path, output: Path, device: str, batch_size: int, progress) -> int:
    """Compute and save a folder's FID statistics; returns how many images they cover."""
    from facerestore_cli.files import atomic_open

    settings = EvalSettings(("fid",), batch_size=batch_size)
    index, problems = image_index(folder, "folder")
    if problems:
        raise UsageError(f"{problems[0][1]}", hint="give each image one name")
    evaluator = Evaluator(settings, _loader(settings, device, True))
    bar, advance = progress(len(index))
    with bar or contextlib.nullcontext():
        mu, sigma = evaluator.set_statistics(sorted(index.values()), advance)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(output, "wb", encoding=None) as handle:
        np.savez(handle, mu=mu, sigma=sigma)
    return len(index)
