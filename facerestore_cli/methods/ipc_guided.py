"""ipc-guided ("Diffuse and Restore", §3): an identity-preserving conditioner g_φ restores the face, its output is
diffused to T′ (Eq. 3) and denoised by a face prior whose every step is pushed towards g_φ(x)'s identity by ArcFace
guidance restricted to identity-critical regions M (Eq. 6–9).

Two configurations share the parts (presets/ipc-guided.yaml):
  paper        the trained IPC (Eq. 4), the conditional prior f_θ(y_t, x) of Eq. 5 sampled by ancestral DDPM (400
               steps from T′ = 400, Table 6 Net2–Net4), the learned mask branch (§3.2.1)
  substitute   public parts in their place: DifFace's SwinIR (the "IPC w/o ID loss" of Table 1) and its
               unconditional FFHQ UNet sampled by DDIM (DifFace's sampling core), a ParseNet or Eq. 8 mask
`--prior auto` and `--id-mask auto` take the trained part when its weights are present; each face's record says
which configuration ran."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from facerestore_cli.errors import UsageError
from facerestore_cli.methods import difface
from facerestore_cli.methods.params import knob

ROLES = ("ipc", "ipc_substitute", "conditional_prior", "prior", "mask", "arcface", "parser")
PAPER_STEPS = 400  # Table 6 (Net2–Net4): the reverse process runs 400 steps from T′ = 400
SUBSTITUTE_STEPS = 100  # DifFace's official respacing below T′
# --prior-condition → what DiffusedEstimator concatenates to the conditional prior's input
PRIOR_CONDITION = {"lq": "input", "ipc": "estimate"}


@dataclass(frozen=True)
class Params(difface.Params):
    steps: int = knob("--steps", "Network evaluations from --start-t down to 0; 0: the configuration's own (400 "
                                 "ancestral steps with the conditional prior, Table 6; 100 DDIM steps with the "
                                 "unconditional one).", min=0)
    prior: str = knob("--prior", "The diffusion prior: conditional (ipc-prior, Eq. 5), unconditional (DifFace's "
                                 "UNet, a substitute), or auto (conditional when its weights are present).",
                      choices=("auto", "conditional", "unconditional"), shown="KIND")
    prior_condition: str = knob("--prior-condition", "What the conditional prior was trained on: lq (the degraded "
                                                     "face x, §3.2's text) or ipc (g_φ(x), Eq. 5).",
                                choices=tuple(PRIOR_CONDITION))
    guidance_scale: float = knob("--guidance-scale", "Identity guidance scale s of Eq. 9 (0 disables guidance; not "
                                                     "from the paper, tune it with the report's identity cosines).",
                                 min=0.0)
    id_mask: str = knob("--id-mask", "Where identity guidance acts: the learned mask branch (ipc-mask, §3.2.1), "
                                     "ParseNet identity parts, Eq. 8's proxy, everywhere (the paper's Net3 "
                                     "ablation), or auto (learned when its weights are present, else parsing).",
                        choices=("auto", "learned", "parsing", "proxy", "none"), shown="KIND")
    guidance_through_unet: bool = knob("--guidance-through-unet", "Also backpropagate the guidance through the UNet "
                                                                  "(about 3× the UNet cost and its activations); "
                                                                  "given: on.")

    def check(self, preset) -> None:
        missing = [role for role in ROLES if role not in preset.components]
        if missing:
            raise UsageError(f"preset {preset.source}: ipc-guided needs the component(s) {', '.join(missing)}",
                             hint=f"copy presets/ipc-guided.yaml afresh: it declares {', '.join(ROLES)}")
        for role in ("prior", "conditional_prior"):
            timesteps = preset.schedule(role).num_timesteps
            if self.start_t >= timesteps:
                raise UsageError(f"--start-t must be in [1, {timesteps - 1}], got {self.start_t}")
        if self.steps > self.start_t:
            raise UsageError(f"--steps must be in [0, --start-t={self.start_t}], got {self.steps}")


@dataclass(frozen=True)
class Configuration:
    """What a run with these parameters and weights uses: component roles, the mask kind and the chain's length."""

    ipc: str  # "ipc" (trained, Eq. 4) or "ipc_substitute"
    prior: str  # "conditional_prior" or "prior"
    id_mask: str  # learned | parsing | proxy | none
    steps: int

    @property
    def name(self) -> str:
        """paper: all three trained parts; substitute: none of them; mixed: some."""
        theirs = [self.ipc == "ipc", self.prior == "conditional_prior", self.id_mask == "learned"]
        return "paper" if all(theirs) else "mixed" if any(theirs) else "substitute"

    @property
    def sampler(self) -> str:
        return "ancestral" if self.prior == "conditional_prior" else "ddim"

    def record(self, preset, params: Params) -> dict:
        """What every face record says about the configuration that restored it."""
        parts = preset.components
        chain = (f"ancestral DDPM, {self.steps} steps from t={params.start_t}" if self.sampler == "ancestral"
                 else f"DDIM η={params.eta:g}, {self.steps} steps from t={params.start_t}")
        return {"configuration": {"name": self.name, "ipc": parts[self.ipc].weights,
                                  "prior": parts[self.prior].weights, "sampler": chain},
                "id_mask": self.id_mask if params.guidance_scale > 0 else None}


