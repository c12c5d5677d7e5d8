"""Everything a run loads before its first photo: device, weights, the method's restorer, detector, parser."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DETECTOR_WEIGHTS = {"retinaface_resnet50": "retinaface-resnet50", "retinaface_mobile0.25": "retinaface-mobile0.25"}


IDENTITY_WEIGHTS = "arcface-ir-se50"


def needed_weights(opts) -> list[str]:
    from facerestore_cli.methods import required_weights

    ids = list(required_weights(opts.preset, opts.params))
    if opts.identity_score and IDENTITY_WEIGHTS not in ids:
        ids.append(IDENTITY_WEIGHTS)
    if not opts.aligned:
        ids.append(DETECTOR_WEIGHTS[opts.detector])
    return ids


def paste_parser(opts, store) -> dict | None:
    """The preset's paste-back parser component when this run pastes faces and its file is present, else None
    (faces are then pasted with the square mask)."""
    from facerestore_cli.presets import PASTE_PARSER

    component = opts.preset.components.get(PASTE_PARSER)
    if opts.aligned or component is None or not store.is_present(component["weights"]):
        return None
    return component


def weight_hashes(opts, store) -> dict[str, str | None]:
    """The sha256 recorded for every file this run uses (no hashing: cheap enough for a rerun that loads nothing)."""
    ids = needed_weights(opts)
    parser = paste_parser(opts, store)
    if parser is not None:
        ids.append(parser["weights"])
    return {wid: store.recorded_sha256(wid) for wid in ids}


@dataclass
class Models:
    compute: Any
    store: Any
    restorer: Any
    detector: Any
    parsenet: Any
    batch_size: int
    weights: dict[str, str | None]
    identity: Any = None  # IdentityScorer when identity scores are reported


def load_models(opts, compute, store) -> Models:
    from facerestore_cli.device import default_batch_size
    from facerestore_cli.faces.detect import FaceDetector
    from facerestore_cli.methods import build_method
    from facerestore_cli.methods.components import load_network

    store.require(needed_weights(opts))
    restorer = build_method(opts.preset, opts.params, store, compute)
    detector = parsenet = None
    if not opts.aligned:
        detector = FaceDetector(load_network(store, {"weights": DETECTOR_WEIGHTS[opts.detector]}, compute), compute.device)
        parser = paste_parser(opts, store)
        if parser is not None:
            parsenet = load_network(store, parser, compute)
    batch_size = opts.batch_size or default_batch_size(compute)
    identity = None
    if opts.identity_score or IDENTITY_WEIGHTS in needed_weights(opts):
        from facerestore_cli.faces.identity import IdentityScorer

        arcface = getattr(restorer, "arcface", None)  # ipc-guided already holds one
        if arcface is None:
            arcface = load_network(store, {"weights": IDENTITY_WEIGHTS}, compute)
        identity = IdentityScorer(arcface, compute.device)
    return Models(compute, store, restorer, detector, parsenet, batch_size, weight_hashes(opts, store), identity)
