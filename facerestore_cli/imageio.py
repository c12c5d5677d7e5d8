"""Faithful image reading and atomic writing.

``read_image`` returns a ``Picture``: RGB pixels (uint8 or uint16, EXIF orientation applied), alpha kept
apart, the format found from the content, and the metadata needed to write the result back in kind.
``write_image`` encodes in memory and replaces the target atomically, keeping format, size, bit depth,
alpha, grayscale, EXIF (orientation 1) and the ICC profile wherever the format can hold them.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import struct
import tempfile
import threading
import warnings
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Iterator

import cv2
import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError
from PIL import JpegImagePlugin

from facerestore_cli.errors import InputError

DEFAULT_MAX_PIXELS = 178_956_970  # PIL's own decompression-bomb limit
WRITABLE_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP")
FORMAT_ALIASES = {"JPG": "JPEG", "MPO": "JPEG", "TIF": "TIFF"}
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp"}
DEFAULT_JPEG_QUALITY = 95
DEFAULT_WEBP_QUALITY = 95
ORIENTATION_TAG = 0x0112
EXIF_HEADER = b"Exif\x00\x00"
# TIFF stores its own layout in IFD0; these tags describe the old pixels and must not be copied along.
TIFF_LAYOUT_TAGS = frozenset(
    {254, 255, 256, 257, 258, 259, 262, 266, 273, 277, 278, 279, 280, 281, 284, 317, 320, 322, 323, 324,
     325, 338, 339, 340, 341, 347, 530, 531, 532, 34675}
)
TIFF_COMPRESSIONS = frozenset({"raw", "tiff_lzw", "tiff_deflate", "tiff_adobe_deflate", "packbits"})

_pil_limit_lock = threading.Lock()


@dataclass
class Picture:
    """rgb: H×W×3 uint8/uint16 RGB; alpha: H×W of the same dtype or None; size is (w, h)."""

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    format: str = "PNG"
    bit_depth: int = 8
    gray: bool = False
    exif: bytes | None = None  # starts with b"Exif\0\0"; orientation already 1
    icc_profile: bytes | None = None
    dpi: tuple[float, float] | None = None
    notes: list[str] = field(default_factory=list)  # what reading changed (CMYK → RGB, palette, ...)
    encoder: dict = field(default_factory=dict)  # format details to re-encode in kind (JPEG tables, ...)

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]

    def with_rgb(self, rgb: np.ndarray) -> "Picture":
        return replace(self, rgb=rgb, notes=list(self.notes))


# ----------------------------------------------------------------------------------------------- reading


def read_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Picture:
    """Decode one image file; raises InputError with the reason when it cannot be used."""
    path = Path(path)
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
    expected = EXTENSIONS.get(fmt)
    if expected and path.suffix.lower() not in {expected, ".jpeg", ".tiff"}:
        notes.append(f"content is {fmt} although the name ends in {path.suffix or '(no extension)'}")
    if getattr(im, "n_frames", 1) > 1:
        notes.append(f"first of {im.n_frames} frames used")

    sixteen_bit_colour = _is_16bit_colour(data, im)
    try:
        if not sixteen_bit_colour:
            im.load()
        exif = im.getexif()  # a PNG whose eXIf follows the pixels is loaded here
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as exc:
        raise InputError(f"truncated or corrupt image data ({exc})") from None
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
    return Picture(
        rgb=rgb,
        alpha=alpha,
        format=fmt,
        bit_depth=16 if rgb.dtype == np.uint16 else 8,
        gray=gray,
        exif=_exif_bytes(im, exif, fmt),
        icc_profile=icc,
        dpi=_dpi(im),
        notes=notes,
        encoder=_encoder_details(im, fmt, data),
    )


def _open_pil(data: bytes) -> Image.Image:
    # PIL's bomb check reads a process-wide limit; read_image applies its own, configurable one.
    with _pil_limit_lock, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise InputError(f"not a recognised image: {_describe_unknown(data)}") from None
        except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
            raise InputError(f"corrupt image header ({exc})") from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _describe_unknown(data: bytes) -> str:
    head = data[:512]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\r\n\t" for c in text[:200]):
        return "the file holds text, not image data"
    for magic, name in ((b"\xff\xd8", "JPEG"), (b"\x89PNG", "PNG"), (b"RIFF", "WebP"), (b"II*\x00", "TIFF"),
                        (b"MM\x00*", "TIFF"), (b"BM", "BMP"), (b"GIF8", "GIF")):
        if data.startswith(magic):
            return f"starts like {name} but the header is damaged ({len(data)} bytes)"
    return f"unknown content starting with 0x{data[:8].hex()}"


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
        raise InputError("truncated or corrupt 16-bit image data")
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


def _exif_bytes(im: Image.Image, exif: Image.Exif, fmt: str) -> bytes | None:
    if not len(exif):
        return None
    raw = im.info.get("exif")
    if fmt != "TIFF" and isinstance(raw, bytes) and exif.get(ORIENTATION_TAG, 1) == 1:
        return raw if raw.startswith(EXIF_HEADER) else EXIF_HEADER + raw
    if fmt == "TIFF":
        for tag in TIFF_LAYOUT_TAGS & set(exif):
            del exif[tag]
        if not len(exif):
            return None
    if ORIENTATION_TAG in exif:
        exif[ORIENTATION_TAG] = 1
    return exif.tobytes()


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


# ----------------------------------------------------------------------------------------------- writing


def _canonical(fmt: str) -> str:
    return FORMAT_ALIASES.get(fmt.upper(), fmt.upper())


def output_format(fmt: str) -> str:
    """The format an image read as fmt is written in: itself when writable, else PNG."""
    fmt = _canonical(fmt)
    return fmt if fmt in WRITABLE_FORMATS else "PNG"


def write_image(
    picture: Picture, path: str | os.PathLike, fmt: str | None = None, quality: int | str | None = None
) -> list[str]:
    """Encode picture (in picture.format unless fmt is given) and replace path atomically.

    quality: JPEG/WebP quality (default 95); "keep" reuses the source JPEG's quantisation tables.
    Returns notes on anything the target format could not hold.
    """
    notes: list[str] = []
    requested = _canonical(fmt or picture.format)
    target = output_format(requested)
    if target != requested:
        notes.append(f"{requested} cannot be written; wrote {target}")
    rgb, alpha = picture.rgb, picture.alpha
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected H×W×3 uint8/uint16 pixels, got {rgb.shape} {rgb.dtype}")
    if alpha is not None and target == "JPEG":
        notes.append("alpha dropped: JPEG has no alpha channel")
        alpha = None
    if rgb.dtype == np.uint16 and target not in ("PNG", "TIFF"):
        notes.append(f"16-bit pixels reduced to 8 bits: {target} holds 8 bits")
        rgb = _to_8bit(rgb)
        alpha = None if alpha is None else _to_8bit(alpha)
    if alpha is not None and alpha.dtype != rgb.dtype:
        alpha = _to_8bit(alpha) if rgb.dtype == np.uint8 else alpha.astype(np.uint16) * 257
    gray = picture.gray and target != "WEBP"
    if picture.gray and not gray:
        notes.append("grayscale written as RGB: WebP has no gray mode")
    plane = _luma(rgb) if gray else rgb

    if rgb.dtype == np.uint16 and not (target == "TIFF" and gray and alpha is None):
        data = _encode_16bit(plane, alpha, target, picture, notes)
    else:
        data = _encode_pil(plane, alpha, target, picture, quality, notes)
    atomic_write_bytes(path, data)
    return notes


def _to_8bit(arr: np.ndarray) -> np.ndarray:
    return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma, as PIL's RGB → L; exact for pixels with R = G = B."""
    if rgb.dtype == np.uint8:
        return np.asarray(Image.fromarray(rgb).convert("L"))
    y = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.clip(np.rint(y), 0, 65535).astype(np.uint16)


