"""Shared fixtures: ../shared data, and a FACERESTORE_HOME holding the real RetinaFace mobile0.25 file plus tiny
random DifFace networks written exactly in the official checkpoint layouts (module. prefixes, SwinIR nested under
"state_dict"), so every test goes through the real weights code."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from ci_rules import REPO, SHARED, missing_shared_parts, pytest_runtest_makereport, pytest_sessionstart  # noqa: E402,F401
from tiny_configs import TINY_PARSENET, TINY_RRDBNET, TINY_SWINIR, TINY_UNET_DIFFACE  # noqa: E402

PHOTOS = SHARED / "data" / "photos"
ALIGNED_LQ = SHARED / "data" / "aligned-lq"
ALIGNED_HQ = SHARED / "data" / "aligned-hq-ish"  # five cleaner aligned faces: held apart from ALIGNED_LQ
RETINA_MOBILE = SHARED / "weights" / "detection_mobilenet0.25_Final.pth"

TINY_FACE_SIZE = 128
# the face front end's settings every record of a built-in (diffusion) preset's run reports, and of an --aligned run
PRESET_FACE_PARAMETERS = {"det_threshold": 0.8, "det_min_side": 640, "eye_distance": 5, "min_face": 0, "min_score": 0.97,
                          "select": "all", "indices": None, "upscale": 1, "bg_upsampler": None, "bg_tile": None,
                          "blend": 1.0}
ALIGNED_FACE_PARAMETERS = {**dict.fromkeys(PRESET_FACE_PARAMETERS), "upscale": 1, "blend": 1.0}
# --samples, --select, --min-identity, --fallback at their defaults, as records name them
KEEPING_PARAMETERS = {"samples": 1, "keep_by": "identity", "min_identity": None, "fallback": "original"}
TINY_UNET_AT_128 = {**TINY_UNET_DIFFACE, "image_size": TINY_FACE_SIZE, "attention_sizes": [32]}
TINY_SWINIR_AT_128 = {**TINY_SWINIR, "img_size": TINY_FACE_SIZE // 8}
# the background upsamplers of --upscale 2 / 4 (Real-ESRGAN files: params_ema, no prefix)
TINY_BACKGROUNDS = {"background_x2": ("realesrgan-x2plus", "RealESRGAN_x2plus.pth", {**TINY_RRDBNET, "scale": 2}),
                    "background_x4": ("realesrgan-x4plus", "RealESRGAN_x4plus.pth", {**TINY_RRDBNET, "scale": 4})}


def edited(path: Path, before_ns: int) -> Path:
    """Give a file just rewritten an mtime 5 s after `before_ns` (its mtime before the edit), as any edit shows on
    a filesystem whose clock ticks in whole seconds: tests never rely on the write itself moving the mtime."""
    os.utime(path, ns=(before_ns, before_ns + 5_000_000_000))
    return path


def require_shared():
    """Skip outside CI when ../shared is incomplete (in CI the session does not even start, see ci_rules.py)."""
    if missing_shared_parts():
        pytest.skip(f"../shared not found at {SHARED} (set FACERESTORE_SHARED)")


def randomize(model, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def write_official_layout(model, path: Path, nested_key: str | None, prefix: str = "module.") -> None:
    import torch

    sd = {prefix + k: v for k, v in model.state_dict().items()}
    torch.save({nested_key: sd} if nested_key else sd, path)


def record_config(weights_dir: Path, weight_id: str, config: dict) -> None:
    """Record beside a file the network config it was made with, as `train export` and `weights import --preset` do
    (every loader and check then builds its network so)."""
    from facerestore_cli.weights.store import WeightStore

    WeightStore(weights_dir.parent).record_config(weight_id, config)


def write_random_parsenet(weights_dir: Path, seed: int = 14) -> Path:
    """A tiny ParseNet (TINY_PARSENET, as the tiny presets configure it) with seeded default initialisation, in
    facexlib's file layout. With the default seed, its labels on the tiny networks' faces cover part of each face
    with identity classes and part with classes the paste mask zeroes: both masks are partial, so they matter."""
    import torch

    from facerestore_cli.archs import build_arch

    torch.manual_seed(seed)
    path = weights_dir / "parsing_parsenet.pth"
    torch.save(build_arch("parsenet", TINY_PARSENET).state_dict(), path)
    record_config(weights_dir, "parsenet", TINY_PARSENET)
    return path


def write_random_arcface(weights_dir: Path, seed: int = 11) -> Path:
    """A full-size ArcFace IR-SE50 with seeded default initialisation in facexlib's layout (a 112² forward is
    cheap, and there is no tiny IR-SE)."""
    import torch

    from facerestore_cli.archs import build_arch

    torch.manual_seed(seed)
    path = weights_dir / "recognition_arcface_ir_se50.pth"
    torch.save(build_arch("arcface", {}).state_dict(), path)
    return path


def make_tiny_weights(weights_dir: Path) -> None:
    from facerestore_cli.archs import build_arch

    weights_dir.mkdir(parents=True, exist_ok=True)
    unet = randomize(build_arch("unet", TINY_UNET_AT_128), 1)
    swinir = randomize(build_arch("swinir_difface", TINY_SWINIR_AT_128), 2)
    write_official_layout(unet, weights_dir / "iddpm_ffhq512_ema500000.pth", None)
    write_official_layout(swinir, weights_dir / "swinir_restoration512_L1.pth", "state_dict")
    record_config(weights_dir, "difface-unet", TINY_UNET_AT_128)
    record_config(weights_dir, "difface-swinir", TINY_SWINIR_AT_128)
    for seed, (wid, file, config) in enumerate(TINY_BACKGROUNDS.values(), start=20):
        write_official_layout(randomize(build_arch("rrdbnet", config), seed), weights_dir / file, "params_ema", "")
        record_config(weights_dir, wid, config)


def write_derived_preset(path: Path, builtin: str, name: str, face_size: int, configs: dict, parameters=None) -> Path:
    """A built-in preset with tiny network configs (per component; the paste-back ParseNet and the Real-ESRGAN
    backgrounds always tiny) and some parameters changed, saved as YAML."""
    data = yaml.safe_load((REPO / "presets" / f"{builtin}.yaml").read_text())
    data["name"] = name
    data["face_size"] = face_size
    for role, (wid, _file, config) in TINY_BACKGROUNDS.items():
        data["components"][role] = {"weights": wid, "optional": True, "config": config}
    for role, config in {"paste_parser": TINY_PARSENET, **configs}.items():
        data["components"][role]["config"] = config
    data["parameters"].update(parameters or {})
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def write_tiny_preset(path: Path) -> Path:
    return write_derived_preset(path, "difface", "difface-tiny", TINY_FACE_SIZE,
                                {"estimator": TINY_SWINIR_AT_128, "prior": TINY_UNET_AT_128}, {"steps": 3})


@pytest.fixture(scope="session")
def tiny_home(tmp_path_factory) -> Path:
    require_shared()
    home = tmp_path_factory.mktemp("facerestore-home")
    make_tiny_weights(home / "weights")
    shutil.copy(RETINA_MOBILE, home / "weights" / RETINA_MOBILE.name)
    write_tiny_preset(home / "difface-tiny.yaml")
    return home


@contextlib.contextmanager
def home_environment(home: Path):
    """FACERESTORE_HOME = home and offline for the block (for module-scoped fixtures and scripts, which have no
    monkeypatch), restored afterwards."""
    saved = {k: os.environ.get(k) for k in ("FACERESTORE_HOME", "FACERESTORE_OFFLINE")}
    os.environ.update(FACERESTORE_HOME=str(home), FACERESTORE_OFFLINE="1")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def use_home(monkeypatch, home: Path) -> None:
    """Point facerestore at a test weights home, offline (nothing is ever downloaded in tests)."""
    monkeypatch.setenv("FACERESTORE_HOME", str(home))
    monkeypatch.setenv("FACERESTORE_OFFLINE", "1")


@pytest.fixture
def tiny_env(tiny_home, monkeypatch) -> Path:
    """FACERESTORE_HOME = the tiny home, offline. Yields the tiny preset path."""
    use_home(monkeypatch, tiny_home)
    return tiny_home / "difface-tiny.yaml"


# -- DR2 ---------------------------------------------------------------------------------------------------------
TINY_DR2_FACE_SIZE = 64


def tiny_dr2_configs():
    from tiny_configs import TINY_SPARNETHD, TINY_UNET_DR2

    return dict(TINY_UNET_DR2), dict(TINY_SPARNETHD)


def make_tiny_dr2_weights(weights_dir: Path) -> None:
    """Tiny random DR2 networks in the official layouts: plain state dicts (DR2_FFHQ.pkl, ffhq_p2.pt) and
    SPARNetHD with spectral-norm u/v buffers settled by two train-mode forwards (random u/v make σ meaningless)."""
    import torch

    from facerestore_cli.archs import build_arch

    unet_cfg, spar_cfg = tiny_dr2_configs()
    weights_dir.mkdir(parents=True, exist_ok=True)
    torch.save(randomize(build_arch("unet", unet_cfg), 3).state_dict(), weights_dir / "DR2_FFHQ.pkl")
    torch.save(randomize(build_arch("unet", unet_cfg), 4).state_dict(), weights_dir / "ffhq_p2.pt")
    torch.manual_seed(5)  # spectral norm draws its u/v buffers from the global generator when built
    spar = randomize(build_arch("sparnethd", spar_cfg), 5).train()
    with torch.no_grad():
        for _ in range(2):
            spar(torch.rand(1, 3, spar_cfg["size"], spar_cfg["size"], generator=torch.Generator().manual_seed(9)) * 2 - 1)
    torch.save(spar.eval().state_dict(), weights_dir / "SPARNetHD_FFHQ_DR2aug.pth")
    for wid, config in (("dr2-unet", unet_cfg), ("p2-ffhq", unet_cfg), ("dr2-sparnethd", spar_cfg)):
        record_config(weights_dir, wid, config)


def write_tiny_dr2_preset(path: Path) -> Path:
    unet_cfg, spar_cfg = tiny_dr2_configs()
    return write_derived_preset(path, "dr2", "dr2-tiny", TINY_DR2_FACE_SIZE, {"prior": unet_cfg, "enhancer": spar_cfg})


def extended_home(base: Path, tmp_path_factory, name: str, make_weights, write_preset) -> Path:
    """A copy of a session home with more weights and a preset `<name>-tiny.yaml` (never modified by tests)."""
    home = tmp_path_factory.mktemp(f"facerestore-home-{name}") / "home"
    shutil.copytree(base, home)
    make_weights(home / "weights")
    write_preset(home / f"{name}-tiny.yaml")
    return home


@pytest.fixture(scope="session")
def tiny_dr2_home(tiny_home, tmp_path_factory) -> Path:
    """A copy of the tiny home plus tiny DR2 networks."""
    return extended_home(tiny_home, tmp_path_factory, "dr2", make_tiny_dr2_weights, write_tiny_dr2_preset)


@pytest.fixture
def tiny_dr2_env(tiny_dr2_home, monkeypatch) -> Path:
    use_home(monkeypatch, tiny_dr2_home)
    return tiny_dr2_home / "dr2-tiny.yaml"


# -- ipc-guided --------------------------------------------------------------------------------------------------
# the paper's trained parts at toy size: the IPC as the substitute SwinIR, the conditional prior (6 in, 3 out) at the
# face size, the mask branch
TINY_IPC_PRIOR = {**TINY_UNET_AT_128, "in_channels": 6, "out_channels": 3}
TINY_IPC_MASK = {"image_size": TINY_FACE_SIZE, "in_channels": 4, "channels": 8, "levels": 2}


def make_tiny_ipc_paper_weights(weights_dir: Path, parts=("ipc", "prior", "mask")) -> None:
    """The paper's three trained parts at toy size (or some of them), random, in the layout `facerestore train export`
    writes."""
    import torch

    from facerestore_cli.archs import build_arch

    weights_dir.mkdir(parents=True, exist_ok=True)
    if "ipc" in parts:
        torch.save(randomize(build_arch("swinir_difface", TINY_SWINIR_AT_128), 41).state_dict(),
                   weights_dir / "ipc_swinir_512.pth")
        record_config(weights_dir, "ipc-swinir", TINY_SWINIR_AT_128)
    if "prior" in parts:
        torch.save(randomize(build_arch("unet", TINY_IPC_PRIOR), 42).state_dict(), weights_dir / "ipc_prior_512.pth")
        record_config(weights_dir, "ipc-prior", TINY_IPC_PRIOR)
    if "mask" in parts:
        mask = randomize(build_arch("ipc_mask", TINY_IPC_MASK), 43)
        with torch.no_grad():  # logits of order 1, not 0.01, and about half of them positive
            mask.tail.weight.mul_(200.0)
            mask.tail.bias.fill_(-1.0)
        torch.save(mask.state_dict(), weights_dir / "ipc_mask_512.pth")
        record_config(weights_dir, "ipc-mask", TINY_IPC_MASK)


def write_tiny_ipc_preset(path: Path) -> Path:
    return write_derived_preset(path, "ipc-guided", "ipc-tiny", TINY_FACE_SIZE,
                                {"ipc": TINY_SWINIR_AT_128, "ipc_substitute": TINY_SWINIR_AT_128,
                                 "prior": TINY_UNET_AT_128, "conditional_prior": TINY_IPC_PRIOR, "mask": TINY_IPC_MASK,
                                 "parser": TINY_PARSENET},
                                {"steps": 3, "id_mask": "proxy"})


@pytest.fixture(scope="session")
def tiny_ipc_home(tiny_home, tmp_path_factory) -> Path:
    """A copy of the tiny home plus a randomly initialised full-size ArcFace IR-SE50."""
    return extended_home(tiny_home, tmp_path_factory, "ipc", write_random_arcface, write_tiny_ipc_preset)


@pytest.fixture
def tiny_ipc_env(tiny_ipc_home, monkeypatch) -> Path:
    use_home(monkeypatch, tiny_ipc_home)
    return tiny_ipc_home / "ipc-tiny.yaml"


# -- diffbfr -------------------------------------------------------------------------------------------------------
# Conditional (6 in, 3 out) tiny UNets: IRM(-1) at a quarter of the face size, IRM(-2) at the face size; the TEM is the
# tiny DifFace UNet at 128 (the same file as difface-tiny's prior).
TINY_IRM1 = {**TINY_UNET_DIFFACE, "in_channels": 6, "out_channels": 3}
TINY_IRM2 = {**TINY_UNET_AT_128, "in_channels": 6, "out_channels": 3}
TINY_DIFFBFR_STEPS = {"irm1_steps": 4, "irm2_start": 600, "irm2_steps": 3, "tem_start": 100, "tem_steps": 2}


def make_tiny_diffbfr_weights(weights_dir: Path) -> None:
    """Tiny random IRM networks in the layout `facerestore train export` writes (a plain state dict)."""
    import torch

    from facerestore_cli.archs import build_arch

    weights_dir.mkdir(parents=True, exist_ok=True)
    torch.save(randomize(build_arch("unet", TINY_IRM1), 21).state_dict(), weights_dir / "diffbfr_irm1_128.pth")
    torch.save(randomize(build_arch("unet", TINY_IRM2), 22).state_dict(), weights_dir / "diffbfr_irm2_512.pth")
    record_config(weights_dir, "diffbfr-irm1", TINY_IRM1)
    record_config(weights_dir, "diffbfr-irm2", TINY_IRM2)


def write_tiny_diffbfr_preset(path: Path) -> Path:
    return write_derived_preset(path, "diffbfr", "diffbfr-tiny", TINY_FACE_SIZE,
                                {"irm1": TINY_IRM1, "irm2": TINY_IRM2, "tem": TINY_UNET_AT_128}, TINY_DIFFBFR_STEPS)


@pytest.fixture(scope="session")
def tiny_diffbfr_home(tiny_ipc_home, tmp_path_factory) -> Path:
    """A copy of the ipc home (tiny DifFace UNet as TEM, ArcFace for identity scores) plus tiny IRM networks."""
    return extended_home(tiny_ipc_home, tmp_path_factory, "diffbfr", make_tiny_diffbfr_weights, write_tiny_diffbfr_preset)


@pytest.fixture
def tiny_diffbfr_env(tiny_diffbfr_home, monkeypatch) -> Path:
    use_home(monkeypatch, tiny_diffbfr_home)
    return tiny_diffbfr_home / "diffbfr-tiny.yaml"


# -- eval's networks -------------------------------------------------------------------------------------------
def write_lpips_weights(weights_dir: Path) -> None:
    """LPIPS's networks: torchvision AlexNet with seeded default initialisation in its official layout, and LPIPS's
    real v0.1 linear layers (the lpips package ships them)."""
    import os

    import lpips
    import torch

    from facerestore_cli.archs import build_arch

    weights_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(31)
    torch.save(build_arch("tv_alexnet", {"num_classes": 1000}).state_dict(), weights_dir / "alexnet-owt-7be5be79.pth")
    shutil.copy(Path(os.path.dirname(lpips.__file__)) / "weights" / "v0.1" / "alex.pth", weights_dir / "alex.pth")


def write_metric_weights(weights_dir: Path) -> None:
    """eval's networks: LPIPS's, pytorch-fid's Inception with seeded default initialisation in its official layout,
    a random ArcFace, and the real RetinaFace mobile0.25."""
    import torch

    from facerestore_cli.archs import build_arch

    write_lpips_weights(weights_dir)
    torch.manual_seed(32)
    inception = build_arch("fid_inception", {"num_classes": 1008}).train()
    for layer in inception.modules():  # BatchNorm statistics of random images, so pool3 features are not ~0
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.momentum = None
    with torch.no_grad():
        inception(torch.rand(4, 3, 299, 299))
    torch.save(inception.eval().state_dict(), weights_dir / "pt_inception-2015-12-05-6726825d.pth")
    write_random_arcface(weights_dir)
    shutil.copy(RETINA_MOBILE, weights_dir / RETINA_MOBILE.name)


@pytest.fixture(scope="session")
def metric_home(tmp_path_factory) -> Path:
    require_shared()
    home = tmp_path_factory.mktemp("facerestore-home-eval")
    write_metric_weights(home / "weights")
    return home


@pytest.fixture(scope="session")
def trained_home(tiny_diffbfr_home, tmp_path_factory) -> Path:
    """The tiny diffbfr/ipc home plus LPIPS's networks, with every `train` target trained briefly and exported into it
    (trained_runs.py; the runs lie beside it)."""
    from trained_runs import train_and_export

    home = tmp_path_factory.mktemp("trained") / "home"
    shutil.copytree(tiny_diffbfr_home, home)
    write_lpips_weights(home / "weights")
    train_and_export(home)
    return home
