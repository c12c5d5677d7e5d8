"""An output folder as runs leave it, made without running a network: what the review page's browser tests and its
10,000-photo benchmark (benchmarks/review_scale.py) show. Inputs and outputs are hard links of a few small copies of
the photos in ../shared; every photo has a state entry holding a report record with faces at plausible landmarks,
identity scores spread over [0, 1), some faces gated, some left out, some photos failed."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

SIDE = 320
# five points of a face in the middle of a SIDE-wide picture (eyes, nose, mouth corners)
LANDMARKS = [[130.0, 110.0], [190.0, 110.0], [160.0, 140.0], [137.0, 172.0], [183.0, 172.0]]


def photo_record(number: int, source: str, output: str | None) -> dict:
    """Photo `number`'s record: every 10th failed, every 7th with a gated face, every 5th with a face left out."""
    if number % 10 == 3:
        return {"input": source, "output": None, "status": "failed", "reason": f"photo {number}: truncated JPEG data",
                "faces": [], "skipped_faces": []}
    faces = []
    for index in range(2):
        identity = round(((number * 37 + index * 11) % 100) / 100, 4)
        gated = number % 7 == 0 and index == 0
        faces.append({"index": index, "landmarks": [[x + 12 * index, y] for x, y in LANDMARKS],
                      "identity": {"vs_input": identity, "vs_estimate": None}, "samples": None, "kept": None,
                      "gate": {"identity": identity, "threshold": 0.5, "action": "original" if gated else "pasted"}})
        if gated:
            faces[-1]["gate"]["identity"] = faces[-1]["identity"]["vs_input"] = round(identity / 3, 4)
    skipped = [{"index": 2, "box": [1, 1, 20, 20], "score": 0.81, "reason": "eye distance 3.1 px < 5"}] \
        if number % 5 == 0 else []
    return {"input": source, "output": output, "status": "restored", "reason": None, "faces": faces,
            "skipped_faces": skipped}


def make_output(root: Path, count: int, photos: list[Path]) -> Path:
    """root/out holding `count` photos' outputs and state (inputs in root/in); returns the output folder."""
    from facerestore_cli.state import RunState

    bases = root / "bases"
    bases.mkdir(parents=True)
    made = []
    for i, photo in enumerate(photos):
        image = Image.open(photo).convert("RGB")
        image = image.resize((SIDE, max(1, round(image.height * SIDE / image.width))), Image.BICUBIC)
        made.append(bases / f"{i}.jpg")
        image.save(made[-1], quality=85)
    inputs, out = root / "in", root / "out"
    inputs.mkdir()
    out.mkdir()
    state = RunState(out)
    for number in range(count):
        rel = f"photo-{number:05d}.jpg"
        base = made[number % len(made)]
        os.link(base, inputs / rel)
        record = photo_record(number, str(inputs / rel), str(out / rel))
        if record["status"] == "restored":
            os.link(base, out / rel)
        st = os.stat(inputs / rel)
        state.record(rel, inputs / rel, out / rel if record["output"] else None,
                     "done" if record["status"] == "restored" else record["status"], record["reason"], "signature",
                     fingerprint={"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": None}, report=record)
    state.flush()
    return out