def _encode_pil(plane, alpha, fmt, picture, quality, notes) -> bytes:
    if alpha is not None:
        im = Image.fromarray(np.ascontiguousarray(np.dstack([plane, alpha])))
    else:
        im = Image.fromarray(np.ascontiguousarray(plane))
    if fmt == "BMP" and alpha is not None:
        im = im.convert("RGBA")
        notes.append("alpha written as a 32-bit BMP, which many readers (PIL too) show as opaque RGB")
    same = fmt == picture.format
    kwargs: dict = {}
    if fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        if picture.icc_profile:
            kwargs["icc_profile"] = picture.icc_profile
        if picture.exif:
            kwargs["exif"] = picture.exif
    elif picture.icc_profile or picture.exif:
        notes.append(f"EXIF/ICC not written: {fmt} cannot hold them")
    if picture.dpi and fmt in ("JPEG", "PNG", "TIFF", "BMP"):
        kwargs["dpi"] = picture.dpi
    if fmt == "JPEG":
        enc = picture.encoder if same else {}
        if quality == "keep" and enc.get("jpeg_qtables"):
            kwargs["qtables"] = enc["jpeg_qtables"]
        else:
            kwargs["quality"] = DEFAULT_JPEG_QUALITY if quality in (None, "keep") else int(quality)
        if enc.get("jpeg_subsampling") is not None:
            kwargs["subsampling"] = enc["jpeg_subsampling"]
        if enc.get("progressive"):
            kwargs["progressive"] = True
    elif fmt == "WEBP":
        lossless = picture.encoder.get("webp_lossless") if same else quality is None
        if lossless and quality is None:
            kwargs.update(lossless=True, quality=100, exact=True)
        else:
            kwargs["quality"] = DEFAULT_WEBP_QUALITY if quality in (None, "keep") else int(quality)
            kwargs["exact"] = True
    elif fmt == "TIFF":
        compression = picture.encoder.get("tiff_compression") if same else None
        kwargs["compression"] = compression if compression in TIFF_COMPRESSIONS else "tiff_lzw"
    buffer = io.BytesIO()
    try:
        im.save(buffer, fmt, **kwargs)
    except ValueError:
        if "exif" not in kwargs:
            raise
        # e.g. JPEG's 64 KiB limit on the EXIF segment
        notes.append(f"EXIF not written: {fmt} rejected it")
        del kwargs["exif"]
        buffer = io.BytesIO()
        im.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _encode_16bit(plane, alpha, fmt, picture, notes) -> bytes:
    if fmt == "TIFF":
        if plane.ndim == 2:  # only gray+alpha reaches here; OpenCV writes 1, 3 or 4 channels
            plane = _gray(plane)
            notes.append("16-bit gray+alpha TIFF written as RGBA")
        pixels = plane if alpha is None else np.dstack([plane, alpha])
        if picture.icc_profile or picture.exif or picture.dpi:
            notes.append("EXIF/ICC/DPI not written: 16-bit colour TIFF is written by OpenCV")
        return _cv2_encode(".tiff", _swap_rb(pixels))
    if plane.ndim == 2 and alpha is not None:
        data = _png_gray_alpha_16(plane, alpha)
    else:
        pixels = plane if alpha is None else np.dstack([plane, alpha])
        data = _cv2_encode(".png", _swap_rb(pixels) if pixels.ndim == 3 else pixels)
    return _png_add_metadata(data, picture)


