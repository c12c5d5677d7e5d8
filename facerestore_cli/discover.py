"""Input discovery: files and folders → jobs (source, relative path, mirrored destination)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from collections.abc import Iterator
from pathlib import Path

from facerestore_cli.errors import UsageError
from facerestore_cli.picture import EXTENSIONS, output_format

MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)


HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}

# A file named like an image whose content is not one (zero bytes, text, junk) is kept as a job so that it fails
# with its reason: in an archive that is damage to report, not clutter to skip.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".png", ".gif", ".tif", ".tiff", ".bmp", ".webp", ".heic", ".heif", ".hif"}


def sniff_image(path: Path) -> str | None:
    """The image format from the file's first bytes (content, not extension), or None."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS:
        return "HEIF"
    for magic, fmt in MAGIC:
        if head.startswith(magic):
            return fmt
    return None


@dataclass(frozen=True)
class Job:
    src: Path
    rel: str  # POSIX-style path relative to its input root; also the identity used for seeding
    dest: Path


@dataclass
class Discovery:
    jobs: list[Job] = field(default_factory=list)
    skipped_hidden: int = 0
    skipped_not_image: int = 0
    not_image_examples: list[str] = field(default_factory=list)  # a few names, for "no input images found"

    def skipped_note(self) -> str:
        """What was passed over, for a person: '3 not images (e.g. notes.txt, a.psd), 2 hidden'."""
        parts = []
        if self.skipped_not_image:
            parts.append(f"{self.skipped_not_image} not images (e.g. {', '.join(self.not_image_examples)})")
        if self.skipped_hidden:
            parts.append(f"{self.skipped_hidden} hidden")
        return ", ".join(parts)


def _walk(root: Path, recursive: bool, exclude: Path | None):
    if not recursive:
        for entry in sorted(root.iterdir()):
            yield entry
        return
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if exclude is None or (here / d).resolve() != exclude)
        for name in sorted(filenames):
            yield here / name


def read_list(source: str, null_separated: bool = False) -> list[str]:
    """Paths from --files-from: a file, or '-' for standard input; one per line (or NUL-separated)."""
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read --files-from {source}: {exc.strerror}") from None
    sep = b"\0" if null_separated else b"\n"
    items = [p.decode("utf-8", "surrogateescape").rstrip("\r") if not null_separated else p.decode("utf-8", "surrogateescape")
             for p in data.split(sep)]
    return [p for p in items if p]


def output_name(src: Path, dest: Path, fmt: str | None) -> Path:
    """The output keeps the input's name unless its format changes (--format, or a format we cannot write, such
    as GIF, which is written as PNG): then the extension follows the format written."""
    content = sniff_image(src)
    if content is None:
        return dest
    written = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP", "tiff": "TIFF"}[fmt] if fmt else output_format(content)
    if written == content:
        return dest
    return dest.with_suffix(EXTENSIONS[written])


def discover(inputs: list[Path], output: Path, recursive: bool = False, fmt: str | None = None,
             listed: list[Path] = (), base: Path | None = None) -> Discovery:
    """Expand files and folders into jobs.

    Folders: one input folder maps to OUT, several to OUT/<folder name>/; hidden entries and non-images (by
    content, unless named like an image, which then fails with its reason, as a dangling link does) are skipped and
    counted. Named files (`inputs` that are files, and `listed`, the --files-from paths) mirror their paths relative
    to `base`, or to their common folder. A named input that does not exist is a usage error; a listed one that does
    not exist is a job that fails with its reason (a list made earlier may name files deleted since)."""
    found = Discovery()
    out_resolved = output.resolve()
    for item in inputs:
        if not item.exists() and not item.is_symlink():
            raise UsageError(f"input not found: {item}")
    folders = [p for p in inputs if p.is_dir()]
    named = [p for p in inputs if not p.is_dir()] + [p for p in listed if not p.is_dir()]
    for folder in folders:
        _add_folder(found, folder, output, out_resolved, recursive, prefix=folder.resolve().name + "/" if len(folders) > 1 else "")
    for listed_folder in (p for p in listed if p.is_dir()):
        raise UsageError(f"--files-from names a folder, {listed_folder}", hint="list files, or pass folders as arguments")
    root = _named_root(named, base)
    for path in named:
        rel = Path(os.path.relpath(path.absolute(), root)).as_posix()
        found.jobs.append(Job(path, rel, output / rel))
    found.jobs = [Job(j.src, j.rel, output_name(j.src, j.dest, fmt)) for j in found.jobs]
    seen: dict[Path, Path] = {}
    for job in found.jobs:
        if job.dest in seen:
            raise UsageError(f"two inputs would write the same output {job.dest}: {seen[job.dest]} and {job.src}",
                             hint="pass them in separate runs or with different output folders")
        seen[job.dest] = job.src
        if job.src.exists() and job.dest.resolve() == job.src.resolve():
            raise UsageError(f"output {job.dest} would overwrite its input", hint="choose another -o folder")
    return found


def _named_root(named: list[Path], base: Path | None) -> Path:
    """The folder named files' outputs are relative to: --base (which must hold them all), else their common one."""
    if base is not None:
        root = base.absolute()
        outside = [p for p in named if not p.absolute().is_relative_to(root)]
        if outside:
            raise UsageError(f"{outside[0]} is not inside --base {base}", hint="--base must hold every named file")
        return root
    return Path(os.path.commonpath([p.absolute().parent for p in named])) if named else Path.cwd()


def _add_folder(found: Discovery, item: Path, output: Path, out_resolved: Path, recursive: bool, prefix: str) -> None:
    root = item.resolve()
    if root == out_resolved:
        raise UsageError(f"output folder {output} is the input folder {item}: results would overwrite the photos",
                         hint="choose another -o folder")
    # Earlier results are skipped only where the output folder lies inside this input folder; an input folder inside
    # the output folder (run out/raw -o out) holds real inputs.
    inside = out_resolved if out_resolved.is_relative_to(root) else None
    for path, rel in folder_images(found, item, recursive, prune=out_resolved, inside=inside):
        found.jobs.append(Job(path, prefix + rel, output / (prefix + rel)))


def folder_images(found: Discovery, folder: Path, recursive: bool, prune: Path | None = None,
                  inside: Path | None = None) -> Iterator[tuple[Path, str]]:
    """Each image under folder with its relative path (posix), in name order folder by folder: hidden entries
    and files that are not images (by content, unless named like an image) are passed over and counted in found.
    prune: a (resolved) folder not descended into; inside: a (resolved) folder whose files are passed over."""
    for path in _walk(folder, recursive, prune):
        rel_parts = path.relative_to(folder).parts
        if any(part.startswith(".") for part in rel_parts):
            found.skipped_hidden += 1
            continue
        dangling = path.is_symlink() and not path.exists()
        if not dangling and not path.is_file():
            continue
        if inside is not None and not dangling and path.resolve().is_relative_to(inside):
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES and (dangling or sniff_image(path) is None):
            found.skipped_not_image += 1
            if len(found.not_image_examples) < 3:
                found.not_image_examples.append(path.name)
            continue
        yield path, "/".join(rel_parts)