def configure(preset, params: Params, present=None) -> Configuration:
    """Resolve `auto`: a trained part is used when its weights are present (present(weight_id) → bool, default the
    weights cache)."""
    if present is None:
        from facerestore_cli.weights.store import WeightStore

        present = WeightStore().is_present
    parts = preset.components
    ipc = "ipc" if present(parts["ipc"].weights) else "ipc_substitute"
    conditional = params.prior == "conditional" or (params.prior == "auto" and present(parts["conditional_prior"].weights))
    mask = params.id_mask
    if mask == "auto":
        mask = "learned" if present(parts["mask"].weights) else "parsing"
    steps = params.steps or (PAPER_STEPS if conditional else SUBSTITUTE_STEPS)
    if steps > params.start_t:
        raise UsageError(f"--steps 0 means {steps} here, more than --start-t={params.start_t}: give --steps")
    return Configuration(ipc, "conditional_prior" if conditional else "prior", mask, steps)


def describe(preset, params: Params) -> str:
    """Which configuration a run with these parameters would use now (`facerestore methods`)."""
    config = configure(preset, params)
    record = config.record(preset, params)["configuration"]
    return (f"the {record['name']} configuration: IPC {record['ipc']}, prior {record['prior']} ({record['sampler']}), "
            f"identity mask {config.id_mask}")


def required_weights(preset, params: Params) -> list[str]:
    parts, config = preset.components, configure(preset, params)
    ids = [parts[config.ipc].weights, parts[config.prior].weights, parts["arcface"].weights]
    if params.guidance_scale > 0 and config.id_mask in ("parsing", "learned"):
        ids.append(parts["parser" if config.id_mask == "parsing" else "mask"].weights)
    return ids


def build(preset, params: Params, networks):
    from facerestore_cli.diffusion.schedule import preset_alphas_cumprod
    from facerestore_cli.methods.diffused_estimator import DiffusedEstimator

    parts, config = preset.components, configure(preset, params)
    guidance = _guidance(params, config, networks, parts) if params.guidance_scale > 0 else None
    conditional = config.sampler == "ancestral"
    return DiffusedEstimator(networks.load(parts[config.ipc]), networks.load(parts[config.prior]),
                             preset_alphas_cumprod(preset.schedule(config.prior)),
                             dataclasses.replace(params, steps=config.steps), preset.face_size, guidance=guidance,
                             sampler=config.sampler,
                             condition=PRIOR_CONDITION[params.prior_condition] if conditional else None,
                             face_info=config.record(preset, params))


def _guidance(params: Params, config: Configuration, networks, parts):
    """The guidance of Eq. 6–9 for one batch: target embedding of g_φ(x), mask M, and `make_guide`'s hook."""
    import torch

    from facerestore_cli.diffusion.guidance import make_guide
    from facerestore_cli.faces.id_masks import build_id_mask
    from facerestore_cli.faces.identity import identity_embedding
    from facerestore_cli.faces.masks import run_parsenet

    arcface = networks.load(parts["arcface"]).module
    parser = networks.load(parts["parser"]).module if config.id_mask == "parsing" else None
    branch = networks.load(parts["mask"]) if config.id_mask == "learned" else None

    def embed(images01: torch.Tensor) -> torch.Tensor:
        return identity_embedding(arcface, images01)

    def mask(estimate: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
        """M [B, 1, S, S]."""
        if config.id_mask == "parsing":
            labels = torch.as_tensor(run_parsenet(parser, estimate), device=estimate.device)
            return build_id_mask("parsing", labels=labels, size=estimate.shape[-1])
        if config.id_mask == "learned":
            with torch.no_grad():
                return build_id_mask("learned", branch=branch, estimate=estimate, input=lq, size=estimate.shape[-1])
        if config.id_mask == "proxy":
            return build_id_mask("proxy", estimate=estimate, input=lq)
        return build_id_mask("none", shape=estimate.shape)

    def guidance(estimate: torch.Tensor, lq: torch.Tensor, eps_with_grad):
        with torch.no_grad():
            target = embed(estimate)
        return make_guide(target, embed, mask(estimate, lq), params.guidance_scale,
                          eps_model=eps_with_grad if params.guidance_through_unet else None)

    return guidance
