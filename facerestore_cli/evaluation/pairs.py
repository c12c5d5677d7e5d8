"""Which files `eval` compares: each restored image with the ground truth (and the input) of the same relative path,
whatever their extensions (`a.png` ↔ `a.jpg`); every file left without its partner is a problem with its reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from facerestore_cli.discover import Discovery, folder_images
from facerestore_cli.errors import NoInputsError, UsageError


@dataclass(frozen=True)
class Pair:
    key: str  # the relative path without its extension
    restored: Path
    truth: Path | None = None
    input: Path | None = None


@dataclass
class Pairing:
    pairs: list[Pair] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (file, why it is left out)


def image_index(folder: Path, what: str) -> tuple[dict[str, Path], list[tuple[str, str]]]:
    """Every image under folder by its relative path without extension; two images with one key are a problem."""
    if not folder.is_dir():
        raise UsageError(f"{what} {folder} is not a folder")
    index: dict[str, Path] = {}
    problems = []
    for path, rel in folder_images(Discovery(), folder, recursive=True):
        key = str(PurePosixPath(rel).with_suffix(""))
        if key in index:
            problems.append((str(path), f"{what} has two images for {key}: {index[key].name} and {path.name}"))
            continue
        index[key] = path
    if not index:
        raise NoInputsError(f"{what} {folder} holds no images")
    return index, problems


def pair_folders(restored: Path, truth: Path | None, inputs: Path | None) -> Pairing:
    """The pairs of one restored folder with the ground-truth folder and/or the input folder."""
    found, problems = image_index(restored, "restored folder")
    references = {name: image_index(folder, name) for name, folder in (("ground truth", truth), ("input", inputs))
                  if folder is not None}
    pairing = Pairing(problems=list(problems))
    for name, (index, more) in references.items():
        pairing.problems += more
        pairing.problems += [(str(path), f"no restored image for this {name} ({key})")
                             for key, path in sorted(index.items()) if key not in found]
    for key, path in sorted(found.items()):
        missing = [name for name, (index, _) in references.items() if key not in index]
        if missing:
            pairing.problems.append((str(path), f"no {' and no '.join(missing)} image for {key}"))
            continue
        pairing.pairs.append(Pair(key, path, references.get("ground truth", ({}, []))[0].get(key),
                                  references.get("input", ({}, []))[0].get(key)))
    return pairing