def _swap_rb(pixels: np.ndarray) -> np.ndarray:
    out = pixels.copy()
    out[:, :, 0], out[:, :, 2] = pixels[:, :, 2], pixels[:, :, 0]
    return out


def _cv2_encode(ext: str, pixels: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(pixels))
    if not ok:
        raise OSError(f"OpenCV could not encode {ext}")
    return buf.tobytes()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_gray_alpha_16(gray: np.ndarray, alpha: np.ndarray) -> bytes:
    height, width = gray.shape
    rows = np.dstack([gray, alpha]).astype(">u2").view(np.uint8).reshape(height, width * 4)
    filtered = rows.copy()
    filtered[:, 4:] = rows[:, 4:] - rows[:, :-4]  # PNG "Sub" filter, modulo 256
    scanlines = np.hstack([np.ones((height, 1), np.uint8), filtered])
    header = struct.pack(">IIBBBBB", width, height, 16, 4, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 6)) + _png_chunk(b"IEND", b""))


def _png_add_metadata(png: bytes, picture: Picture) -> bytes:
    """Insert iCCP, eXIf and pHYs chunks right after IHDR."""
    chunks = b""
    if picture.icc_profile:
        chunks += _png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(picture.icc_profile))
    if picture.exif:
        exif = picture.exif[len(EXIF_HEADER):] if picture.exif.startswith(EXIF_HEADER) else picture.exif
        chunks += _png_chunk(b"eXIf", exif)
    if picture.dpi:
        ppm = [int(round(d / 0.0254)) for d in picture.dpi]
        chunks += _png_chunk(b"pHYs", struct.pack(">IIB", ppm[0], ppm[1], 1))
    ihdr_end = 8 + 8 + 13 + 4
    return png[:ihdr_end] + chunks + png[ihdr_end:]


# ----------------------------------------------------------------------------------------- atomic files


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_NEW_FILE_MODE = _file_mode()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Write to a hidden temp file beside path; on success fsync and rename it onto path."""
    if mode not in ("w", "wt", "wb"):
        raise ValueError(f"atomic_open supports 'w', 'wt' and 'wb', not {mode!r}")
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with contextlib.suppress(AttributeError, OSError):
            os.fchmod(fd, _NEW_FILE_MODE)
        binary = "b" in mode
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_copy(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Byte-identical copy of src onto dest, replacing dest atomically."""
    with open(src, "rb") as source, atomic_open(dest, "wb") as handle:
        shutil.copyfileobj(source, handle, 1 << 20)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
