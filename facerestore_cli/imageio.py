"""Faithful image reading (this module) and atomic writing (``imagewrite``, re-exported here).

``read_image`` returns a ``Picture``: RGB pixels (uint8 or uint16, EXIF orientation applied), alpha kept apart,
the format found from the content (never the extension), and the metadata needed to write the result back in
kind: EXIF, ICC, XMP, IPTC, text chunks, DPI. Anything that cannot be used faithfully is an ``InputError`` with
a specific reason: empty, text, truncated or corrupt data, animated or multi-page files, too many pixels.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import threading
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageCms, ImageFile, JpegImagePlugin, UnidentifiedImageError
from pillow_heif import register_heif_opener

from facerestore_cli.files import atomic_copy, atomic_open, atomic_write_bytes
from facerestore_cli.errors import InputError
from facerestore_cli.imagewrite import write_image
from facerestore_cli.picture import (
    EXTENSIONS,
    FORMAT_ALIASES,
    IPTC_TAG,
    ORIENTATION_TAG,
    PNG_XMP_KEY,
    READABLE_FORMATS,
    TIFF_LAYOUT_TAGS,
    WRITABLE_FORMATS,
    XMP_TAG,
    Picture,
    as_bytes,
    output_format,
    patch_exif,
    jpeg_structure_problem,
    xmp_orientation_1,
)

__all__ = ["Picture", "read_image", "write_image", "output_format", "atomic_open", "atomic_write_bytes",
           "atomic_copy", "DEFAULT_MAX_PIXELS", "WRITABLE_FORMATS", "READABLE_FORMATS", "EXTENSIONS"]

register_heif_opener()  # HEIF/HEIC: pillow-heif applies the EXIF orientation while decoding and resets the tag
DEFAULT_MAX_PIXELS = 178_956_970  # PIL's own decompression-bomb limit
_UNSUPPORTED_MAGIC = ((b"%PDF", "a PDF document"), (b"8BPS", "a Photoshop PSD"), (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
                      (b"\xff\x4f\xff\x51", "JPEG 2000"), (b"ftypavif", "AVIF"))
# TIFF tags carried in Picture fields of their own (XMP, IPTC, DPI), not in its EXIF
_TIFF_OWN_FIELDS = frozenset({XMP_TAG, IPTC_TAG, 282, 283, 296})
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)
_pil_globals_lock = threading.Lock()


def read_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Picture:
    """Decode one image file; raises InputError with the reason when it cannot be used.

    The pixel limit is checked from the header, before any pixel is decoded. Partial images are never
    returned, whatever ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` says. Animated GIF/PNG/WebP and multi-page TIFF
    are refused (taking the first frame would silently drop the rest); an MPO's primary picture is used."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise InputError(f"broken symbolic link: it points to {os.readlink(path)}, which does not exist")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError("file not found") from None
    except IsADirectoryError:
        raise InputError("is a directory, not an image file") from None
    except PermissionError:
        raise InputError("permission denied") from None
    except OSError as exc:
        raise InputError(f"cannot read the file: {exc.strerror or exc}") from None
    if not data:
        raise InputError("empty file (0 bytes)")

    im = _open_pil(data)
    fmt = FORMAT_ALIASES.get(im.format, im.format)
    width, height = im.size
    if max_pixels is not None and width * height > max_pixels:
        raise InputError(
            f"image is {width}×{height} = {width * height:,} pixels, above the limit of {max_pixels:,}",
            hint="raise the pixel limit if this file is trusted",
        )
    notes: list[str] = []
    expected = EXTENSIONS.get(fmt, "." + fmt.lower())
    if path.suffix.lower() not in {expected, ".jpeg", ".tiff", ".jpe", ".mpo", ".heic", ".hif"}:
        notes.append(f"content is {fmt} although the name ends in {path.suffix or '(no extension)'}")
    _check_frames(im, fmt, notes)
    if fmt == "JPEG" and (problem := jpeg_structure_problem(data)):
        raise InputError(f"truncated or corrupt JPEG data ({problem})")

    sixteen_bit_colour = _is_16bit_colour(data, im)
    try:
        with _strict_decoding():
            if not sixteen_bit_colour:
                im.load()
            exif = im.getexif()  # a PNG whose eXIf follows the pixels is loaded here
            text = dict(getattr(im, "text", None) or {}) if fmt == "PNG" else {}
    except _DECODE_ERRORS as exc:
        raise InputError(f"truncated or corrupt {fmt} data ({exc})") from None
    orientation = exif.get(ORIENTATION_TAG, 1)
    orientation = orientation if orientation in range(1, 9) else 1
    icc = im.info.get("icc_profile") or None
    if sixteen_bit_colour:
        rgb, alpha, gray = _decode_16bit_colour(data, im)
    else:
        rgb, alpha, gray, icc = _pixels_from_pil(im, icc, notes)

    if orientation != 1:
        rgb = _orient(rgb, orientation)
        alpha = None if alpha is None else _orient(alpha, orientation)
        notes.append(f"EXIF orientation {orientation} applied")
    xmp = as_bytes(im.info.get("xmp"))
    return Picture(
        rgb=rgb,
        alpha=alpha,
        format=fmt,
        gray=gray,
        exif=_exif_bytes(im, exif, fmt, notes),
        icc_profile=icc,
        dpi=_dpi(im),
        notes=notes,
        encoder=_encoder_details(im, fmt, data),
        xmp=None if xmp is None else xmp_orientation_1(xmp),
        iptc=_iptc(im, fmt),
        text=_text(im, fmt, text),
    )


def _open_pil(data: bytes) -> Image.Image:
    # PIL's bomb check reads a process-wide limit; read_image applies its own, configurable one.
    with _pil_globals_lock, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(io.BytesIO(data), formats=READABLE_FORMATS)
        except UnidentifiedImageError:
            raise InputError(f"not a recognised image: {_describe_unknown(data)}") from None
        except _DECODE_ERRORS as exc:
            raise InputError(f"corrupt image header ({exc})") from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved


@contextlib.contextmanager
def _strict_decoding():
    """Decode with LOAD_TRUNCATED_IMAGES off, even where another library switched it on process-wide."""
    if not ImageFile.LOAD_TRUNCATED_IMAGES:
        yield
        return
    with _pil_globals_lock:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = True


def _describe_unknown(data: bytes) -> str:
    head = data[:512]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\r\n\t" for c in text[:200]):
        return "the file holds text, not image data"
    for magic, name in _UNSUPPORTED_MAGIC:
        if data.startswith(magic) or data[4:].startswith(magic):
            return f"{name} is not a supported format (JPEG, PNG, TIFF, WebP, BMP, GIF are)"
    for magic, name in ((b"\xff\xd8", "JPEG"), (b"\x89PNG", "PNG"), (b"RIFF", "WebP"), (b"II*\x00", "TIFF"),
                        (b"MM\x00*", "TIFF"), (b"BM", "BMP"), (b"GIF8", "GIF")):
        if data.startswith(magic):
            return f"starts like {name} but the header is damaged or the file truncated ({len(data)} bytes)"
    return f"unknown content starting with 0x{data[:8].hex()}"


def _check_frames(im: Image.Image, fmt: str, notes: list[str]) -> None:
    try:
        frames = getattr(im, "n_frames", 1)
    except _DECODE_ERRORS as exc:
        raise InputError(f"truncated or corrupt {fmt} data ({exc})") from None
    if frames <= 1:
        return
    if im.format == "MPO":  # camera multi-picture JPEG: the first image is the photo, the rest previews/depth
        notes.append(f"MPO: the primary picture used, {frames - 1} secondary image(s) not carried over")
    elif fmt == "TIFF":
        previews = _tiff_previews(im, frames)
        if frames - previews > 1:
            raise InputError(f"multi-page TIFF is not supported ({frames - previews} pages)",
                             hint="split the pages first, e.g. tiffsplit")
        notes.append(f"TIFF: {previews} reduced-resolution preview page(s) not carried over")
    else:
        raise InputError(f"animated images are not supported ({frames} frames)",
                         hint="extract the frame to restore as a still image first")


def _tiff_previews(im: Image.Image, frames: int) -> int:
    """How many pages after the first are reduced-resolution previews (NewSubfileType bit 0)."""
    try:
        previews = 0
        for index in range(1, frames):
            im.seek(index)
            previews += int(im.tag_v2.get(254, 0)) & 1
        im.seek(0)
        return previews
    except _DECODE_ERRORS as exc:
        raise InputError(f"truncated or corrupt TIFF data ({exc})") from None


def _is_16bit_colour(data: bytes, im: Image.Image) -> bool:
    """PIL reduces 16-bit RGB(A) and gray+alpha PNG/TIFF to 8 bits; those go through OpenCV."""
    if im.format == "PNG" and data[12:16] == b"IHDR":
        return data[24] == 16 and data[25] in (2, 4, 6)
    if im.format == "TIFF":
        bits = im.tag_v2.get(258, (8,))
        bits = bits if isinstance(bits, tuple) else (bits,)
        return max(bits) == 16 and len(bits) >= 2
    return False


def _decode_16bit_colour(data: bytes, im: Image.Image) -> tuple[np.ndarray, np.ndarray | None, bool]:
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16:
        raise InputError(f"truncated or corrupt 16-bit {im.format} data")
    gray = im.mode in ("LA", "La", "L", "I;16", "I") or (im.format == "PNG" and data[25] == 4)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    channels = arr.shape[2]
    alpha = arr[:, :, channels - 1].copy() if channels in (2, 4) else None
    if gray or channels <= 2:
        rgb = np.repeat(arr[:, :, :1], 3, axis=2)
        gray = True
    else:
        rgb = np.ascontiguousarray(arr[:, :, 2::-1])  # OpenCV gives BGR(A)
    return rgb, alpha, gray


def _pixels_from_pil(im, icc, notes):
    """(rgb, alpha, gray, icc) from a loaded PIL image of any mode."""
    mode = im.mode
    if mode in ("1", "L"):
        return _gray(np.asarray(im.convert("L"))), None, True, icc
    if mode in ("LA", "La"):
        la = np.asarray(im.convert("LA"))
        return _gray(la[:, :, 0]), la[:, :, 1].copy(), True, icc
    if mode.startswith("I;16"):
        return _gray(np.asarray(im).astype(np.uint16)), None, True, icc
    if mode == "I":
        arr = np.asarray(im)
        if arr.min() < 0 or arr.max() > 65535:
            raise InputError("32-bit integer pixels outside 0..65535 are not supported")
        return _gray(arr.astype(np.uint16)), None, True, icc
    if mode == "F":
        raise InputError("floating-point pixels are not supported")
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        notes.append("palette expanded to " + ("RGBA" if has_alpha else "RGB"))
        im = im.convert("RGBA" if has_alpha else "RGB")
        mode = im.mode
    if mode == "CMYK":
        im, icc = _cmyk_to_rgb(im, icc, notes)
        mode = im.mode
    if mode in ("RGBA", "RGBa"):
        rgba = np.asarray(im.convert("RGBA"))
        return np.ascontiguousarray(rgba[:, :, :3]), rgba[:, :, 3].copy(), False, icc
    try:
        rgb = np.asarray(im.convert("RGB"))
    except (ValueError, OSError) as exc:
        raise InputError(f"colour mode {mode} is not supported ({exc})") from None
    if mode not in ("RGB", "RGBX"):
        notes.append(f"{mode} converted to RGB")
    return np.array(rgb), None, False, icc


def _gray(plane: np.ndarray) -> np.ndarray:
    return np.repeat(plane[:, :, None], 3, axis=2)


def _cmyk_to_rgb(im, icc, notes):
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            srgb = ImageCms.createProfile("sRGB")
            converted = ImageCms.profileToProfile(im, source, srgb, outputMode="RGB")
            notes.append("CMYK converted to sRGB through its ICC profile")
            return converted, ImageCms.ImageCmsProfile(srgb).tobytes()
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass
    notes.append("CMYK converted to RGB without colour management")
    return im.convert("RGB"), None


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Same result as PIL.ImageOps.exif_transpose for EXIF orientations 2..8."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(ops[orientation](arr))


def _exif_bytes(im: Image.Image, exif: Image.Exif, fmt: str, notes: list[str]) -> bytes | None:
    """The EXIF block with orientation 1: edited in place when the file had one, else built by PIL."""
    raw = im.info.get("exif")
    if fmt != "TIFF" and isinstance(raw, bytes) and raw:
        try:
            return patch_exif(raw)
        except (ValueError, struct.error):
            pass  # malformed: keep what PIL could parse
    elif raw is None and fmt != "TIFF" and "Raw profile type exif" not in im.info:
        return None  # orientation read from XMP only: no EXIF to carry
    if fmt == "TIFF":
        for tag in (TIFF_LAYOUT_TAGS | _TIFF_OWN_FIELDS) & set(exif):
            del exif[tag]
    if not len(exif):
        return None
    if ORIENTATION_TAG in exif:
        exif[ORIENTATION_TAG] = 1
    try:
        return exif.tobytes()
    except Exception:  # noqa: BLE001 - PIL raises a wide variety on malformed EXIF
        notes.append("EXIF is malformed and was not carried over")
        return None


def _iptc(im: Image.Image, fmt: str) -> bytes | None:
    if fmt == "JPEG":
        return as_bytes(im.info.get("photoshop", {}).get(0x0404))
    if fmt == "TIFF" and IPTC_TAG in im.tag_v2:
        value = im.tag_v2[IPTC_TAG]
        if im.tag_v2.tagtype.get(IPTC_TAG) == 4:  # some writers store IPTC as LONGs
            values = value if isinstance(value, tuple) else (value,)
            return struct.pack(getattr(im.tag_v2, "_endian", "<") + "L" * len(values), *values) or None
        return as_bytes(value)
    return None


def _text(im: Image.Image, fmt: str, text: dict) -> dict[str, str]:
    if fmt == "PNG":  # XMP and EXIF travel in their own fields
        skip = {PNG_XMP_KEY, "exif", "Raw profile type exif"}
        return {str(k): str(v) for k, v in text.items() if k not in skip and isinstance(v, str)}
    comment = im.info.get("comment")
    if isinstance(comment, bytes) and comment:
        try:
            return {"Comment": comment.decode("utf-8")}
        except UnicodeDecodeError:
            return {"Comment": comment.decode("latin-1")}
    return {}


def _dpi(im: Image.Image) -> tuple[float, float] | None:
    dpi = im.info.get("dpi")
    try:
        return (float(dpi[0]), float(dpi[1])) if dpi and dpi[0] > 0 and dpi[1] > 0 else None
    except (TypeError, IndexError):
        return None


def _encoder_details(im: Image.Image, fmt: str, data: bytes) -> dict:
    if fmt == "JPEG":
        sampling = JpegImagePlugin.get_sampling(im)
        return {
            "jpeg_qtables": getattr(im, "quantization", None),
            "jpeg_subsampling": sampling if sampling in (0, 1, 2) else None,
            "progressive": bool(im.info.get("progressive") or im.info.get("progression")),
        }
    if fmt == "WEBP":
        return {"webp_lossless": _webp_is_lossless(data)}
    if fmt == "TIFF":
        return {"tiff_compression": im.info.get("compression")}
    return {}


def _webp_is_lossless(data: bytes) -> bool | None:
    offset = 12
    while offset + 8 <= len(data):
        fourcc, size = data[offset : offset + 4], struct.unpack("<I", data[offset + 4 : offset + 8])[0]
        if fourcc == b"VP8L":
            return True
        if fourcc == b"VP8 ":
            return False
        offset += 8 + size + (size & 1)
    return None
