"""The input corpus through read_image, and write_image round trips, conversions, options and failure safety."""

from __future__ import annotations

import io
import os
import resource
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from corpus import CORPUS, CORPUS_NAMES, DESCRIPTION, check_picture, make_corpus
from facerestore_cli import imagewrite
from facerestore_cli.errors import InputError
from facerestore_cli.imageio import EXTENSIONS, Picture, output_format, read_image, write_image
from facerestore_cli.imagewrite import HOLDS

OK_NAMES = [name for name in CORPUS_NAMES if CORPUS[name][1][0] == "ok"]
PROVENANCE = "facerestore 0.1.0; method=difface; steps=100; eta=0.5; start_t=400; seed=12345"
TARGETS = ("png", "jpg", "webp", "tiff")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("corpus")
    return folder, make_corpus(folder)


def read(corpus, name: str) -> Picture:
    folder, expected = corpus
    if name not in expected:
        pytest.skip(f"{name} needs ../shared")
    return read_image(folder / name)


def exif_of(picture: Picture) -> Image.Exif:
    exif = Image.Exif()
    if picture.exif:
        exif.load(picture.exif)
    return exif


def lossless(fmt: str, picture: Picture) -> bool:
    return fmt in ("PNG", "TIFF", "BMP") or (fmt == "WEBP" and picture.encoder.get("webp_lossless") is True)


def test_make_corpus_is_fast_and_complete(tmp_path):
    start = time.perf_counter()
    expected = make_corpus(tmp_path / "c")
    assert time.perf_counter() - start < 1.0
    assert set(expected) <= set(CORPUS_NAMES) and len(expected) >= len(CORPUS_NAMES) - 1
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == sorted(expected)
    for status, detail in expected.values():
        assert status in ("ok", "error") and isinstance(detail, dict if status == "ok" else str)


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_read_corpus(corpus, name):
    folder, expected = corpus
    if name not in expected:
        pytest.skip(f"{name} needs ../shared")
    status, detail = expected[name]
    if status == "error":
        with pytest.raises(InputError) as info:
            read_image(folder / name)
        assert detail in info.value.message
    else:
        picture = read_image(folder / name)
        assert check_picture(picture, detail) == []
        assert picture.rgb.dtype == (np.uint16 if detail["bit_depth"] == 16 else np.uint8)
        assert picture.alpha is None or picture.alpha.dtype == picture.rgb.dtype


def test_corpus_pixels_are_right(corpus):
    rotated = read(corpus, "rotated.jpg")
    stored = np.asarray(Image.open(corpus[0] / "rotated.jpg"))
    np.testing.assert_array_equal(rotated.rgb, np.rot90(stored, -1))  # orientation 6: 90° clockwise
    assert b'tiff:Orientation="1"' in rotated.xmp and exif_of(rotated)[0x0112] == 1
    palette = read(corpus, "palette-transparent.png")
    assert set(np.unique(palette.alpha)) <= {0, 255} and (palette.alpha == 0).any()
    assert read(corpus, "one-pixel.png").rgb.tolist() == [[[200, 120, 80]]]
    gray = read(corpus, "gray16.png")
    assert (gray.rgb[..., 0] == gray.rgb[..., 2]).all() and gray.rgb.max() > 255


def test_huge_header_is_refused_without_decoding(corpus):
    folder, _ = corpus
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(InputError, match="above the limit"):
        read_image(folder / "huge.png")
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 5_000_000  # what proves nothing was decoded; the time only needs to be short
    assert elapsed < 2.0, elapsed
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 50_000  # KiB: far below 30 GB


def test_partial_images_refused_even_with_load_truncated_images(corpus, tmp_path, monkeypatch):
    folder, _ = corpus
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    for name in ("truncated.jpg", "cut-progressive.jpg"):
        with pytest.raises(InputError, match="truncated or corrupt JPEG data"):
            read_image(folder / name)
    for name in ("rgba.png", "gray.png", "rgb16.png", "picture.bmp", "rgb8.tif"):
        data = (folder / name).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) * 2 // 3])
        with pytest.raises(InputError, match="truncated"):
            read_image(tmp_path / name)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # put back for whoever set it


