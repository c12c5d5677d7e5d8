"""Everything a run loads before its first photo: the method's restorer, the detector, the paste-back parser and
the identity scorer, through one NetworkLoader (a network two parts use is loaded once)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from facerestore_cli.background import TiledUpsampler
from facerestore_cli.device import measure_batch_size
from facerestore_cli.errors import WeightsError
from facerestore_cli.faces import DETECTOR_WEIGHTS
from facerestore_cli.faces.detect import FaceDetector
from facerestore_cli.faces.identity import IDENTITY_WEIGHTS, IdentityScorer
from facerestore_cli.networks import NetworkLoader
from facerestore_cli.presets import BACKGROUND, PASTE_PARSER, Component
from facerestore_cli.readiness import installed_detector



def needed_weights(opts) -> list[str]:
    """The weight files this run cannot do without (the optional paste-back parser is not one of them)."""
    ids = opts.method.required_weights(opts.preset, opts.params)
    scored = opts.identity_score or opts.samples > 1 or opts.min_identity is not None
    if scored and IDENTITY_WEIGHTS not in ids:
        ids.append(IDENTITY_WEIGHTS)
    if not opts.aligned:
        ids.append(DETECTOR_WEIGHTS[opts.detector])
        background = background_component(opts)
        if background is not None:
            ids.append(background.weights)
    return ids


def background_component(opts) -> Component | None:
    """The preset's Real-ESRGAN component for this run's --upscale, when the run enlarges photos with it."""
    if opts.aligned or opts.faces.background != "realesrgan":
        return None
    return opts.preset.components[BACKGROUND[opts.faces.upscale]]


def require_weights(opts, store) -> None:
    """Every file the run needs is in the cache, else one WeightsError naming each and how to get it (and, when
    only the chosen detector is missing, the installed one to use instead)."""
    try:
        store.require(needed_weights(opts))
    except WeightsError as exc:
        other = None if opts.aligned else installed_detector(store, preferred=opts.detector)
        if other not in (None, opts.detector):
            exc.hint = f"{exc.hint} ; or use --detector {other}, which is installed"
        raise


def paste_parser(opts, store) -> Component | None:
    """The preset's paste-back parser component when this run pastes faces and its file is present, else None
    (faces are then pasted with the square mask)."""
    component = opts.preset.components.get(PASTE_PARSER)
    if opts.aligned or component is None or not store.is_present(component.weights):
        return None
    return component


def weight_hashes(opts, store) -> dict[str, str | None]:
    """The sha256 recorded for every file this run uses (no hashing: cheap enough for a rerun that loads nothing)."""
    ids = needed_weights(opts)
    parser = paste_parser(opts, store)
    if parser is not None:
        ids.append(parser.weights)
    return {wid: store.recorded_sha256(wid) for wid in ids}


@dataclass
class Models:
    compute: Any
    restorer: Any  # methods.base.Restorer
    detector: Any  # FaceDetector, None with --aligned
    parsenet: Any  # the paste-back parser module, or None (square mask)
    batch_size: int
    identity: Any = None  # IdentityScorer when identity scores are reported
    background: Any = None  # the Real-ESRGAN TiledUpsampler when photos are enlarged with it


def load_detector(opts, networks: NetworkLoader) -> FaceDetector:
    """The run's face detector with the front end's settings, on the networks' device."""
    module = networks.load(Component(DETECTOR_WEIGHTS[opts.detector])).module
    return FaceDetector(module, networks.compute.device, threshold=opts.faces.det_threshold,
                        max_side=opts.detect_max_side, min_side=opts.faces.det_min_side or None)


def load_models(opts, compute, store) -> Models:
    networks = NetworkLoader(store, compute)
    restorer = opts.method.build(opts.preset, opts.params, networks)
    detector = parsenet = background = None
    if not opts.aligned:
        faces = opts.faces
        detector = load_detector(opts, networks)
        parser = paste_parser(opts, store)
        if parser is not None:
            parsenet = networks.load(parser).module
        component = background_component(opts)
        if component is not None:
            background = TiledUpsampler(networks.load(component), faces.upscale, faces.bg_tile)
    identity = None
    if IDENTITY_WEIGHTS in needed_weights(opts):
        identity = IdentityScorer(networks.load(Component(IDENTITY_WEIGHTS)).module, compute.device)
    batch_size = opts.batch_size or measure_batch_size(compute, restorer, opts.preset.face_size)
    return Models(compute, restorer, detector, parsenet, batch_size, identity, background)
