"""The training loop: AdamW with linear warm-up, gradient clipping, autocast (bf16, or fp16 with a gradient scaler),
gradient accumulation, an EMA of the weights (what `train export` exports), checkpoints every N steps, progress,
metrics as JSON lines, and every K steps a picture of fixed validation faces and the EMA network's scores on them
(its training objective, PSNR, LPIPS; the initial network's objective at step 0). Under torchrun it is data-parallel
(DDP): each rank takes every world-th sample of the global order and rank 0 writes.

A step's randomness is a function of (seed, step) and of each sample's key, so N steps and a resume for M more
are N + M uninterrupted steps, bit for bit on the CPU."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from facerestore_cli.archs import build_arch, check_config, input_size
from facerestore_cli.device import Compute, resolve
from facerestore_cli.errors import UsageError
from facerestore_cli.faces.id_masks import mask_branch_input
from facerestore_cli.files import atomic_write_bytes
from facerestore_cli.interrupts import InterruptGuard, Interrupted
from facerestore_cli.methods.cascade import irm2_condition
from facerestore_cli.methods.diffused_estimator import prior_condition
from facerestore_cli.networks import NetworkLoader
from facerestore_cli.pixels import resize_batch
from facerestore_cli.presets import Component
from facerestore_cli.progress import duration
from facerestore_cli.seeds import hashed_seed
from facerestore_cli.training import checkpoints, frozen
from facerestore_cli.training.data import Faces, Positions, list_faces
from facerestore_cli.training.losses import diffusion_loss, restorer_loss, to_unit, validation_sample
from facerestore_cli.training.mask_loss import mask_loss
from facerestore_cli.training.targets import TARGETS
from facerestore_cli.training.validation import ValidationScores
from facerestore_cli.training.watch import Watch
from facerestore_cli.weights.store import WeightStore
from facerestore_cli.wording import counted

VALIDATION_DRAWS = 4  # per validation face, fixed draws of its timestep and noise in the validation loss


@dataclass
class TrainConfig:
    target: str
    data: Path
    run: Path
    # None: the target's recipe (targets.Recipe: its paper's, or chosen here)
    steps: int | None = None
    batch_size: int | None = None
    grad_accum: int = 1
    lr: float | None = None
    warmup: int | None = None
    hflip: bool = True  # mirror each sample with probability 1/2 (DiffBFR §5.1)
    condition: str | None = None  # diffbfr-irm2: "irm1" (Eq. 9; default when IRM(-1) weights exist) or "lq";
    #                               ipc-prior: "lq" (default) or "ipc" (g_φ(x) of the --preset's IPC)
    irm1: str | None = None  # diffbfr-irm2's IRM(-1): a RUN folder or a weight id (default diffbfr-irm1)
    irm1_steps: int | None = None  # its chain's evaluations (default: the diffbfr preset's irm1_steps)
    preset: Path | None = None  # ipc-mask, ipc-prior --condition ipc: the ipc-guided preset of the frozen parts
    lr_schedule: str | None = None  # "constant" or "cosine": from lr after warm-up to lr_min at --steps (SGDR)
    lr_min: float | None = None
    weight_decay: float = 0.0
    clip: float = 1.0
    ema_decay: float = 0.9999
    precision: str = "auto"
    seed: int = 0
    loss: str = "l1"
    identity_weight: float | None = None  # ipc: λ of Eq. 4 (default the target's, 1)
    model_config: dict = field(default_factory=dict)  # updates the registry entry's config
    model_config_file: Path | None = None  # where model_config came from, for messages
    grad_checkpointing: bool | None = None  # default: on for networks of 512 and more
    resume: bool = False
    checkpoint_every: int = 1000
    keep: int = 2
    log_every: int = 50
    sample_every: int = 1000
    samples: int = 4  # validation faces: the first of --val-data (held apart) or of --data
    val_data: Path | None = None
    workers: int = 2
    device: str = "auto"
    tensorboard: bool = False

    def with_recipe(self) -> TrainConfig:
        """Every recipe setting not given taken from the target's recipe."""
        recipe = TARGETS[self.target].recipe
        given = {name: getattr(self, name) for name in ("steps", "batch_size", "lr", "warmup", "lr_schedule", "lr_min")}
        return dataclasses.replace(self, **{name: getattr(recipe, name) if value is None else value
                                            for name, value in given.items()})


