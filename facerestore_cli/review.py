"""`facerestore review OUT` and `run --review`: one static page to look at a run's results, with no server.

The page (OUT/review.html by default) holds every photo's record as JSON and the script that shows them a page of
cards at a time: before/after of the photo under a slider, each face's aligned crop before and after with its
identity score and gate verdict, the faces left out and why. Its pictures are small JPEGs in the folder beside it
(review_files/), named by a key of what they show (the photo's name, the input's and output's size and mtime, the
faces' landmarks), so a rebuild after a rerun makes only the thumbnails of photos that changed and removes the ones
no photo shows any more. The records come from OUT's run state (every shard's; the newest of each input), or from a
--report file."""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Callable

from facerestore_cli.errors import FacerestoreError, UsageError
from facerestore_cli.files import check_output_file

PHOTO_SIDE = 640  # the longer side of a photo's thumbnails
FACE_SIDE = 128  # a face crop's side
JPEG_QUALITY = 82
THUMBS_VERSION = 1  # in every thumbnail key: a change of the pictures' making makes them anew
INDEX_NAME = "index.json"
THUMB_FILE = re.compile(r"[0-9a-f]{16}_(?:b|a|\d+b|\d+a)\.jpg")


@dataclass
class Review:
    page: Path
    entries: int = 0
    made: int = 0  # photos whose thumbnails were made by this build
    reused: int = 0  # photos whose thumbnails an earlier build made
    problems: list[str] = field(default_factory=list)


def default_page(out: Path) -> Path:
    return out / "review.html"


def thumbs_folder(page: Path) -> Path:
    return page.with_name(page.stem + "_files")


def build(out: Path, report: Path | None = None, page: Path | None = None,
          warn: Callable[[str], None] = lambda text: None) -> Review:
    """Write the review page of OUT (from its run state, or from the records of `report`) and its thumbnails."""
    page = page or default_page(out)
    check_output_file(page, "-o", "review.html")
    records = _records_from_report(report) if report is not None else _records_from_state(out, warn)
    folder = thumbs_folder(page)
    folder.mkdir(parents=True, exist_ok=True)
    cached = _read_index(folder)
    review, index, entries = Review(page, entries=len(records)), {}, []
    for name, record, output in records:
        source = _existing(record.get("input"))
        output = _existing(output)
        key = _key(name, record, source, output)
        shown = cached.get(key)
        if shown is None or not _all_there(folder, key, shown):
            shown = _make_thumbnails(folder, key, record, source, output)
            review.made += 1
        else:
            review.reused += 1
        index[key] = shown
        if record.get("status") == "failed":  # its reason says why its input could not be shown
            shown = {**shown, "problem": None}
        elif shown["problem"]:
            review.problems.append(f"{name}: {shown['problem']}")
            warn(f"warning: review: {name}: {shown['problem']}")
        entries.append(_entry(name, record, key, shown, source, output, page.parent))
    from facerestore_cli.files import atomic_write_bytes

    atomic_write_bytes(page, _page_html(entries, out, folder.name).encode("utf-8"))
    atomic_write_bytes(folder / INDEX_NAME, json.dumps({"version": THUMBS_VERSION, "keys": index}).encode("utf-8"))
    _remove_stale(folder, index)
    return review


def _records_from_state(out: Path, warn) -> list[tuple[str, dict, Path | None]]:
    from facerestore_cli.state import read_entries

    if not out.is_dir():
        raise UsageError(f"{out} is not a folder", hint="give the output folder of a run (its -o)")
    entries, warnings = read_entries(out)
    for text in warnings:
        warn(f"warning: {text}")
    if not entries:
        raise UsageError(f"{out} holds no run state: it is not the output folder of a finished run",
                         hint="give the folder a run wrote into (its -o), or --report FILE")
    rows = []
    for rel, entry in sorted(entries.items()):
        record = entry.get("record") or {"status": {"done": "restored"}.get(entry["status"], entry["status"]),
                                         "reason": entry.get("reason")}
        output = entry.get("output")
        rows.append((rel, record, None if output is None else out / output))
    return rows


def _records_from_report(report: Path) -> list[tuple[str, dict, Path | None]]:
    try:
        lines = report.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the report {report}: {getattr(exc, 'strerror', None) or exc}") from None
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line) if line.strip() else None
        except json.JSONDecodeError as exc:
            raise UsageError(f"{report} line {number} is not JSON ({exc.msg})",
                             hint="give the --report file of a run") from None
        if isinstance(record, dict) and isinstance(record.get("input"), str):
            records.append(record)
    if not records:
        raise UsageError(f"{report} holds no photo records", hint="give the --report file of a run")
    inputs = [os.path.abspath(r["input"]) for r in records]
    common = os.path.commonpath(inputs) if len(inputs) > 1 else os.path.dirname(inputs[0])
    rows = []
    for path, record in zip(inputs, records):
        output = record.get("output")
        rows.append((Path(os.path.relpath(path, common)).as_posix(), record, None if output is None else Path(output)))
    return rows


def _existing(path) -> Path | None:
    return Path(path) if path and Path(path).is_file() else None


def _key(name: str, record: dict, source: Path | None, output: Path | None) -> str:
    """What the thumbnails of a photo show, hashed: a change to any of it makes them anew."""
    def stamp(path):
        if path is None:
            return None
        st = path.stat()
        return [str(path), st.st_size, st.st_mtime_ns]

    faces = [[f.get("index"), f.get("landmarks")] for f in record.get("faces") or []]
    what = [THUMBS_VERSION, name, stamp(source), stamp(output), faces]
    return hashlib.sha256(json.dumps(what).encode("utf-8")).hexdigest()[:16]


