"""ipc-guided ("Diffuse and Restore", §3): an identity-preserving conditioner g_φ restores the face, its output is
diffused to T′ (Eq. 3) and denoised by a face prior whose every step is pushed towards g_φ(x)'s identity by ArcFace
guidance restricted to identity-critical regions (Eq. 6–9): DifFace's sampling core with a guide.

Public substitutes stand in for the unpublished trained parts (see presets/ipc-guided.yaml); a user-trained IPC or
conditional UNet plugs into the same components."""

from __future__ import annotations

from dataclasses import dataclass

from facerestore_cli.methods import difface
from facerestore_cli.methods.params import knob


@dataclass(frozen=True)
class Params(difface.Params):
    guidance_scale: float = knob("--guidance-scale", "Identity guidance scale s of Eq. 9 (0 disables guidance; not "
                                                     "from the paper, tune it with the report's identity cosines).",
                                 min=0.0)
    id_mask: str = knob("--id-mask", "Where identity guidance acts: ParseNet identity parts, Eq. 8's proxy, or "
                                     "everywhere (the paper's Net3 ablation).", choices=("parsing", "proxy", "none"))
    guidance_through_unet: bool = knob("--guidance-through-unet", "Also backpropagate the guidance through the UNet "
                                                                  "(about 3× the UNet cost and its activations); "
                                                                  "given: on.")


def required_weights(preset, params: Params) -> list[str]:
    parts = preset.components
    ids = [parts["ipc"].weights, parts["prior"].weights, parts["arcface"].weights]
    if params.id_mask == "parsing" and params.guidance_scale > 0:
        ids.append(parts["parser"].weights)
    return ids


def build(preset, params: Params, networks):
    from facerestore_cli.diffusion.schedule import preset_alphas_cumprod
    from facerestore_cli.methods.diffused_estimator import DiffusedEstimator

    parts = preset.components
    guidance = _guidance(params, networks, parts) if params.guidance_scale > 0 else None
    return DiffusedEstimator(networks.load(parts["ipc"]), networks.load(parts["prior"]),
                             preset_alphas_cumprod(preset.schedule("prior")), params, preset.face_size,
                             guidance=guidance)


def _guidance(params: Params, networks, parts):
    """The guidance of Eq. 6–9 for one batch: target embedding of g_φ(x), mask M, and `make_guide`'s hook."""
    import torch

    from facerestore_cli.diffusion.guidance import make_guide
    from facerestore_cli.faces.id_masks import build_id_mask
    from facerestore_cli.faces.identity import identity_embedding
    from facerestore_cli.faces.masks import run_parsenet

    arcface = networks.load(parts["arcface"]).module
    parser = networks.load(parts["parser"]).module if params.id_mask == "parsing" else None

    def embed(images01: torch.Tensor) -> torch.Tensor:
        return identity_embedding(arcface, images01)

    def mask(estimate: torch.Tensor, lq: torch.Tensor) -> tuple[str, torch.Tensor]:
        """(the kind of mask built, M [B, 1, S, S])."""
        if params.id_mask == "parsing":
            labels = torch.as_tensor(run_parsenet(parser, estimate), device=estimate.device)
            return "parsing", build_id_mask("parsing", labels=labels, size=estimate.shape[-1])
        if params.id_mask == "proxy":
            return "proxy", build_id_mask("proxy", estimate=estimate, input=lq)
        return "none", build_id_mask("none", shape=estimate.shape)

    def guidance(estimate: torch.Tensor, lq: torch.Tensor, eps_with_grad):
        with torch.no_grad():
            target = embed(estimate)
        kind, m = mask(estimate, lq)
        guide = make_guide(target, embed, m, params.guidance_scale,
                           eps_model=eps_with_grad if params.guidance_through_unet else None)
        return guide, [{"id_mask": kind}] * len(estimate)

    return guidance
