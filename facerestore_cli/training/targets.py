"""What `facerestore train` can train: the network, the data it sees, its loss, and how a validation sample is made.

    diffbfr-irm1       DiffBFR IRM(-1), Eq. 8: ε-prediction at 128, conditioned on the LQ face at 128; ground truth
                       x′0 = [y0]↓4 (the HQ face at 128)
    diffbfr-irm2       DiffBFR IRM(-2), Eq. 9: ε-prediction at 512 conditioned on x̃′0, IRM(-1)'s sample of the
                       face's LQ (conditions.py), resized to 512; with --condition lq the LQ face at 128 ("lq128")
    diffbfr-tem        DiffBFR TEM, Eq. 11: unconditional ε-prediction at 512 (its variance channels are not trained:
                       Algorithm 1 does not use them)
    ipc                Diffuse and Restore's IPC g_φ, Eq. 4: SwinIR with L1 + λ·(1 − cos(f_arc(g_φ(x)), f_arc(y0)))
    difface-estimator  DifFace's diffused estimator, §IV: SwinIR with L1

The diffusion targets use DiffBFR's schedules (from presets/diffbfr.yaml) and its degradation (Eq. 13); the SwinIR
targets DifFace's Eq. 17. Loss L1 on ε (Table 6), or L2 (Eq. 8/9 write the squared norm): a config field."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    name: str
    weight_id: str  # where `train export` puts the EMA weights (its registry entry gives arch and full-size config)
    kind: str  # "diffusion" | "restorer"
    degradation: str  # a degrade.MODELS name
    help: str  # the `train` command's help
    condition: str | None = None  # None, "lq" (at the network's size) or "lq128" (LQ at a quarter, back up)
    schedule_of: str | None = None  # the diffbfr preset component whose schedule it learns
    start: str | None = None  # the diffbfr knob naming where its chain starts (None: from noise, the whole chain)
    identity_weight: float = 0.0  # λ of Eq. 4
    upscale: int = 1  # the data's size over the network's (IRM(-1) learns at 128 from 512 faces)

    def schedule(self):
        """ᾱ of the diffbfr preset's schedule for this network (float64)."""
        from facerestore_cli.diffusion.schedule import preset_alphas_cumprod
        from facerestore_cli.presets import load_builtin

        return preset_alphas_cumprod(load_builtin("diffbfr").schedule(self.schedule_of))


TARGETS = {
    "diffbfr-irm1": Target("diffbfr-irm1", "diffbfr-irm1", "diffusion", "diffbfr",
                           "DiffBFR IRM(-1): conditional DDPM at 128 (Eq. 8, Table 6).", "lq", "irm1", upscale=4),
    "diffbfr-irm2": Target("diffbfr-irm2", "diffbfr-irm2", "diffusion", "diffbfr",
                           "DiffBFR IRM(-2): conditional DDPM at 512 (Eq. 9, Table 6).", "lq128", "irm2",
                           start="irm2_start"),
    "diffbfr-tem": Target("diffbfr-tem", "diffbfr-tem", "diffusion", "diffbfr",
                          "DiffBFR TEM: unconditional DDPM at 512 (Eq. 11, Table 6).", None, "tem", start="tem_start"),
    "ipc": Target("ipc", "ipc-swinir", "restorer", "difface",
                  "Diffuse and Restore's IPC: SwinIR with L1 + ArcFace identity loss (Eq. 4).", identity_weight=1.0),
    "difface-estimator": Target("difface-estimator", "estimator-swinir", "restorer", "difface",
                                "DifFace's diffused estimator: SwinIR with L1."),
}