def _all_there(folder: Path, key: str, shown: dict) -> bool:
    names = [f"{key}_{side}.jpg" for side in ("b", "a") if shown[side]]
    names += [f"{key}_{i}{side}.jpg" for i in shown["crops"] for side in ("b", "a")]
    return all((folder / n).is_file() for n in names)


def _make_thumbnails(folder: Path, key: str, record: dict, source: Path | None, output: Path | None) -> dict:
    """The photo's before/after thumbnails and each face's aligned crops; what was made, and why not the rest."""
    from facerestore_cli.imageio import read_image

    shown = {"b": False, "a": False, "w": None, "h": None, "crops": [], "problem": None}
    pictures, problems = {}, []
    for side, path, what in (("b", source, "input"), ("a", output, "output")):
        if path is None:
            problems.append(f"the {what} {record[what]} is not there (moved or deleted since the run, or a path "
                            f"relative to another folder)" if record.get(what) else None)
            continue
        try:
            pictures[side] = read_image(path, max_pixels=None).rgb
        except FacerestoreError as exc:
            problems.append(f"the {what} {path} cannot be read: {exc.message}")
    if pictures:
        first = next(iter(pictures.values()))
        height, width = first.shape[:2]
        scale = min(1.0, PHOTO_SIDE / max(height, width))
        shown["w"], shown["h"] = max(1, round(width * scale)), max(1, round(height * scale))
        for side, rgb in pictures.items():
            _save(folder / f"{key}_{side}.jpg", _resized(rgb, shown["w"], shown["h"])[..., ::-1])
            shown[side] = True
    if len(pictures) == 2:
        from facerestore_cli.sheets import aligned_crop

        scale = pictures["a"].shape[1] / pictures["b"].shape[1]
        for face in record.get("faces") or []:
            try:
                before = aligned_crop(pictures["b"], face, size=FACE_SIDE)
                after = aligned_crop(pictures["a"], face, scale, size=FACE_SIDE)
            except ValueError as exc:
                problems.append(f"face #{face.get('index')}: {exc}")
                continue
            _save(folder / f"{key}_{face['index']}b.jpg", before)
            _save(folder / f"{key}_{face['index']}a.jpg", after)
            shown["crops"].append(face["index"])
    shown["problem"] = "; ".join(p for p in problems if p) or None
    return shown


def _resized(rgb, width: int, height: int):
    import cv2

    from facerestore_cli.pixels import to_uint8

    image = to_uint8(rgb)
    if image.shape[1] == width and image.shape[0] == height:
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def _save(path: Path, bgr) -> None:
    import cv2
    import numpy as np

    from facerestore_cli.files import atomic_write_bytes
    from facerestore_cli.sheets import encode

    atomic_write_bytes(path, encode(np.ascontiguousarray(bgr), ".jpg", [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]))


def _href(path: Path | None, base: Path) -> str | None:
    if path is None:
        return None
    return urllib.parse.quote(Path(os.path.relpath(os.path.abspath(path), os.path.abspath(base))).as_posix())


def _entry(name: str, record: dict, key: str, shown: dict, source, output, base: Path) -> dict:
    """One photo as the page's script reads it."""
    status = record.get("status")
    earlier = status == "skipped"
    faces = []
    for face in record.get("faces") or []:
        identity = face.get("identity") or {}
        gate = face.get("gate") or {}
        faces.append({"index": face.get("index"), "crop": face.get("index") in shown["crops"],
                      "identity": gate.get("identity", identity.get("vs_input")),
                      "vs_estimate": identity.get("vs_estimate"), "gate": gate.get("action"),
                      "threshold": gate.get("threshold"), "kept": face.get("kept"),
                      "samples": len(face["samples"]) if face.get("samples") else None})
    return {"name": name, "status": record.get("previous_status") if earlier else status, "earlier": earlier,
            "reason": record.get("reason") if not earlier else None, "thumb": key, "w": shown["w"], "h": shown["h"],
            "before": shown["b"], "after": shown["a"], "problem": shown["problem"],
            "input": _href(source, base), "output": _href(output, base), "faces": faces,
            "skipped": [{"index": s.get("index"), "reason": s.get("reason")} for s in record.get("skipped_faces") or []]}


def _page_html(entries: list[dict], out: Path, folder: str) -> str:
    data = {"entries": entries, "thumbs": urllib.parse.quote(folder), "folder": str(out.absolute()),
            "made": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    # inside <script>: no "<", ">" or "&" may end the element early
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    template = resources.files("facerestore_cli").joinpath("assets/review.html").read_text(encoding="utf-8")
    return template.replace("__DATA__", text, 1)


def _read_index(folder: Path) -> dict:
    try:
        document = json.loads((folder / INDEX_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    keys = document.get("keys") if isinstance(document, dict) and document.get("version") == THUMBS_VERSION else None
    return keys if isinstance(keys, dict) else {}


def _remove_stale(folder: Path, index: dict) -> None:
    for path in folder.iterdir():
        if THUMB_FILE.fullmatch(path.name) and path.name[:16] not in index:
            path.unlink(missing_ok=True)


def report_line(review: Review) -> str:
    return (f"review: {review.page} ({review.entries} photos; thumbnails made for {review.made}, kept for "
            f"{review.reused})")
