"""Pinned outputs: one fixed-seed `facerestore run` per preset, with tiny random networks in the official layouts,
on ../shared/data/photos/old-portrait-01.jpg (248×189, four faces of ~47 px and a hand DifFace's front end detects,
kept with --min-score 0). The restored face crops (--save-faces) and the whole pasted photo (written as PNG) are
stored in tests/pinned/<case>.npz, together with the faces' report fields (box, seed, paste mask, identity mask), and test_pinned_outputs.py compares a fresh run
with them. Any change in the math, the seeding, the masks or the paste-back shows up there.

Regenerate on purpose, never to make a failing test pass without knowing why:
    make pinned          # = .venv/bin/python tests/pinned_outputs.py --write   (--write CASE… for some cases)
Legitimate reasons are listed in the README's development section (a deliberate change of a method's output, a
new torch pin that changes default initialisation, a new detector front end).

Across machines. Another CPU's kernels (AVX2, AVX-512, ARM NEON/SVE), or another thread count, round differently in
the last bits; a pinned case must not amplify that. Every case here was measured under four kernel settings
(benchmarks/cross_kernel.py: native AVX-512, AVX2, ATen's scalar kernels, one thread): the worst spread is 1 level
in 0.11 % of values (diffbfr's photo, scalar), against a tolerance of 1 level in 0.5 %. ipc-guided is pinned at its
preset's guidance scale (100), where guidance changes 15 % of the face values and the spread stays at 1 level in
0.06 %. It is not pinned at large scales: the ArcFace gradient is piecewise constant (PReLU units switching), so a
last-bit difference that flips one unit moves the correction s·∇L by s times a jump; on the random tiny networks
those jumps stay within a level up to s ≈ 300, reach 2 levels at s = 500 and 24 at s = 1000, and feed back through
the remaining steps (s = 20000: up to 255 levels in 4–8 % of values between kernel sets, however the mask is built).
ipc-guided-paper (the trained IPC, conditional prior and learned mask, random and tiny) is pinned at s = 20, where
guidance changes 5 % of the face values (up to 62 levels) and the spread stays at 1 level in 0.13 %: the learned M
is binary (§3.2.1), so a pixel of Eq. 8's M′ = [|g_φ(x) − x| > 0.3] on the threshold, which another kernel set
rounds to the other side, changes the branch's mask near it, and at s = 100 moves such pixels by up to 4 levels.
test_pinned_outputs.py also runs every case under the scalar kernels (one thread per process, two processes side by
side), so any machine checks two kernel sets.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from conftest import (  # noqa: E402
    PHOTOS,
    RETINA_MOBILE,
    home_environment,
    make_tiny_diffbfr_weights,
    make_tiny_dr2_weights,
    make_tiny_ipc_paper_weights,
    make_tiny_weights,
    write_random_arcface,
    write_random_parsenet,
    write_tiny_diffbfr_preset,
    write_tiny_dr2_preset,
    write_tiny_ipc_preset,
    write_tiny_preset,
)

PINNED = Path(__file__).parent / "pinned"
PHOTO = PHOTOS / "old-portrait-01.jpg"
# The stated tolerance. Outputs are 8-bit: a pixel may differ by one level where float rounding on another CPU
# lands on the other side of a .5 boundary; anything more, or more than a few such pixels, is a real change.
MAX_LEVEL_DIFF = 1
MAX_CHANGED_FRACTION = 0.005
FACE_FIELDS = ("index", "box", "seed", "mask", "id_mask", "configuration")

# case → (preset writer, extra weights, extra CLI arguments). difface and ipc-guided paste with ParseNet (and
# ipc-guided builds its identity mask with it); dr2 pastes with the square mask: both paste paths are pinned.
CASES = {
    "difface": (write_tiny_preset, ("parsenet",), ()),
    "dr2": (write_tiny_dr2_preset, (), ()),
    # the preset's guidance scale (100), with ParseNet's identity mask (the tiny preset's default is the proxy)
    "ipc-guided": (write_tiny_ipc_preset, ("parsenet", "arcface"), ("--id-mask", "parsing")),
    # Diffuse and Restore's own configuration: trained IPC, conditional prior (ancestral DDPM), learned mask
    "ipc-guided-paper": (write_tiny_ipc_preset, ("arcface", "ipc-paper"), ("--id-mask", "auto", "--guidance-scale", "20")),
    "diffbfr": (write_tiny_diffbfr_preset, (), ()),
}
# Environment settings that hold a process to other CPU kernels than this machine's best (benchmarks/cross_kernel.py
# measures with them; test_pinned_outputs.py runs every case under "scalar").
KERNEL_SETTINGS = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "DNNL_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "scalar": {"ATEN_CPU_CAPABILITY": "default", "DNNL_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    "1-thread": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
}
# --min-score 0: the five detections of DifFace's front end (the faint fifth, a hand, too), as they were pinned
RUN_ARGS = ("--detector", "retinaface_mobile0.25", "--batch-size", "3", "--seed", "7", "--format", "png",
            "--save-faces", "--min-score", "0", "-q")


def make_home(case: str, home: Path, extras: tuple[str, ...] | None = None) -> Path:
    """A FACERESTORE_HOME for one case (extra weights: the case's unless given); returns its preset file."""
    write_preset, case_extras, _args = CASES[case]
    extras = case_extras if extras is None else extras
    weights = home / "weights"
    make_tiny_weights(weights)
    if case == "dr2":
        make_tiny_dr2_weights(weights)
    if case == "diffbfr":
        make_tiny_diffbfr_weights(weights)
    shutil.copy(RETINA_MOBILE, weights / RETINA_MOBILE.name)
    if "parsenet" in extras:
        write_random_parsenet(weights)
    if "arcface" in extras:
        write_random_arcface(weights)
    if "ipc-paper" in extras:
        make_tiny_ipc_paper_weights(weights)
    return write_preset(home / f"{case}-tiny.yaml")


def run_case(case: str, workdir: Path, args: tuple[str, ...] | None = None, extras: tuple[str, ...] | None = None,
             photo: Path = PHOTO) -> dict[str, np.ndarray]:
    """Run the real CLI for one case (its arguments and extra weights unless given); returns {"faces":
    [N, S, S, 3] uint8, "photo": [H, W, 3] uint8, "records": the faces' report fields as a JSON string}."""
    from PIL import Image

    from facerestore_cli.cli import main

    home, out, report = workdir / "home", workdir / "out", workdir / "report.jsonl"
    preset = make_home(case, home, extras)
    with home_environment(home):
        try:
            main(["run", str(photo), "-o", str(out), "--preset", str(preset), "--report", str(report),
                  *RUN_ARGS, *(CASES[case][2] if args is None else args)])
            code = 0
        except SystemExit as exc:
            code = exc.code
    if code != 0:
        raise AssertionError(f"pinned run of {case} exited {code}")
    record = json.loads(report.read_text().splitlines()[0])
    faces = [{key: face.get(key) for key in FACE_FIELDS} for face in record["faces"]]
    crops = [np.asarray(Image.open(out / "_faces" / f"{photo.stem}_face{f['index']:02d}.png")) for f in faces]
    photo = np.asarray(Image.open(out / f"{photo.stem}.png").convert("RGB"))
    return {"faces": np.stack(crops), "photo": photo, "records": np.array(json.dumps(faces, sort_keys=True))}


def compare(case: str, fresh: dict[str, np.ndarray], pinned: dict[str, np.ndarray]) -> list[str]:
    """What differs beyond the stated tolerance (empty when the fresh run matches the pinned one)."""
    problems = []
    fresh_faces, pinned_faces = json.loads(str(fresh["records"])), json.loads(str(pinned["records"]))
    for a, b in zip(fresh_faces, pinned_faces):
        for key in FACE_FIELDS:
            same = np.allclose(a[key], b[key], atol=0.02) if key == "box" else a.get(key) == b.get(key)
            if not same:
                problems.append(f"{case}: face {b['index']} {key} is {a.get(key)}, pinned {b.get(key)}")
    if len(fresh_faces) != len(pinned_faces):
        problems.append(f"{case}: {len(fresh_faces)} faces, pinned {len(pinned_faces)}")
    for name in ("faces", "photo"):
        a, b = fresh[name].astype(np.int16), pinned[name].astype(np.int16)
        if a.shape != b.shape:
            problems.append(f"{case}: {name} shape {a.shape}, pinned {b.shape}")
            continue
        diff = np.abs(a - b)
        changed = float((diff > 0).mean())
        if diff.max() > MAX_LEVEL_DIFF or changed > MAX_CHANGED_FRACTION:
            problems.append(f"{case}: {name} differs by up to {diff.max()} levels in {changed:.2%} of values "
                            f"(tolerance: {MAX_LEVEL_DIFF} level in at most {MAX_CHANGED_FRACTION:.1%})")
    return problems


def run_cases_under(setting: str, cases, folder: Path, processes: int = 1) -> dict[str, dict[str, np.ndarray]]:
    """run_case for each case in fresh processes under KERNEL_SETTINGS[setting]; their outputs by case. processes > 1:
    that many processes side by side, the cases dealt out among them, each held to one thread (so on top of the
    setting's kernels they also run 1-thread's reduction orders)."""
    import os
    import subprocess

    groups = [list(cases)[k::processes] for k in range(processes)]
    env = {**os.environ, **KERNEL_SETTINGS[setting], **(KERNEL_SETTINGS["1-thread"] if processes > 1 else {})}
    running = []
    for group in filter(None, groups):
        code = ("import sys, tempfile, numpy as np; from pathlib import Path; sys.path.insert(0, %r)\n"
                "from pinned_outputs import run_case\n"
                "for case in %r:\n"
                "    with tempfile.TemporaryDirectory() as tmp:\n"
                "        np.savez(Path(%r) / f'{case}.npz', **run_case(case, Path(tmp)))\n") % (
            str(Path(__file__).parent), group, str(folder))
        running.append(subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True))
    for process in running:
        _out, err = process.communicate()
        if process.returncode != 0:
            raise AssertionError(f"pinned runs under {setting} kernels failed:\n{err[-3000:]}")
    outputs = {}
    for case in cases:
        with np.load(folder / f"{case}.npz") as data:
            outputs[case] = {key: data[key] for key in data.files}
    return outputs


def load(case: str) -> dict[str, np.ndarray]:
    with np.load(PINNED / f"{case}.npz") as data:
        return {key: data[key] for key in data.files}


def write(cases) -> None:
    PINNED.mkdir(exist_ok=True)
    for case in cases:
        with tempfile.TemporaryDirectory() as tmp:
            arrays = run_case(case, Path(tmp))
        np.savez_compressed(PINNED / f"{case}.npz", **arrays)
        seeds = [f["seed"] for f in json.loads(str(arrays["records"]))]
        print(f"{case}: {len(seeds)} faces {arrays['faces'].shape[1:3]}, photo {arrays['photo'].shape[:2]} "
              f"→ {PINNED / f'{case}.npz'} ({(PINNED / f'{case}.npz').stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    if sys.argv[1:2] != ["--write"] or not set(sys.argv[2:]) <= set(CASES):
        sys.exit(f"usage: python tests/pinned_outputs.py --write [CASE …]   (regenerates tests/pinned/<case>.npz, every "
                 f"case by default; cases: {', '.join(CASES)}; see its docstring)")
    write(sys.argv[2:] or CASES)
