"""What `facerestore train` can train: the network, the data it sees, its loss, and how a validation sample is made.

    diffbfr-irm1       DiffBFR IRM(-1), Eq. 8: ε-prediction at 128, conditioned on the LQ face at 128; ground truth
                       x′0 = [y0]↓4 (the HQ face at 128)
    diffbfr-irm2       DiffBFR IRM(-2), Eq. 9: ε-prediction at 512 conditioned on x̃′0, IRM(-1)'s sample of the
                       face's LQ (conditions.py), resized to 512; with --condition lq the LQ face at 128 ("lq128")
    diffbfr-tem        DiffBFR TEM, Eq. 11: unconditional ε-prediction at 512 (its variance channels are not trained:
                       Algorithm 1 does not use them)
    ipc                Diffuse and Restore's IPC g_φ, Eq. 4: SwinIR with L1 + λ·(1 − cos(f_arc(g_φ(x)), f_arc(y0)))
    ipc-prior          Diffuse and Restore's conditional prior f_θ, Eq. 5: ε-prediction at 512 on [y_t, condition], the
                       condition the degraded face x (§3.2's text; default) or g_φ(x) (Eq. 5; --condition ipc)
    ipc-mask           Diffuse and Restore's mask sub-branch, §3.2.1: [x, M′] → M, trained with Eq. 7 + LPIPS on ŷ_{0,t}
                       at random t < T′ while the IPC and the prior stay frozen (mask_loss.py)
    difface-estimator  DifFace's diffused estimator, §IV: SwinIR with L1

DiffBFR's targets learn its schedules (presets/diffbfr.yaml) on its degradation (Eq. 13); the ipc targets Diffuse and
Restore's Eq. 10 (`dnr`), ipc-prior the ipc-guided preset's schedule; difface-estimator DifFace's Eq. 17. Loss L1 on ε
(Table 6), or L2 (Eq. 8/9 write the squared norm): a config field. Each target's defaults (Recipe) are its paper's
where the paper gives them, else chosen here and said so."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    """A target's training defaults: its paper's where `source` cites it, else chosen here (`source` says so). The
    optimizer is always AdamW without weight decay, which is Adam (Kingma & Ba)."""

    steps: int
    batch_size: int
    lr: float
    lr_schedule: str = "constant"  # or "cosine" (to lr_min at `steps`)
    lr_min: float = 1e-6
    warmup: int = 1000
    source: str = "chosen here (the paper states no optimizer, batch, iterations or schedule)"


CHOSEN = Recipe(100_000, 4, 1e-4)
DIFFACE_ESTIMATOR = Recipe(500_000, 16, 1e-4, "cosine", 1e-6, 0,
                           "DifFace §IV-A: Adam, batch 16, 500k iterations, cosine annealing 1e-4 → 1e-6")
IPC_RECIPE = Recipe(500_000, 16, 1e-4, "cosine", 1e-6, 0,
                    "chosen here: DifFace §IV-A's recipe for the same SwinIR (Diffuse and Restore states none)")
MASK_RECIPE = Recipe(20_000, 4, 1e-4, source="chosen here (a small network; Diffuse and Restore states none)")


@dataclass(frozen=True)
class Target:
    name: str
    weight_id: str  # where `train export` puts the EMA weights (its registry entry gives arch and full-size config)
    kind: str  # "diffusion" | "restorer"
    degradation: str  # a degrade.MODELS name
    help: str  # the `train` command's help
    condition: str | None = None  # None, "lq" (at the network's size) or "lq128" (LQ at a quarter, back up)
    schedule_of: str | None = None  # the preset component whose schedule it learns
    start: str | None = None  # the preset's knob naming where its chain starts (None: from noise, the whole chain)
    identity_weight: float = 0.0  # λ of Eq. 4
    upscale: int = 1  # the data's size over the network's (IRM(-1) learns at 128 from 512 faces)
    preset: str = "diffbfr"  # the built-in preset of its schedule and chain start
    recipe: Recipe = CHOSEN

    def schedule(self):
        """ᾱ of its preset's schedule for this network (float64)."""
        from facerestore_cli.diffusion.schedule import preset_alphas_cumprod
        from facerestore_cli.presets import load_builtin

        return preset_alphas_cumprod(load_builtin(self.preset).schedule(self.schedule_of))

    def chain_start(self) -> int | None:
        """Where a validation chain starts (its preset's knob), None: from noise."""
        from facerestore_cli.presets import load_builtin

        return None if self.start is None else int(load_builtin(self.preset).parameters[self.start])


TARGETS = {
    "diffbfr-irm1": Target("diffbfr-irm1", "diffbfr-irm1", "diffusion", "diffbfr",
                           "DiffBFR IRM(-1): conditional DDPM at 128 (Eq. 8, Table 6).", "lq", "irm1", upscale=4),
    "diffbfr-irm2": Target("diffbfr-irm2", "diffbfr-irm2", "diffusion", "diffbfr",
                           "DiffBFR IRM(-2): conditional DDPM at 512 (Eq. 9, Table 6).", "lq128", "irm2",
                           start="irm2_start"),
    "diffbfr-tem": Target("diffbfr-tem", "diffbfr-tem", "diffusion", "diffbfr",
                          "DiffBFR TEM: unconditional DDPM at 512 (Eq. 11, Table 6).", None, "tem", start="tem_start"),
    "ipc": Target("ipc", "ipc-swinir", "restorer", "dnr",
                  "Diffuse and Restore's IPC: SwinIR with L1 + ArcFace identity loss (Eq. 4).", identity_weight=1.0,
                  recipe=IPC_RECIPE),
    "ipc-prior": Target("ipc-prior", "ipc-prior", "diffusion", "dnr",
                        "Diffuse and Restore's conditional prior f_θ: ε-prediction at 512 on [y_t, x] (Eq. 5).", "lq",
                        "conditional_prior", start="start_t", preset="ipc-guided"),
    "ipc-mask": Target("ipc-mask", "ipc-mask", "mask", "dnr",
                       "Diffuse and Restore's mask sub-branch: [x, M′] → M, trained with Eq. 7 + LPIPS, the IPC and "
                       "prior frozen (§3.2.1).", start="start_t", preset="ipc-guided", recipe=MASK_RECIPE),
    "difface-estimator": Target("difface-estimator", "estimator-swinir", "restorer", "difface",
                                "DifFace's diffused estimator: SwinIR with L1.", recipe=DIFFACE_ESTIMATOR),
}
