"""Measuring one set of restorations (a row of the table), streamed: images are read a batch at a time, the metric
networks run on the batch, per-image values go out as they come and only running sums stay (FID's 2048-d moments
included), so a set of any size takes the memory of one batch."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from facerestore_cli.errors import FacerestoreError
from facerestore_cli.evaluation import metrics as m
from facerestore_cli.evaluation.pairs import Pair
from facerestore_cli.imageio import read_image
from facerestore_cli.pixels import resize_batch, to_uint8


@dataclass(frozen=True)
class EvalSettings:
    metrics: tuple[str, ...]
    crop_border: int = 0
    y_channel: bool = False
    lpips_net: str = "alex"
    detector: str = "retinaface_resnet50"
    batch_size: int = 8


@dataclass
class RowResult:
    name: str
    pairs: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)
    fid: float | None = None
    fid_images: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, value: float | None) -> None:
        if value is not None:
            self.sums[name] = self.sums.get(name, 0.0) + value
            self.counts[name] = self.counts.get(name, 0) + 1

    def mean(self, name: str) -> float | None:
        if name == "fid":
            return self.fid
        return self.sums[name] / self.counts[name] if self.counts.get(name) else None

    def as_record(self, names: Iterable[str]) -> dict:
        return {"name": self.name, "pairs": self.pairs, "left_out": len(self.problems),
                "metrics": {n: self.mean(n) for n in names},
                "counts": {n: self.fid_images if n == "fid" else self.counts.get(n, 0) for n in names},
                "problems": [{"file": f, "reason": r} for f, r in self.problems], "notes": list(self.notes)}


def read_rgb(path: Path) -> np.ndarray:
    """The image as uint8 RGB (16-bit scaled down, alpha left out)."""
    return to_uint8(read_image(path).rgb)


def _tensor(images: list[np.ndarray], device) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous().to(device, torch.float32) / 255.0


class Evaluator:
    """The chosen metrics with their networks loaded (networks: evaluation/networks.py); fid_reference: the
    reference set's (μ, Σ), set before rows are measured for FID."""

    def __init__(self, settings: EvalSettings, loader):
        from facerestore_cli.evaluation import networks

        self.settings, self.fid_reference = settings, None
        chosen = set(settings.metrics)
        self.device = loader.compute.device
        self.lpips = networks.lpips_model(loader, settings.lpips_net) if "lpips" in chosen else None
        self.arcface = None
        if chosen & {"ids", "deg", "ids-in"}:
            from facerestore_cli.faces.identity import IDENTITY_WEIGHTS

            self.arcface = loader.load(networks.Component(IDENTITY_WEIGHTS)).module
        self.detector = None
        if "lmd" in chosen:
            from facerestore_cli.faces import DETECTOR_WEIGHTS
            from facerestore_cli.faces.detect import FaceDetector

            self.detector = FaceDetector(loader.load(networks.Component(DETECTOR_WEIGHTS[settings.detector])).module)
        self.inception = networks.fid_model(loader) if "fid" in chosen else None

    # -- a row -------------------------------------------------------------------------------------------------
    def row(self, name: str, items: Iterable, problems: list, on_image: Callable[[dict], None],
            advance: Callable[[int], None], load: Callable | None = None) -> RowResult:
        """Measure items (Pairs, or what `load` reads: an item → (key, restored, truth, input) uint8 RGB, or why
        it cannot be measured); per-image records go to on_image, advance(n) counts items done."""
        result = RowResult(name, problems=list(problems))
        moments = m.FeatureMoments() if self.inception is not None else None
        for batch in self._batches(items, load or self._load, result, advance):
            records = self._measure(batch, moments)
            for record in records:
                for metric in self.settings.metrics:
                    result.add(metric, record.get(metric))
                on_image({"row": name, **record})
            result.pairs += len(batch)
        reasons = {"niqe": "smaller than two 96-px blocks, where NIQE fits nothing",
                   "lmd": "without a face RetinaFace finds in the restored image and in the ground truth"}
        for metric, why in reasons.items():
            left = result.pairs - result.counts.get(metric, 0)
            if metric in self.settings.metrics and left:
                result.notes.append(f"{m.METRICS[metric].label} leaves out {left} of {result.pairs} images, {why}")
        if moments is not None and moments.count < 2:
            result.notes.append(f"FID not computed: it needs at least 2 images, the set has {moments.count}")
        if moments is not None and moments.count >= 2:
            result.fid_images = moments.count
            try:
                result.fid = m.frechet_distance(*moments.statistics(), *self.fid_reference)
            except ValueError as exc:  # pytorch-fid refuses a covariance root with a large imaginary part
                result.notes.append(f"FID not computed ({exc}): {moments.count} images are far too few for FID's "
                                    f"2048 features")
        return result

    def _batches(self, items: Iterable, load: Callable, result: RowResult, advance) -> Iterator[list[tuple]]:
        batch = []
        for item in items:
            try:
                loaded = load(item)
            except (FacerestoreError, OSError) as exc:
                loaded = getattr(exc, "message", None) or f"cannot read: {exc}"
            if isinstance(loaded, str):
                result.problems.append((str(getattr(item, "restored", item)), loaded))
                advance(1)
                continue
            batch.append(loaded)
            if len(batch) == self.settings.batch_size:
                yield batch
                advance(len(batch))
                batch = []
        if batch:
            yield batch
            advance(len(batch))

    @staticmethod
    def _load(pair: Pair):
        """(key, restored, truth, input) as uint8 RGB, or why the pair cannot be measured."""
        restored = read_rgb(pair.restored)
        truth = read_rgb(pair.truth) if pair.truth is not None else None
        given = read_rgb(pair.input) if pair.input is not None else None
        if truth is not None and truth.shape != restored.shape:
            return (f"size mismatch: restored {restored.shape[1]}×{restored.shape[0]}, ground truth "
                    f"{truth.shape[1]}×{truth.shape[0]} ({pair.truth})")
        return pair.key, restored, truth, given

    @torch.no_grad()
    def _measure(self, batch: list[tuple], moments: m.FeatureMoments | None) -> list[dict]:
        s, chosen = self.settings, set(self.settings.metrics)
        records = [{"file": key} for key, *_ in batch]
        for record, (_pair, restored, truth, _given) in zip(records, batch):
            if "psnr" in chosen:
                record["psnr"] = m.psnr(restored, truth, s.crop_border, s.y_channel)
            if "ssim" in chosen:
                record["ssim"] = m.ssim(restored, truth, s.crop_border, s.y_channel)
            if "niqe" in chosen:
                record["niqe"] = m.niqe(restored, s.crop_border)
            if "lmd" in chosen:
                record["lmd"] = self._landmark_distance(restored, truth)
        for indices in _same_size(batch):
            self._networks([batch[i] for i in indices], [records[i] for i in indices], chosen, moments)
        return records

    def _networks(self, batch, records, chosen, moments) -> None:
        restored = _tensor([b[1] for b in batch], self.device)
        truth = _tensor([b[2] for b in batch], self.device) if batch[0][2] is not None else None
        if self.lpips is not None:
            for record, value in zip(records, self.lpips(restored, truth, normalize=True).flatten().tolist()):
                record["lpips"] = value
        if self.arcface is not None:
            from facerestore_cli.faces.identity import identity_embedding

            embedded = identity_embedding(self.arcface, restored)
            if truth is not None and chosen & {"ids", "deg"}:
                for record, cos in zip(records, m.cosines(embedded, identity_embedding(self.arcface, truth))):
                    record["ids"], record["deg"] = cos, m.degrees(cos)
            if "ids-in" in chosen:  # each input at its restored image's size (an LQ set may be smaller)
                for k, (_key, image, _truth, given) in enumerate(batch):
                    reference = resize_batch(_tensor([given], self.device), image.shape[:2])
                    records[k]["ids-in"] = m.cosines(embedded[k:k + 1], identity_embedding(self.arcface, reference))[0]
        if moments is not None:
            moments.add(self.inception(restored)[0].flatten(1).double().cpu().numpy())

    def _landmark_distance(self, restored: np.ndarray, truth: np.ndarray) -> float | None:
        faces = [self.detector.detect(image) for image in (restored, truth)]
        if not all(faces):
            return None
        best = [max(found, key=lambda f: f.score) for found in faces]
        return m.landmark_distance(best[0].landmarks, best[1].landmarks)

    @torch.no_grad()
    def set_statistics(self, paths: Iterable[Path], advance: Callable[[int], None]) -> tuple[np.ndarray, np.ndarray]:
        """FID's (μ, Σ) of a folder's images (the reference set)."""
        moments, batch = m.FeatureMoments(), []
        for path in paths:
            batch.append(read_rgb(path))
            if len(batch) == self.settings.batch_size:
                self._features(batch, moments)
                advance(len(batch))
                batch = []
        if batch:
            self._features(batch, moments)
            advance(len(batch))
        return moments.statistics()

    def _features(self, images: list[np.ndarray], moments: m.FeatureMoments) -> None:
        for indices in _same_size([(None, image) for image in images]):
            tensor = _tensor([images[i] for i in indices], self.device)
            moments.add(self.inception(tensor)[0].flatten(1).double().cpu().numpy())


def _same_size(batch) -> list[list[int]]:
    """The batch's indices grouped by the restored image's size (networks run on same-size stacks)."""
    groups: dict[tuple, list[int]] = {}
    for i, item in enumerate(batch):
        groups.setdefault(item[1].shape, []).append(i)
    return list(groups.values())


def finite(value: float | None) -> float | None | str:
    """A value for JSON: inf (identical images' PSNR) as the string "inf"."""
    return "inf" if value is not None and math.isinf(value) else value