# ------------------------------------------------------------------------------------------ round trips


def assert_metadata_kept(source: Picture, back: Picture, target: str) -> None:
    holds = HOLDS[target]
    assert back.icc_profile == (source.icc_profile if "ICC profile" in holds else None)
    assert back.xmp == (source.xmp if "XMP" in holds else None)
    assert back.iptc == (source.iptc if "IPTC" in holds else None)
    if source.exif and "EXIF" in holds:
        before, after = exif_of(source), exif_of(back)
        assert after.get(0x0112, 1) == 1
        for tag in set(before) - {0x0112, 0x8769, 0x8825}:
            assert after.get(tag) == before[tag], hex(tag)
        assert after.get_ifd(0x8769).get(0x9003) == before.get_ifd(0x8769).get(0x9003)
    else:
        assert back.exif is None
    if target == "PNG":
        assert back.text == source.text
    elif target == "JPEG":
        assert back.text.get("Comment") == source.text.get("Comment")


def assert_pixels(source: Picture, back: Picture, exact: bool) -> None:
    if source.rgb.dtype == np.uint16 and back.rgb.dtype == np.uint8:
        expected = ((source.rgb.astype(np.uint32) + 128) // 257).astype(np.uint8)
    else:
        expected = source.rgb
    if exact:
        np.testing.assert_array_equal(back.rgb, expected)
        if back.alpha is not None:
            alpha = source.alpha if source.alpha.dtype == back.alpha.dtype else expected_alpha(source.alpha)
            np.testing.assert_array_equal(back.alpha, alpha)
    else:
        assert np.abs(back.rgb.astype(float) - expected).mean() < 4.0


def expected_alpha(alpha: np.ndarray) -> np.ndarray:
    return ((alpha.astype(np.uint32) + 128) // 257).astype(np.uint8)


@pytest.mark.parametrize("name", OK_NAMES)
def test_roundtrip_in_kind(corpus, tmp_path, name):
    source = read(corpus, name)
    target = output_format(source.format)
    out = tmp_path / ("out" + EXTENSIONS[target])
    notes = write_image(source, out)
    kept_quality = [n for n in notes if n.startswith("JPEG written at the input's quality")]
    assert len(kept_quality) == (source.format == "JPEG")  # its own tables: said, not a loss
    assert [n for n in notes if n not in kept_quality] == (["GIF cannot be written; wrote PNG"]
                                                          if source.format == "GIF" else [])
    back = read_image(out)
    assert (back.format, back.size, back.bit_depth, back.gray) == (target, source.size, source.bit_depth, source.gray)
    assert (back.alpha is None) == (source.alpha is None)
    assert_pixels(source, back, exact=lossless(target, source))
    assert_metadata_kept(source, back, target)
    assert back.dpi == pytest.approx(source.dpi, abs=0.1) if source.dpi else back.dpi in (None, (72.0, 72.0))


@pytest.mark.parametrize("fmt", TARGETS + ("jpeg", "bmp"))
@pytest.mark.parametrize("name", ["rgba.png", "rgb16.png", "gray16.png", "gray.png", "rotated.jpg", "lossless.webp",
                                  "rgb8.tif", "rgb16.tif", "portrait.jpg"])
def test_convert(corpus, tmp_path, name, fmt):
    source = read(corpus, name)
    target = output_format(fmt)
    notes = write_image(source, tmp_path / ("out" + EXTENSIONS[target]), fmt=fmt)
    back = read_image(tmp_path / ("out" + EXTENSIONS[target]))
    joined = " | ".join(notes)
    assert back.format == target and back.size == source.size
    keeps_alpha = source.alpha is not None and target not in ("JPEG", "BMP")  # PIL reads 32-bit BMP as RGB
    assert (back.alpha is not None) == keeps_alpha
    assert ("alpha dropped" in joined) == (source.alpha is not None and target == "JPEG")
    assert ("alpha written as a 32-bit BMP" in joined) == (source.alpha is not None and target == "BMP")
    sixteen = source.bit_depth == 16 and target in ("PNG", "TIFF")
    assert back.bit_depth == (16 if sixteen else 8)
    assert ("reduced to 8 bits" in joined) == (source.bit_depth == 16 and not sixteen)
    assert back.gray == (source.gray and target != "WEBP")
    assert ("grayscale written as RGB" in joined) == (source.gray and target == "WEBP")
    for name_, value in (("EXIF", source.exif), ("ICC profile", source.icc_profile), ("XMP", source.xmp),
                         ("IPTC", source.iptc)):
        assert (f"{name_} not written" in joined) == bool(value and name_ not in HOLDS[target])
    assert_metadata_kept(source, back, target)
    exact = target in ("PNG", "TIFF", "BMP") or (target == "WEBP" and back.encoder["webp_lossless"])
    assert_pixels(source, back, exact=exact)


def test_quality(corpus, tmp_path):
    source = read(corpus, "rgba.png")
    big, small = tmp_path / "q95.jpg", tmp_path / "q20.jpg"
    write_image(source, big, fmt="jpg", quality=95)
    write_image(source, small, fmt="jpg", quality=20)
    assert small.stat().st_size < big.stat().st_size
    write_image(source, tmp_path / "lossless.webp", fmt="webp")
    write_image(source, tmp_path / "lossy.webp", fmt="webp", quality=60)
    assert read_image(tmp_path / "lossless.webp").encoder["webp_lossless"] is True
    assert read_image(tmp_path / "lossy.webp").encoder["webp_lossless"] is False
    assert read_image(tmp_path / "lossy.webp").alpha is not None
    assert any("quality ignored" in n for n in write_image(source, tmp_path / "q.png", quality=50))
    for bad in (0, 101, 50.5, True, "high"):
        with pytest.raises(ValueError, match="quality"):
            write_image(source, tmp_path / "bad.jpg", fmt="jpg", quality=bad)
    with pytest.raises(ValueError, match="cannot write"):
        write_image(source, tmp_path / "x.gif", fmt="gif")
    with pytest.raises(ValueError, match="metadata"):
        write_image(source, tmp_path / "x.png", metadata="none")
    assert not (tmp_path / "bad.jpg").exists() and not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("fmt", TARGETS)
@pytest.mark.parametrize("name", ["rotated.jpg", "rgba.png", "rgb8.tif", "rgb16.tif"])
def test_strip_metadata(corpus, tmp_path, name, fmt):
    source = read(corpus, name)
    out = tmp_path / ("out" + EXTENSIONS[output_format(fmt)])
    notes = write_image(source, out, fmt=fmt, metadata="strip")
    back = read_image(out)
    assert (back.exif, back.icc_profile, back.xmp, back.iptc, back.text) == (None, None, None, None, {})
    assert back.size == source.size  # still upright: orientation was applied to the pixels
    if source.icc_profile:
        assert any("stripped" in n and "sRGB" in n for n in notes)
    if source.dpi and output_format(fmt) != "WEBP":
        assert back.dpi == pytest.approx(source.dpi, abs=0.1)  # DPI is geometry, kept
    notes = write_image(source, out, fmt=fmt, metadata="strip", provenance=PROVENANCE)
    back = read_image(out)
    assert dict(exif_of(back)) == {0x0131: PROVENANCE}
    assert (back.icc_profile, back.xmp, back.iptc) == (None, None, None)
    assert back.text == ({"Software": PROVENANCE} if output_format(fmt) == "PNG" else {})
    assert any("provenance written" in n for n in notes)


@pytest.mark.parametrize("fmt", TARGETS)
def test_provenance(corpus, tmp_path, fmt):
    source = read(corpus, "rotated.jpg")
    out = tmp_path / ("out" + EXTENSIONS[output_format(fmt)])
    write_image(source, out, fmt=fmt, provenance=PROVENANCE)
    back = read_image(out)
    exif = exif_of(back)
    assert exif[0x0131] == PROVENANCE and exif[0x010E] == DESCRIPTION and exif[0x010F] == "CorpusCam"
    assert exif.get(0x0112, 1) == 1 and exif.get_ifd(0x8769)[0x9003] == "2001:02:03 04:05:06"
    assert Image.open(out).getexif()[0x0131] == PROVENANCE  # what any PIL user sees
    if output_format(fmt) == "PNG":
        assert back.text["Software"] == PROVENANCE
    write_image(back, out, provenance="facerestore 0.2.0")  # a later run replaces it
    assert exif_of(read_image(out))[0x0131] == "facerestore 0.2.0"
    plain = Picture(rgb=source.rgb, format=source.format)
    write_image(plain, out, fmt=fmt, provenance=PROVENANCE)  # no EXIF before: a fresh one
    assert dict(exif_of(read_image(out))) == {0x0131: PROVENANCE}


def test_provenance_checks(corpus, tmp_path):
    source = read(corpus, "gray.png")
    notes = write_image(source, tmp_path / "o.bmp", fmt="bmp", provenance=PROVENANCE)
    assert any("provenance not written" in n for n in notes)
    for bad in ("", "naïve", "two\nlines", "x" * 1001, 12):
        with pytest.raises(ValueError, match="provenance"):
            write_image(source, tmp_path / "o.png", provenance=bad)


def test_exif_pixel_dimensions_follow_the_pixels(corpus, tmp_path):
    source = read(corpus, "rotated.jpg")
    exif = exif_of(source)
    exif.get_ifd(0x8769).update({0xA002: 40, 0xA003: 30})  # as the camera wrote them, before rotation
    source.exif = exif.tobytes()
    write_image(source, tmp_path / "o.jpg")
    sub = exif_of(read_image(tmp_path / "o.jpg")).get_ifd(0x8769)
    assert (sub[0xA002], sub[0xA003]) == (30, 40)


# ---------------------------------------------------------------------------------------- failure safety


def folder_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("fmt", TARGETS + ("bmp",))
def test_encoder_failure_leaves_nothing(corpus, tmp_path, monkeypatch, fmt):
    source = read(corpus, "rgb16.png" if fmt in ("png", "tiff") else "rgba.png")
    target = tmp_path / ("out" + EXTENSIONS[output_format(fmt)])
    target.write_bytes(b"previous output")

    def half_then_fail(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG half an image")
        raise OSError("encoder crashed")

    def fail(*args, **kwargs):
        raise MemoryError("encoder crashed")

    monkeypatch.setattr(Image.Image, "save", half_then_fail)
    monkeypatch.setattr(imagewrite, "png_encode", fail)  # 16-bit PNG
    monkeypatch.setattr(imagewrite.ImageFileDirectory_v2, "tobytes", fail)  # TIFF
    with pytest.raises((OSError, MemoryError)):
        write_image(source, target, fmt=fmt)
    assert target.read_bytes() == b"previous output" and folder_names(tmp_path) == [target.name]
    target.unlink()
    with pytest.raises((OSError, MemoryError)):
        write_image(source, target, fmt=fmt)
    assert folder_names(tmp_path) == []


def test_disk_failure_leaves_nothing(corpus, tmp_path, monkeypatch):
    source = read(corpus, "rgba.png")
    target = tmp_path / "out.png"
    target.write_bytes(b"previous output")

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        write_image(source, target)
    assert target.read_bytes() == b"previous output" and folder_names(tmp_path) == ["out.png"]
    monkeypatch.undo()
    write_image(source, target)
    assert read_image(target).size == source.size and folder_names(tmp_path) == ["out.png"]


def test_written_files_open_in_other_readers(corpus, tmp_path):
    import cv2

    for name, fmt in (("rgb16.tif", "tiff"), ("rgba.png", "tiff"), ("gray16.png", "tiff"), ("rgb16.png", "png")):
        source = read(corpus, name)
        out = tmp_path / f"{Path(name).stem}{EXTENSIONS[output_format(fmt)]}"
        write_image(source, out, fmt=fmt)
        arr = cv2.imdecode(np.frombuffer(out.read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)
        assert arr is not None and arr.dtype == source.rgb.dtype and arr.shape[:2] == source.rgb.shape[:2]
        Image.open(io.BytesIO(out.read_bytes())).load()
