"""Training data: a folder of aligned HQ faces (FFHQ layout, any size), each resized to the target's size and
degraded on the fly with a paper's model.

Everything random about a sample is a function of (seed, epoch, its relative path): its degradation here, its
timestep and noise in the loss (the `key` it carries). The order of an epoch is a permutation seeded by
(seed, epoch), consumed position by position; rank r of w takes every w-th position. So a resume from a recorded
position, and w ranks of batch b against one of batch w·b, see the same samples with the same randomness."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Sampler

from facerestore_cli.degrade import MODELS, image_rng, resize_to, to_gray
from facerestore_cli.discover import Discovery, folder_images
from facerestore_cli.errors import UsageError
from facerestore_cli.imageio import read_image
from facerestore_cli.pixels import to_uint8
from facerestore_cli.seeds import hashed_seed
from facerestore_cli.wording import counted


@dataclass
class Listing:
    files: list[Path]
    rels: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, why)

    def fingerprint(self) -> str:
        """What a resume must find again: the same files in the same order."""
        return hashlib.sha256("\n".join(self.rels).encode()).hexdigest()


def list_faces(root: Path, option: str = "--data", prefix: str = "") -> Listing:
    """Every image under root, by name or content; files that do not open as images are skipped and counted.
    option: the flag that named root, for messages; prefix: put before each relative path (the faces' draws and
    cached conditions are keyed by it: held-apart validation faces must not share a training face's)."""
    if not root.is_dir():
        raise UsageError(f"{option} {root} is not a folder")
    listing = Listing([], [])
    # sorted by path, folder parts first: the order resumes and epochs were made with
    for path, rel in sorted(folder_images(Discovery(), root, recursive=True), key=lambda found: found[0]):
        try:
            with Image.open(path) as im:
                im.verify()
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
            listing.skipped.append((rel, f"not a readable image ({exc})".replace("\n", " ")))
            continue
        listing.files.append(path)
        listing.rels.append(prefix + rel)
    if not listing.files:
        raise UsageError(f"no images in {option} {root}" + (f" ({len(listing.skipped)} unreadable)" if listing.skipped else ""),
                         hint=f"point {option} at a folder of aligned HQ face images (PNG or JPEG)")
    return listing


def sample_key(seed: int, epoch: int, rel: str) -> int:
    return hashed_seed("train", seed, epoch, rel)


class Faces(Dataset):
    """Item (index, epoch) → (HQ uint8 [3, S, S], LQ uint8 [3, S, S] at the same size, key, condition). hflip: each
    sample is mirrored with probability 1/2 (DiffBFR §5.1 augments with the horizontal flip), drawn from its key;
    gray_pairs: a sample whose degradation made the LQ gray gets a gray HQ too (DiffBFR's gray probability is for
    colour adaptation: a gray input should not be taught to invent colour). conditions: a ConditionCache
    (conditions.py): each face's degradation is drawn once, not per epoch, and its cached IRM(-1) sample comes with
    it (mirrored with the pair); otherwise the condition is an empty tensor."""

    def __init__(self, listing: Listing, size: int, degradation: str, seed: int, hflip: bool = False,
                 gray_pairs: bool = False, conditions=None):
        self.listing, self.size, self.model, self.seed = listing, size, MODELS[degradation], seed
        self.hflip, self.gray_pairs, self.conditions = hflip, gray_pairs, conditions

    def __len__(self) -> int:
        return len(self.listing.files)

    def condition_key(self, index: int) -> tuple[str, int]:
        """(relative path, degradation draw) of a face whose degradation is drawn once."""
        rel = self.listing.rels[index]
        return rel, sample_key(self.seed, 0, rel)

    def pair(self, index: int, draw: int) -> tuple[np.ndarray, np.ndarray]:
        """(HQ, LQ) uint8 H×W×3 of face `index` degraded with draw `draw`, unmirrored."""
        rel = self.listing.rels[index]
        try:
            hq = to_uint8(read_image(self.listing.files[index]).rgb)
        except Exception as exc:  # noqa: BLE001 - a file that passed the header check but fails to decode
            raise RuntimeError(f"cannot read training image {self.listing.files[index]}: {exc}") from exc
        hq = resize_to(hq, (self.size, self.size)) if hq.shape[:2] != (self.size, self.size) else hq
        lq, params = self.model(hq, image_rng(draw, rel))
        if self.gray_pairs and params.get("gray"):
            hq = np.clip(np.rint(to_gray(hq.astype(np.float32))), 0, 255).astype(np.uint8)
        return hq, lq

    def __getitem__(self, item: tuple[int, int]):
        index, epoch = item
        rel = self.listing.rels[index]
        key = sample_key(self.seed, epoch, rel)
        draw = self.condition_key(index)[1] if self.conditions is not None else key
        hq, lq = (torch.from_numpy(image).permute(2, 0, 1) for image in self.pair(index, draw))
        condition = self.conditions.load(rel, draw) if self.conditions is not None else torch.zeros(0)
        if self.hflip and hashed_seed("flip", key) & 1:
            hq, lq, condition = hq.flip(-1), lq.flip(-1), condition.flip(-1) if condition.numel() else condition
        return hq.contiguous(), lq.contiguous(), key, condition.contiguous()


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng(hashed_seed("order", seed, epoch, bits=64)).permutation(n)


class Positions(Sampler):
    """(index, epoch) from global position `start` on, forever; an epoch's usable positions are a whole number of
    global batches (world · batch), the rest of its permutation is dropped."""

    def __init__(self, n: int, seed: int, batch: int, start: int = 0, rank: int = 0, world: int = 1):
        self.per_epoch = n // (batch * world) * batch * world
        if self.per_epoch == 0:
            raise UsageError(f"{counted(n, 'training image')} cannot fill one batch of {batch * world}",
                             hint="add images, or lower --batch-size")
        self.n, self.seed, self.start, self.rank, self.world = n, seed, start, rank, world

    def __iter__(self) -> Iterator[tuple[int, int]]:
        position = self.start
        while True:
            epoch, index = divmod(position, self.per_epoch)
            order = epoch_order(self.n, self.seed, epoch)
            for p in range(index, self.per_epoch):
                if p % self.world == self.rank:
                    yield int(order[p]), epoch
            position = (epoch + 1) * self.per_epoch