class Trainer:
    def __init__(self, cfg: TrainConfig, say):
        if cfg.target not in TARGETS:
            raise UsageError(f"unknown training target '{cfg.target}'", hint=f"choose one of: {', '.join(TARGETS)}")
        self.cfg, self.say, self.target = cfg.with_recipe(), say, TARGETS[cfg.target]
        cfg = self.cfg
        self.world, self.rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
        # the run path's device and precision policy; under torchrun `auto` is this rank's GPU
        rank_gpu = cfg.device == "auto" and torch.cuda.is_available()
        self.compute = resolve(f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if rank_gpu else cfg.device, cfg.precision)
        self.device, self.precision = self.compute.device, self.compute.precision
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        spec = WeightStore().spec(self.target.weight_id)
        self.config = {**spec.config, **cfg.model_config}
        check_config(spec.arch, self.config, f"--model-config {cfg.model_config_file or ''}".rstrip())
        self.size = input_size(spec.arch, self.config)
        self.listing = list_faces(cfg.data)
        self.val_listing = list_faces(cfg.val_data, "--val-data", "validation/") if cfg.val_data else self.listing
        torch.manual_seed(cfg.seed)
        self.model = build_arch(spec.arch, self.config).to(self.device).train()
        if hasattr(self.model, "grad_checkpointing"):
            self.model.grad_checkpointing = self.size >= 512 if cfg.grad_checkpointing is None else cfg.grad_checkpointing
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.abar = self.target.schedule() if self.target.kind == "diffusion" else None
        self.arcface = self._arcface() if self.target.identity_weight else None
        self.step, self.consumed = 0, 0
        self.settings = {"target": cfg.target, "config": self.config, "batch_size": cfg.batch_size,
                         "grad_accum": cfg.grad_accum, "world": self.world, "lr": cfg.lr, "warmup": cfg.warmup,
                         "weight_decay": cfg.weight_decay, "clip": cfg.clip, "ema_decay": cfg.ema_decay,
                         "precision": self.precision, "seed": cfg.seed, "loss": cfg.loss,
                         "identity_weight": self.identity_weight, "hflip": cfg.hflip, "gray_pairs": True,
                         "degradation": self.target.degradation}
        if cfg.lr_schedule == "cosine":  # its horizon is --steps: a cosine run resumes only to the same end
            self.settings["lr_schedule"] = f"cosine to {cfg.lr_min:g} at step {cfg.steps}"
        irm1 = frozen.irm1_conditions(cfg, self.device, self.settings) if cfg.target == "diffbfr-irm2" else None
        self.irm1, self.conditions = irm1, irm1.cache if irm1 else None
        if cfg.target == "ipc-prior":
            self.settings["condition"] = cfg.condition or "lq"
        self.parts = frozen.ipc_parts(cfg, self.device, self.settings)
        self.watch = Watch(cfg.run, cfg.tensorboard and self.rank == 0)
        self.validation: ValidationScores | None = None  # made at the first validation grid
        self._resume_or_start()
        self.net = torch.nn.parallel.DistributedDataParallel(self.model) if self.world > 1 else self.model

    @property
    def identity_weight(self) -> float:
        return self.target.identity_weight if self.cfg.identity_weight is None else self.cfg.identity_weight

    def _arcface(self):
        """The frozen ArcFace of the identity loss (Eq. 4)."""
        store = WeightStore()
        store.require(["arcface-ir-se50"])
        return NetworkLoader(store, Compute(self.device, "fp32")).load(Component("arcface-ir-se50")).module

    def _resume_or_start(self) -> None:
        found = checkpoints.latest(self.cfg.run)
        if found is None:
            if self.cfg.resume:
                raise UsageError(f"--resume: {self.cfg.run} holds no checkpoint to resume from")
            return
        state = checkpoints.load(found)
        if "gray_pairs" not in state["settings"]:  # a run started before gray LQ got gray HQ: it goes on without
            self.settings["gray_pairs"] = False
        state["settings"].setdefault("degradation", checkpoints.FORMER_DEGRADATION.get(self.cfg.target,
                                                                                        self.target.degradation))
        checkpoints.check_resume(state, self.cfg.target, self.settings, self.listing.fingerprint(), found)
        if not self.cfg.resume:
            raise UsageError(f"{self.cfg.run} already holds this run (step {state['step']})",
                             hint="add --resume to continue it, or choose a new -o RUN folder")
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.consumed = state["step"], state["consumed"]
        torch.set_rng_state(state["rng"])
        if self.rank == 0:
            self.watch.trim(self.step)

    # -- the loop ----------------------------------------------------------------------------------------------
    def train(self) -> dict:
        cfg, started, losses = self.cfg, time.monotonic(), []
        if self.rank == 0 and self.listing.skipped:
            self.say(f"skipped {counted(len(self.listing.skipped), 'unreadable file')}, e.g. {self.listing.skipped[0][0]}: "
                     f"{self.listing.skipped[0][1]}")
        faces = Faces(self.listing, self.size * self.target.upscale, self.target.degradation, cfg.seed, cfg.hflip,
                      self.settings["gray_pairs"], self.conditions)
        if self.conditions is not None:
            if self.rank == 0:
                self.conditions.fill(faces, self.irm1.network, self.irm1.abar, cfg.batch_size, self.say)
            if self.world > 1:
                dist.barrier()
        data = DataLoader(faces,
                          batch_size=cfg.batch_size, num_workers=cfg.workers,
                          sampler=Positions(len(self.listing.files), cfg.seed, cfg.batch_size, self.consumed,
                                            self.rank, self.world))
        batches, first = iter(data), self.step
        bar = _bar(cfg.steps, self.step) if self.rank == 0 and sys.stderr.isatty() else None
        with InterruptGuard() as guard:
            try:
                if self.step == 0 and self.rank == 0:  # where the curve starts: the initial network's objective
                    self.watch.log({"step": 0, "val_loss": round(self.validation_loss(self.ema), 6)})
                while self.step < cfg.steps:
                    losses.append(self.train_step(batches))
                    guard.check()
                    self._after_step(losses, started, first, bar)
            except Interrupted:
                if self.rank == 0:
                    self.save()
                    self.say(f"interrupted at step {self.step}: checkpoint saved, --resume continues")
                raise
            finally:
                if bar is not None:
                    bar.stop()
                self.watch.close()
        if self.rank == 0 and (not checkpoints.latest(cfg.run) or self.step % cfg.checkpoint_every):
            self.save()
        return {"step": self.step, "steps": cfg.steps, "loss": float(np.mean(losses[-cfg.log_every:])) if losses else None,
                "seconds": round(time.monotonic() - started, 2)}

    def train_step(self, batches) -> float:
        """One optimizer step over grad_accum micro-batches; returns its mean loss."""
        cfg = self.cfg
        torch.manual_seed(_step_seed(cfg.seed, self.step))  # dropout, if configured: a function of the step
        total = 0.0
        for micro in range(cfg.grad_accum):
            hq, lq, keys, conditions = next(batches)
            hq, lq = to_unit(hq.to(self.device)), to_unit(lq.to(self.device))
            condition = self._condition(lq, conditions)
            sync = micro == cfg.grad_accum - 1 or self.world == 1
            with (contextlib.nullcontext() if sync else self.net.no_sync()), self.compute.autocast():
                loss = self._loss(self.net, hq, lq, keys, condition)
                self.scaler.scale(loss / cfg.grad_accum).backward()
            total += loss.item() / cfg.grad_accum
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(cfg, self.step)
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self._update_ema()
        self.step += 1
        self.consumed += cfg.batch_size * self.world * cfg.grad_accum
        return total

    def _loss(self, net, hq01: torch.Tensor, lq01: torch.Tensor, keys, condition) -> torch.Tensor:
        """The target's objective on one batch (losses.py, mask_loss.py); keys draw each sample's t and noise."""
        if self.target.kind == "diffusion":
            return diffusion_loss(self.target, net, self.abar, hq01, lq01, keys, self.size, self.cfg.loss, condition)
        if self.target.kind == "mask":
            return mask_loss(net, self.parts, hq01, lq01, keys, self.size)[0]
        return restorer_loss(self.target, net, hq01, lq01, self.size, self.cfg.loss, self.arcface)

    def _condition(self, lq01: torch.Tensor, cached: torch.Tensor) -> torch.Tensor | None:
        """A diffusion target's condition when it is not the LQ itself: IRM(-1)'s cached samples (diffbfr-irm2),
        g_φ(x) (ipc-prior --condition ipc); None: the target's own (losses.condition_of)."""
        if cached.numel():
            return irm2_condition(cached.to(self.device), self.size)
        if self.target.kind == "diffusion" and self.parts is not None:
            with torch.no_grad():
                return prior_condition("estimate", lq01, self.parts.ipc(resize_batch(lq01, self.size)).clamp(0.0, 1.0))
        return None

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
        for ema, param in zip(self.ema.parameters(), self.model.parameters()):
            ema.mul_(decay).add_(param.detach(), alpha=1 - decay)
        for ema, buffer in zip(self.ema.buffers(), self.model.buffers()):
            ema.copy_(buffer)

    def _after_step(self, losses: list[float], started: float, first: int, bar) -> None:
        cfg = self.cfg
        if self.rank != 0:
            return
        elapsed = time.monotonic() - started
        rate = (self.step - first) / elapsed if elapsed else 0.0
        loss = float(np.mean(losses[-cfg.log_every:]))
        status = (f"step {self.step}/{cfg.steps} · loss {loss:.4f} · lr {self.optimizer.param_groups[0]['lr']:.1e} · "
                  f"{rate:.2f} it/s · ETA {duration((cfg.steps - self.step) / rate if rate else None)}")
        if bar is not None:
            bar.update(bar.task_ids[0], completed=self.step, status=status)
        if self.step % cfg.log_every == 0 or self.step == cfg.steps:
            self.watch.log({"step": self.step, "loss": round(loss, 6), "lr": self.optimizer.param_groups[0]["lr"],
                            "it_per_s": round(rate, 3), "samples": self.consumed, "elapsed_s": round(elapsed, 1)})
            if bar is None:
                self.say(status)
        if self.step % cfg.sample_every == 0:
            self.save_samples()
        if self.step % cfg.checkpoint_every == 0:
            self.save()

    # -- validation --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def validation_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The fixed validation faces, each under one fixed degradation draw: (HQ, LQ in [0, 1] on the device, the
        condition the target's network gets with them: _condition's, from IRM(-1) samples made here once if the
        cache lacks them)."""
        faces = Faces(self.val_listing, self.size * self.target.upscale, self.target.degradation, self.cfg.seed,
                      gray_pairs=self.settings["gray_pairs"], conditions=self.conditions)
        if self.conditions is not None and self.val_listing is not self.listing:
            self.conditions.fill(faces, self.irm1.network, self.irm1.abar, self.cfg.batch_size, self.say)
        items = [faces[(i, -1)] for i in range(min(self.cfg.samples, len(faces)))]
        hq, lq = (to_unit(torch.stack([it[k] for it in items]).to(self.device)) for k in (0, 1))
        return hq, lq, self._condition(lq, torch.stack([it[3] for it in items]))

    @torch.no_grad()
    def validation_loss(self, network, batch: tuple | None = None) -> float:
        """`network`'s training objective on the fixed validation faces (batch: validation_batch's, when the caller
        has it), each face under VALIDATION_DRAWS fixed draws of its timestep and noise (a restorer's objective draws
        none): the same draws at every call, so two networks' values compare draw for draw."""
        hq, lq, condition = batch or self.validation_batch()
        draws = 1 if self.target.kind == "restorer" else VALIDATION_DRAWS
        total = 0.0
        for draw in range(draws):
            keys = [hashed_seed("validation", self.cfg.seed, face, draw) for face in range(len(hq))]
            with self.compute.autocast():
                total += float(self._loss(network, hq, lq, keys, condition))
        return total / draws

    # -- what a run writes -------------------------------------------------------------------------------------
    def save(self) -> Path:
        state = {"target": self.cfg.target, "settings": self.settings, "config": self.config, "step": self.step,
                 "consumed": self.consumed, "data": self.listing.fingerprint(), "model": self.model.state_dict(),
                 "ema": self.ema.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scaler": self.scaler.state_dict(), "rng": torch.get_rng_state()}
        return checkpoints.save(self.cfg.run, state, self.cfg.keep)

    @torch.no_grad()
    def save_samples(self) -> Path:
        """RUN/samples/step-NNNNNNNN.png: per fixed validation face, LQ | the EMA network's restoration (ipc-mask:
        its binary mask M) | HQ; the EMA network's validation loss and its restorations' PSNR and LPIPS into
        metrics.jsonl."""
        batch = hq, lq, condition = self.validation_batch()
        with self.compute.autocast():
            if self.target.kind == "mask":
                x = resize_batch(lq, self.size)
                out = (self.ema(mask_branch_input(self.parts.ipc(x).clamp(0.0, 1.0), x)).float() > 0).float()
                out = out.expand(-1, 3, -1, -1)
            else:
                out = validation_sample(self.target, self.ema, self.abar, lq, self.size, self.cfg.seed,
                                        condition=condition)
        side = hq.shape[-1]
        out = torch.nn.functional.interpolate(out.float(), size=(side, side), mode="bicubic", antialias=True).clamp(0, 1)
        record = {"step": self.step, "val_loss": round(self.validation_loss(self.ema, batch), 6)}
        if self.target.kind != "mask":  # a mask is no restoration to score
            if self.validation is None:
                self.validation = ValidationScores(self.device, self.say)
            record.update(self.validation(out, hq))
        self.watch.log(record)
        rows = [torch.cat([lq[i], out[i], hq[i]], dim=2) for i in range(len(hq))]
        grid = (torch.cat(rows, dim=1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        path = self.cfg.run / "samples" / f"step-{self.step:08d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, cv2.imencode(".png", np.ascontiguousarray(grid[..., ::-1]))[1].tobytes())
        self.watch.image(grid, self.step)
        return path


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """The learning rate of optimizer step `step` (from 0): linear warm-up to cfg.lr, then constant, or cosine
    annealing (Loshchilov & Hutter's SGDR without restarts, as DifFace §IV-A trains its estimator: 1e-4 → 1e-6)
    down to cfg.lr_min at cfg.steps."""
    if step < cfg.warmup or cfg.lr_schedule == "constant":
        return cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup))
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr_min + (cfg.lr - cfg.lr_min) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _bar(total: int, done: int):
    """A Rich bar on a terminal (plain lines at --log-every otherwise)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    bar = Progress(BarColumn(bar_width=20), TextColumn("{task.fields[status]}"), console=Console(stderr=True))
    bar.add_task("train", total=total, completed=done, status="")
    bar.start()
    return bar


def _step_seed(seed: int, step: int) -> int:
    return hashed_seed("step", seed, step)


