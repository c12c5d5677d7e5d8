"""Per-face random streams: a face's noise depends only on (seed, input relative path, face index),
never on which batch it lands in (diffusers-style per-sample generators)."""

from __future__ import annotations


import torch

from facerestore_cli.seeds import hashed_seed


def face_seed(seed: int, relpath: str, face_index: int) -> int:
    """The 63-bit seed of one face's stream: sha256 of (run seed, input relative path, face index)."""
    return hashed_seed(seed, relpath, face_index)


def sample_seed(seed: int, relpath: str, face_index: int, k: int) -> int:
    """The seed of sample k of a face (--samples K): sample 0 is the face's own stream (face_seed), so a run's first
    sample is what a one-sample run restores; the others are seeded from (seed, relpath, face index, k)."""
    return face_seed(seed, relpath, face_index) if k == 0 else hashed_seed(seed, relpath, face_index, k)


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator for one face's stream (seed: a face_seed value, as the report records it)."""
    return torch.Generator(device="cpu").manual_seed(seed)


def randn_per_face(generators: list[torch.Generator], shape: tuple[int, ...], device, dtype=torch.float32) -> torch.Tensor:
    """One standard-normal sample of `shape` per generator, drawn on the CPU (so results agree across devices
    and batch compositions) and stacked to [B, *shape] on `device`."""
    draws = [torch.randn(shape, generator=g, dtype=torch.float32) for g in generators]
    return torch.stack(draws).to(device=device, dtype=dtype)
