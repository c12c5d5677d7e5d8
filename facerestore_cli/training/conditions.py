"""IRM(-2)'s training condition as DiffBFR Eq. 9 writes it: x̃′_0, a sample of the trained IRM(-1) on the face's LQ
(what `run` feeds IRM(-2)), not the LQ itself. A sample costs IRM(-1)'s whole chain, so each face's LQ is drawn once
(its degradation no longer changes with the epoch) and its sample is made once per (face, degradation draw, IRM(-1)
weights' sha256, steps), stored under RUN/irm1-conditions/, and read back every epoch and on --resume."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from facerestore_cli.diffusion.noise import seeded_generator
from facerestore_cli.diffusion.schedule import timesteps
from facerestore_cli.files import atomic_open
from facerestore_cli.seeds import hashed_seed

FOLDER = "irm1-conditions"


def condition_seed(rel: str, degradation_key: int) -> int:
    """The seed of a face's IRM(-1) sample (its noise stream, as a face's in `run`)."""
    return hashed_seed("irm1", rel, degradation_key)


@dataclass
class ConditionCache:
    """x̃′_0 per training face at IRM(-1)'s size, float32, [−1, 1] unclamped (irm2_condition makes the condition)."""

    run: Path
    irm1_sha256: str
    steps: int
    made: int = 0  # samples made by this process (a filled cache makes none)

    @property
    def folder(self) -> Path:
        return self.run / FOLDER

    def path(self, rel: str, degradation_key: int) -> Path:
        name = hashlib.sha256(f"{rel}\0{degradation_key}\0{self.irm1_sha256}\0{self.steps}".encode()).hexdigest()
        return self.folder / f"{name[:40]}.pt"

    def load(self, rel: str, degradation_key: int) -> torch.Tensor:
        return torch.load(self.path(rel, degradation_key), map_location="cpu", weights_only=True)

    def fill(self, faces, irm1, abar: torch.Tensor, batch: int, say) -> None:
        """Make the samples the cache lacks, `batch` faces a forward, a short batch padded with blank faces as `run`
        pads (kernels block by batch shape: so a sample is bit for bit what `run --batch-size <batch>` feeds IRM(-2)
        for that face); faces: a training Faces dataset whose degradation is fixed per face; say: progress lines."""
        missing = [i for i in range(len(faces)) if not self.path(*faces.condition_key(i)).exists()]
        if not missing:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        from facerestore_cli.methods.cascade import irm1_sample

        chain = timesteps(len(abar), self.steps, "rounded")
        say(f"IRM(-1) conditions: making {len(missing)} of {len(faces)} ({self.steps} steps each), once")
        for start in range(0, len(missing), batch):
            indices = missing[start:start + batch]
            keys = [faces.condition_key(i) for i in indices]
            lq = torch.stack([torch.from_numpy(faces.pair(i, key)[1]).permute(2, 0, 1) for i, (_rel, key)
                              in zip(indices, keys)]).float() / 255.0
            generators = [seeded_generator(condition_seed(rel, key)) for rel, key in keys]
            padding = batch - len(indices)
            if padding:
                lq = torch.cat([lq, lq.new_zeros((padding, *lq.shape[1:]))])
                generators += [seeded_generator(hashed_seed("irm1 padding", i)) for i in range(padding)]
            with torch.no_grad():
                samples = irm1_sample(irm1, lq, abar, chain, generators).float().cpu()[:len(indices)]
            for (rel, key), sample in zip(keys, samples):
                with atomic_open(self.path(rel, key), "wb", encoding=None) as handle:
                    torch.save(sample.clone(), handle)
            self.made += len(indices)
            say(f"IRM(-1) conditions: {min(start + batch, len(missing))}/{len(missing)}")

