"""imageio: faithful reading, in-kind atomic writing, specific errors."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from conftest import PHOTOS, require_shared
from facerestore_cli.errors import InputError
from facerestore_cli.imageio import (
    Picture,
    _orient,
    atomic_copy,
    atomic_open,
    atomic_write_bytes,
    output_format,
    read_image,
    write_image,
)

SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def gradient(h=48, w=64, channels=3, dtype=np.uint8, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    top = 255 if dtype == np.uint8 else 65535
    base = np.linspace(0, top, w)[None, :, None] * np.linspace(0.2, 1, h)[:, None, None]
    arr = base + rng.integers(0, top // 16, (h, w, channels))
    return np.clip(arr, 0, top).astype(dtype)


def roundtrip(tmp_path: Path, src: Path, name: str = "out") -> tuple[Picture, Picture, list[str]]:
    pic = read_image(src)
    out = tmp_path / (name + src.suffix)
    notes = write_image(pic, out)
    return pic, read_image(out), notes


def test_png_8bit_rgb_lossless(tmp_path):
    arr = gradient()
    Image.fromarray(arr).save(tmp_path / "a.png")
    pic, back, _ = roundtrip(tmp_path, tmp_path / "a.png")
    assert (pic.format, pic.bit_depth, pic.gray, pic.alpha) == ("PNG", 8, False, None)
    assert pic.size == (64, 48) and pic.rgb.dtype == np.uint8
    np.testing.assert_array_equal(pic.rgb, arr)
    np.testing.assert_array_equal(back.rgb, arr)


def test_png_rgba_alpha_bit_identical(tmp_path):
    arr = gradient(channels=4, seed=1)
    arr[:5, :5, 3] = 0  # fully transparent corner keeps its colour too
    Image.fromarray(arr).save(tmp_path / "a.png")
    pic, back, _ = roundtrip(tmp_path, tmp_path / "a.png")
    np.testing.assert_array_equal(pic.alpha, arr[:, :, 3])
    np.testing.assert_array_equal(back.alpha, arr[:, :, 3])
    np.testing.assert_array_equal(back.rgb, arr[:, :, :3])
    assert Image.open(tmp_path / "out.png").mode == "RGBA"


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_png_16bit_roundtrip(tmp_path, channels):
    import cv2

    arr = gradient(channels=channels, dtype=np.uint16, seed=2)
    bgr = arr[:, :, ::-1] if channels == 3 else arr[:, :, [2, 1, 0, 3]] if channels == 4 else arr[:, :, 0]
    cv2.imwrite(str(tmp_path / "a.png"), np.ascontiguousarray(bgr))
    pic, back, _ = roundtrip(tmp_path, tmp_path / "a.png")
    assert pic.bit_depth == 16 and pic.rgb.dtype == np.uint16
    expected_rgb = np.repeat(arr[:, :, :1], 3, axis=2) if channels == 1 else arr[:, :, :3]
    np.testing.assert_array_equal(pic.rgb, expected_rgb)  # channel order: RGB, not BGR
    assert pic.gray == (channels == 1)
    if channels == 4:
        np.testing.assert_array_equal(pic.alpha, arr[:, :, 3])
        np.testing.assert_array_equal(back.alpha, arr[:, :, 3])
    np.testing.assert_array_equal(back.rgb, expected_rgb)
    assert back.bit_depth == 16 and back.gray == pic.gray


def test_png_16bit_gray_alpha_and_icc(tmp_path):
    gray = gradient(channels=1, dtype=np.uint16)[:, :, 0]
    alpha = gray[::-1].copy()
    pic = Picture(rgb=np.repeat(gray[:, :, None], 3, 2), alpha=alpha, format="PNG", gray=True,
                  icc_profile=SRGB_ICC, dpi=(300.0, 300.0))
    write_image(pic, tmp_path / "ga.png")
    back = read_image(tmp_path / "ga.png")
    assert back.gray and back.bit_depth == 16
    np.testing.assert_array_equal(back.rgb[:, :, 0], gray)
    np.testing.assert_array_equal(back.alpha, alpha)
    assert back.icc_profile == SRGB_ICC
    assert back.dpi == pytest.approx((300, 300), abs=0.1)


def test_gray_png_written_single_channel(tmp_path):
    gray = gradient(channels=1)[:, :, 0]
    Image.fromarray(gray).save(tmp_path / "g.png")
    pic, back, _ = roundtrip(tmp_path, tmp_path / "g.png")
    assert pic.gray and pic.rgb.shape == (48, 64, 3)
    assert Image.open(tmp_path / "out.png").mode == "L"
    np.testing.assert_array_equal(back.rgb[:, :, 1], gray)


def test_gray_alpha_and_16bit_gray_pil_modes(tmp_path):
    la = gradient(channels=2)
    Image.fromarray(la).save(tmp_path / "la.png")
    pic, back, _ = roundtrip(tmp_path, tmp_path / "la.png")
    assert pic.gray and Image.open(tmp_path / "out.png").mode == "LA"
    np.testing.assert_array_equal(back.alpha, la[:, :, 1])
    g16 = gradient(channels=1, dtype=np.uint16)[:, :, 0]
    Image.fromarray(g16).save(tmp_path / "g16.tif")
    pic, back, _ = roundtrip(tmp_path, tmp_path / "g16.tif")
    assert pic.gray and pic.bit_depth == 16
    np.testing.assert_array_equal(back.rgb[:, :, 2], g16)


def test_palette_png_expanded(tmp_path):
    arr = gradient()
    Image.fromarray(arr).quantize(16).save(tmp_path / "p.png")
    expected = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    pic, back, _ = roundtrip(tmp_path, tmp_path / "p.png")
    assert pic.alpha is None and any("palette" in n for n in pic.notes)
    np.testing.assert_array_equal(pic.rgb, expected)
    np.testing.assert_array_equal(back.rgb, expected)
    p = Image.fromarray(arr).quantize(16)
    p.info["transparency"] = 0
    p.save(tmp_path / "pt.png", transparency=0)
    pic = read_image(tmp_path / "pt.png")
    assert pic.alpha is not None and set(np.unique(pic.alpha)) <= {0, 255}


def test_jpeg_roundtrip_quality_and_subsampling(tmp_path):
    arr = gradient(96, 128)
    Image.fromarray(arr).save(tmp_path / "a.jpg", quality=90, subsampling=0, dpi=(72, 72))
    pic, back, _ = roundtrip(tmp_path, tmp_path / "a.jpg")
    assert pic.format == "JPEG" and pic.encoder["jpeg_subsampling"] == 0
    assert np.abs(back.rgb.astype(int) - pic.rgb).mean() < 2.0
    from PIL import JpegImagePlugin

    assert JpegImagePlugin.get_sampling(Image.open(tmp_path / "out.jpg")) == 0
    write_image(pic, tmp_path / "keep.jpg", quality="keep")
    assert Image.open(tmp_path / "keep.jpg").quantization == Image.open(tmp_path / "a.jpg").quantization


def test_exif_orientation_applied_and_reset(tmp_path):
    arr = gradient(40, 60)
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "TestMaker"
    Image.fromarray(arr).save(tmp_path / "r.jpg", quality=98, exif=exif.tobytes())
    stored = np.asarray(Image.open(tmp_path / "r.jpg"))
    pic = read_image(tmp_path / "r.jpg")
    assert pic.size == (40, 60)
    np.testing.assert_array_equal(pic.rgb, np.rot90(stored, -1))  # 6: rotate 90° clockwise
    write_image(pic, tmp_path / "o.jpg")
    written = Image.open(tmp_path / "o.jpg")
    assert written.size == (40, 60)
    assert written.getexif()[0x0112] == 1 and written.getexif()[0x010F] == "TestMaker"
    again = read_image(tmp_path / "o.jpg")
    assert again.size == (40, 60)


@pytest.mark.parametrize("orientation", range(2, 9))
def test_orientation_matches_pil_exif_transpose(orientation):
    arr = gradient(5, 7)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(im))
    np.testing.assert_array_equal(_orient(arr, orientation), expected)


def test_icc_profile_kept(tmp_path):
    arr = gradient()
    for ext in (".png", ".jpg", ".webp", ".tif"):
        Image.fromarray(arr).save(tmp_path / f"icc{ext}", icc_profile=SRGB_ICC)
        pic, back, notes = roundtrip(tmp_path, tmp_path / f"icc{ext}", "icc_out")
        assert pic.icc_profile == SRGB_ICC and back.icc_profile == SRGB_ICC, ext


def test_tiff_roundtrip_lossless_with_exif_sub_ifd(tmp_path):
    # PIL's libtiff writer cannot write EXIF sub-IFDs (RuntimeError); TIFF is written by imagewrite instead:
    # Deflate + predictor whatever the source compression, uncompressed when the source was.
    arr = gradient()
    exif = Image.Exif()
    exif[0x010F] = "TiffMaker"
    for compression, written_as in (("tiff_lzw", "tiff_adobe_deflate"), ("raw", "raw")):
        if compression == "raw":  # PIL itself can write a sub-IFD only without libtiff
            exif.get_ifd(0x8769)[0x9003] = "2001:02:03 04:05:06"
        Image.fromarray(arr).save(tmp_path / "a.tif", compression=compression, exif=exif.tobytes())
        pic, back, _ = roundtrip(tmp_path, tmp_path / "a.tif")
        assert pic.format == "TIFF" and pic.encoder["tiff_compression"] == compression
        np.testing.assert_array_equal(back.rgb, arr)
        written = Image.open(tmp_path / "out.tif")
        assert written.info["compression"] == written_as and written.getexif()[0x010F] == "TiffMaker"
    assert written.getexif().get_ifd(0x8769)[0x9003] == "2001:02:03 04:05:06"


def test_tiff_16bit_rgb(tmp_path):
    import cv2

    arr = gradient(channels=3, dtype=np.uint16, seed=5)
    cv2.imwrite(str(tmp_path / "a.tif"), np.ascontiguousarray(arr[:, :, ::-1]))
    pic, back, _ = roundtrip(tmp_path, tmp_path / "a.tif")
    assert pic.bit_depth == 16 and not pic.gray
    np.testing.assert_array_equal(pic.rgb, arr)
    np.testing.assert_array_equal(back.rgb, arr)


def test_webp_lossless_and_lossy(tmp_path):
    arr = gradient(channels=4, seed=3)
    Image.fromarray(arr).save(tmp_path / "l.webp", lossless=True, exact=True)
    pic, back, _ = roundtrip(tmp_path, tmp_path / "l.webp")
    assert pic.encoder["webp_lossless"] is True
    np.testing.assert_array_equal(back.rgb, arr[:, :, :3])
    np.testing.assert_array_equal(back.alpha, arr[:, :, 3])
    Image.fromarray(arr[:, :, :3]).save(tmp_path / "q.webp", quality=90)
    pic, back, _ = roundtrip(tmp_path, tmp_path / "q.webp")
    assert pic.encoder["webp_lossless"] is False and back.format == "WEBP"
    assert np.abs(back.rgb.astype(int) - pic.rgb).mean() < 3.0


def test_bmp_roundtrip(tmp_path):
    arr = gradient()
    Image.fromarray(arr).save(tmp_path / "a.bmp")
    pic, back, _ = roundtrip(tmp_path, tmp_path / "a.bmp")
    assert pic.format == "BMP"
    np.testing.assert_array_equal(back.rgb, arr)


def test_cmyk_jpeg_converted(tmp_path):
    Image.new("CMYK", (20, 10), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)
    pic = read_image(tmp_path / "c.jpg")
    assert pic.rgb.shape == (10, 20, 3) and any("CMYK" in n for n in pic.notes)
    assert pic.rgb[..., 0].mean() > 200 and pic.rgb[..., 1].mean() < 60  # red


def test_format_from_content_not_extension(tmp_path):
    arr = gradient()
    Image.fromarray(arr).save(tmp_path / "fake.jpg", format="PNG")
    pic = read_image(tmp_path / "fake.jpg")
    assert pic.format == "PNG" and any("PNG" in n for n in pic.notes)
    np.testing.assert_array_equal(pic.rgb, arr)
    assert output_format("GIF") == "PNG" and output_format("MPO") == "JPEG" and output_format("tif") == "TIFF"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"hello, I am a text file\n" * 20, "text"),
        (b"\x00\x01\x02\x03garbage" * 10, "not a recognised image"),
    ],
)
def test_unreadable_files_raise_input_error(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(InputError, match=reason):
        read_image(path)


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_truncated_file_raises_input_error(tmp_path, ext):
    Image.fromarray(gradient(200, 200)).save(tmp_path / f"t{ext}")
    data = (tmp_path / f"t{ext}").read_bytes()
    (tmp_path / f"t{ext}").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_image(tmp_path / f"t{ext}")


def test_truncated_16bit_png_raises_input_error(tmp_path):
    import cv2

    cv2.imwrite(str(tmp_path / "t.png"), gradient(100, 100, dtype=np.uint16))
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_image(tmp_path / "t.png")


def test_missing_file_and_pixel_limit(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_image(tmp_path / "nope.png")
    Image.fromarray(gradient(100, 120)).save(tmp_path / "big.png")
    with pytest.raises(InputError, match=r"120×100 = 12,000 pixels, above the limit of 10,000"):
        read_image(tmp_path / "big.png", max_pixels=10_000)
    assert read_image(tmp_path / "big.png", max_pixels=None).size == (120, 100)


def test_limit_above_pil_default_is_honoured(tmp_path, monkeypatch):
    Image.fromarray(gradient(100, 120)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL would refuse 12,000 px outright
    assert read_image(tmp_path / "big.png", max_pixels=20_000).size == (120, 100)
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_real_photos_alpha_and_metadata(tmp_path):
    require_shared()
    pic = read_image(PHOTOS / "whole-02.png")
    assert pic.alpha is not None and pic.icc_profile and pic.size == (1204, 645)
    write_image(pic, tmp_path / "w.png")
    back = read_image(tmp_path / "w.png")
    np.testing.assert_array_equal(back.alpha, pic.alpha)
    np.testing.assert_array_equal(back.rgb, pic.rgb)
    assert back.icc_profile == pic.icc_profile and back.exif is not None
    assert read_image(PHOTOS / "group-of-eight.jpg").alpha is None


def test_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    pic = Picture(rgb=gradient(), format="PNG")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_image(pic, target)
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]  # temp file cleaned up
    write_image(pic, target)
    assert read_image(target).size == (64, 48)


def test_atomic_open_and_bytes(tmp_path):
    path = tmp_path / "report.jsonl"
    with atomic_open(path) as handle:
        handle.write("line\n")
        assert not path.exists()
        temps = [p.name for p in tmp_path.iterdir()]
        assert len(temps) == 1 and temps[0].startswith(".report.jsonl.") and temps[0].endswith(".tmp")
    assert path.read_text() == "line\n"
    with pytest.raises(RuntimeError):
        with atomic_open(path) as handle:
            handle.write("half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "line\n" and len(list(tmp_path.iterdir())) == 1
    atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    atomic_copy(path, tmp_path / "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == b"\x00\x01"
    assert (path.stat().st_mode & 0o777) == (0o666 & ~_umask())


def test_16bit_to_8bit_format_notes(tmp_path):
    pic = Picture(rgb=gradient(dtype=np.uint16), format="PNG")
    notes = write_image(pic, tmp_path / "o.jpg", fmt="JPEG")
    assert any("8 bits" in n for n in notes)
    assert read_image(tmp_path / "o.jpg").bit_depth == 8


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_png_metadata_chunks_are_valid(tmp_path):
    # Chunks inserted into OpenCV's 16-bit PNG must carry correct CRCs.
    exif = Image.Exif()
    exif[0x010F] = "PngMaker"
    pic = Picture(rgb=gradient(dtype=np.uint16), format="PNG", icc_profile=SRGB_ICC,
                  exif=exif.tobytes(), dpi=(150.0, 150.0))
    write_image(pic, tmp_path / "m.png")
    data = (tmp_path / "m.png").read_bytes()
    offset, kinds = 8, []
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind, payload = data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(kind + payload), kind
        kinds.append(kind)
        offset += 12 + length
    assert kinds[0] == b"IHDR" and b"iCCP" in kinds and kinds.index(b"iCCP") < kinds.index(b"IDAT")
    back = read_image(tmp_path / "m.png")
    assert back.icc_profile == SRGB_ICC and back.dpi == pytest.approx((150, 150), abs=0.1)
    assert Image.open(io.BytesIO(data)).getexif()[0x010F] == "PngMaker"


def test_split_modules_reexport_the_same_objects():
    from facerestore_cli import files as atomic, imageio, imagewrite, picture

    assert imageio.atomic_open is atomic.atomic_open and imageio.atomic_copy is atomic.atomic_copy
    assert imageio.atomic_write_bytes is atomic.atomic_write_bytes
    assert imageio.write_image is imagewrite.write_image and imageio.Picture is picture.Picture


def _exif_with_thumbnail_ifd() -> bytes:
    """II TIFF: IFD0 (Orientation 6, Make, ExifIFD), Exif IFD (PixelX LONG, PixelY SHORT, MakerNote), IFD1."""
    def ifd(entries, next_ifd):
        body = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHI4s", *e) for e in entries)
        return body + struct.pack("<I", next_ifd)

    make = b"CamMaker\x00\x00"  # 9 bytes + pad: stored out of line
    note = b"MAKERNOTE with absolute offset 0x0008"
    ifd0_at, make_at = 8, 8 + 2 + 3 * 12 + 4
    exif_at = make_at + len(make)
    note_at = exif_at + 2 + 3 * 12 + 4
    ifd1_at = note_at + len(note) + (len(note) & 1)
    blob = b"II*\x00" + struct.pack("<I", ifd0_at)
    blob += ifd([(0x010F, 2, 9, struct.pack("<I", make_at)), (0x0112, 3, 1, struct.pack("<HH", 6, 0)),
                 (0x8769, 4, 1, struct.pack("<I", exif_at))], ifd1_at)
    blob += make
    blob += ifd([(0x927C, 7, len(note), struct.pack("<I", note_at)), (0xA002, 4, 1, struct.pack("<I", 40)),
                 (0xA003, 3, 1, struct.pack("<HH", 30, 0))], 0)
    blob += note + b"\x00" * (len(note) & 1)
    blob += ifd([(0x0103, 3, 1, struct.pack("<HH", 6, 0))], 0)
    return b"Exif\x00\x00" + blob


def test_patch_exif_edits_in_place_and_keeps_offsets():
    from facerestore_cli.picture import patch_exif

    original = _exif_with_thumbnail_ifd()
    patched = patch_exif(original, size=(30, 40))
    assert len(patched) == len(original)
    changed = [i for i, (a, b) in enumerate(zip(original, patched)) if a != b]
    assert len(changed) == 3  # one byte each: orientation 6 → 1, PixelX 40 → 30, PixelY 30 → 40
    exif = Image.Exif()
    exif.load(patched)
    assert exif[0x0112] == 1 and exif[0x010F] == "CamMaker"
    assert (exif.get_ifd(0x8769)[0xA002], exif.get_ifd(0x8769)[0xA003]) == (30, 40)
    signed = patch_exif(original, software="facerestore 0.1.0")
    upright = patch_exif(original)  # nothing before the new IFD0 moves; only the IFD0 pointer (bytes 10-13) changes
    assert signed[:10] == upright[:10] and signed[14 : len(upright)] == upright[14:]
    exif = Image.Exif()
    exif.load(signed)
    assert exif[0x0131] == "facerestore 0.1.0" and exif[0x010F] == "CamMaker" and exif[0x0112] == 1
    assert exif.get_ifd(0x8769)[0x927C].startswith(b"MAKERNOTE")
    tiff = signed[6:]
    (ifd0,) = struct.unpack_from("<I", tiff, 4)
    (count,) = struct.unpack_from("<H", tiff, ifd0)
    (next_ifd,) = struct.unpack_from("<I", tiff, ifd0 + 2 + 12 * count)
    assert next_ifd == struct.unpack_from("<I", original[6:], 8 + 2 + 36)[0]  # the IFD1 thumbnail is still chained
    assert tiff[next_ifd : next_ifd + 2] == b"\x01\x00"
    with pytest.raises(ValueError):
        patch_exif(b"Exif\x00\x00garbage!")


def test_orientation_reset_when_writing_any_exif(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 8
    pic = Picture(rgb=gradient(), format="JPEG", exif=exif.tobytes())
    for ext in (".jpg", ".png", ".webp", ".tif"):
        write_image(pic, tmp_path / f"o{ext}")
        assert Image.open(tmp_path / f"o{ext}").getexif()[0x0112] == 1, ext
        assert read_image(tmp_path / f"o{ext}").size == (64, 48)


def test_jpeg_structure_check():
    from facerestore_cli.picture import jpeg_structure_problem

    buffer = io.BytesIO()
    Image.fromarray(gradient()).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    assert jpeg_structure_problem(data) is None
    assert jpeg_structure_problem(data + b"trailing data after EOI, e.g. an MPO's second image") is None
    assert "start-of-image" in jpeg_structure_problem(b"\x00" + data[1:])
    assert "ends" in jpeg_structure_problem(data[:-2])
    assert "ends" in jpeg_structure_problem(data[:300])
    sos = data.index(b"\xff\xda")
    assert "invalid marker 0xFF45" in jpeg_structure_problem(data[: sos + 20] + b"\xff\x45" + data[sos + 20 :])
    buffer = io.BytesIO()
    Image.fromarray(gradient()).save(buffer, "JPEG", quality=90, progressive=True, restart_marker_blocks=1)
    assert jpeg_structure_problem(buffer.getvalue()) is None  # RST markers and several scans


def test_tiff_preview_pages_are_not_pages(tmp_path):
    pages = [Image.fromarray(gradient()), Image.fromarray(gradient(12, 16))]
    pages[0].save(tmp_path / "p.tif", save_all=True, append_images=pages[1:], tiffinfo={254: 1})
    pic = read_image(tmp_path / "p.tif")
    assert pic.size == (64, 48) and any("preview page" in n for n in pic.notes)
