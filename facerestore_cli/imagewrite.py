"""In-kind, atomic image writing: ``write_image`` (re-exported by ``facerestore_cli.imageio``).

What each format keeps (anything else is dropped with a note in the returned list):

======  =====  =====  ======  ====  ====  ====  ====  ================
format  alpha  16bit  gray    EXIF  ICC   XMP   IPTC  text / DPI
======  =====  =====  ======  ====  ====  ====  ====  ================
PNG     yes    yes    yes     yes   yes   yes   no    all chunks / yes
JPEG    no     no     yes     yes   yes   yes   yes   "Comment" / yes
WebP    yes    no     no      yes   yes   yes   no    no / no
TIFF    yes    yes    yes[1]  yes   yes   yes   yes   no / yes
BMP     no[2]  no     yes     no    no    no    no    no / yes
======  =====  =====  ======  ====  ====  ====  ====  ================

[1] 16-bit gray with alpha is written as 16-bit RGBA (PIL cannot read 16-bit gray+alpha TIFF back).
[2] written as a 32-bit BMP, which PIL and many viewers read as opaque RGB (noted).

TIFF is written here (Deflate + horizontal predictor, or uncompressed when the source was): lossless, but
LZW/PackBits/JPEG compression of a source TIFF is not reproduced.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, TiffTags
from PIL.TiffImagePlugin import ImageFileDirectory_v2

from facerestore_cli.files import atomic_write_bytes
from facerestore_cli.picture import (
    EXIF_HEADER,
    IPTC_TAG,
    MAX_JPEG_SEGMENT,
    TIFF_LAYOUT_TAGS,
    WRITABLE_FORMATS,
    XMP_TAG,
    Picture,
    canonical_format,
    exif_for_output,
    jpeg_iptc_segment,
    jpeg_xmp_segment,
    output_format,
    png_chunk,
    png_encode,
    png_insert_after_ihdr,
    png_text_chunk,
    xmp_orientation_1,
)

DEFAULT_JPEG_QUALITY = 95
DEFAULT_WEBP_QUALITY = 95
METADATA_MODES = ("keep", "strip")
HOLDS = {  # which metadata each target format can carry
    "JPEG": {"EXIF", "ICC profile", "XMP", "IPTC", "DPI"},
    "PNG": {"EXIF", "ICC profile", "XMP", "DPI"},
    "WEBP": {"EXIF", "ICC profile", "XMP"},
    "TIFF": {"EXIF", "ICC profile", "XMP", "IPTC", "DPI"},
    "BMP": {"DPI"},
}


@dataclass
class Metadata:
    """What will be written, after keep/strip and provenance were applied."""

    exif: bytes | None = None
    icc: bytes | None = None
    xmp: bytes | None = None
    iptc: bytes | None = None
    dpi: tuple[float, float] | None = None
    text: dict[str, str] = field(default_factory=dict)
    exif_without_provenance: bytes | None = None  # fallback where the provenance makes EXIF too big (JPEG)


def write_image(
    picture: Picture,
    path: str | os.PathLike,
    fmt: str | None = None,
    quality: int | str | None = None,
    metadata: str = "keep",
    provenance: str | None = None,
) -> list[str]:
    """Encode picture in memory and replace path atomically; returns notes on what the target could not hold.

    fmt: "png", "jpg"/"jpeg", "webp", "tiff"/"tif" or "bmp"; None keeps picture.format (formats that cannot be
        written, e.g. GIF, become PNG). Converting stays faithful where the target can hold it: alpha is dropped
        only for JPEG, 16-bit pixels become 8-bit only for JPEG/WebP/BMP, gray becomes RGB only for WebP, each
        with a note.
    quality: 1-100 for JPEG/WebP; None: a JPEG source written as JPEG keeps its quantisation tables (its quality,
        as Pillow's "keep"), another source 95, and WebP is written lossless when the source was lossless WebP or
        another format; "keep" as None for JPEG; ignored (noted) for lossless formats.
    metadata: "keep" writes EXIF (orientation always 1, pixel dimensions updated in place), ICC, XMP
        (tiff:Orientation 1), IPTC, text chunks/comment and DPI where the target can hold them. "strip" drops
        EXIF, ICC, XMP, IPTC and text; DPI is kept (it is geometry, not a tag). Stripping the ICC profile
        changes what the colours mean: viewers then assume sRGB, so a photo in Adobe RGB or ProPhoto will look
        different; it is done anyway because it was asked for, and a note says so.
    provenance: short printable ASCII text (e.g. "facerestore 0.1.0; method=difface; seed=12345") written as
        EXIF Software (0x0131, TIFF tag 305 - the same tag), and for PNG also as a "Software" text chunk. It
        replaces an earlier Software value; ImageDescription is never touched. It is written even with
        metadata="strip" since it is an explicit request (a note says so); BMP cannot hold it (noted).

    The file is encoded completely in memory before the target is touched; it is then written to a temp file
    in the same folder, fsynced and renamed, so a failure at any point leaves neither a partial output nor a
    temp file. Raises ValueError for invalid arguments or pixels.
    """
    data, notes = encode_image(picture, fmt, quality, metadata, provenance)
    atomic_write_bytes(path, data)
    return notes


def encode_image(picture: Picture, fmt: str | None = None, quality: int | str | None = None, metadata: str = "keep",
                 provenance: str | None = None) -> tuple[bytes, list[str]]:
    """The file write_image would write, in memory, and its notes (arguments as for write_image)."""
    notes: list[str] = []
    target = _target_format(picture, fmt, notes)
    _check_arguments(quality, metadata, provenance)
    rgb, alpha, gray = _prepare_pixels(picture, target, notes)
    meta = _metadata(picture, target, metadata, provenance, notes)
    if quality is not None and target not in ("JPEG", "WEBP"):
        notes.append(f"quality ignored: {target} is lossless")
    same = target == picture.format
    return _ENCODERS[target](rgb, alpha, gray, meta, picture.encoder if same else {}, quality, notes), notes


def _target_format(picture: Picture, fmt: str | None, notes: list[str]) -> str:
    if fmt is not None:
        target = canonical_format(str(fmt))
        if target not in WRITABLE_FORMATS:
            raise ValueError(f"cannot write {fmt!r}: choose png, jpg, webp, tiff or bmp")
        return target
    requested = canonical_format(picture.format)
    target = output_format(requested)
    if target != requested:
        notes.append(f"{requested} cannot be written; wrote {target}")
    return target


def _check_arguments(quality, metadata, provenance) -> None:
    if quality is not None and quality != "keep":
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise ValueError(f"quality must be an integer 1-100 or 'keep', not {quality!r}")
    if metadata not in METADATA_MODES:
        raise ValueError(f"metadata must be 'keep' or 'strip', not {metadata!r}")
    if provenance is not None:
        if not isinstance(provenance, str) or not provenance or len(provenance) > 1000:
            raise ValueError("provenance must be a non-empty string of at most 1000 characters")
        if not (provenance.isascii() and provenance.isprintable()):
            raise ValueError("provenance must be printable ASCII (it is stored as EXIF ASCII)")


def _prepare_pixels(picture: Picture, target: str, notes: list[str]):
    rgb, alpha = picture.rgb, picture.alpha
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected H×W×3 uint8/uint16 pixels, got {rgb.shape} {rgb.dtype}")
    if alpha is not None and (alpha.shape != rgb.shape[:2] or alpha.dtype not in (np.uint8, np.uint16)):
        raise ValueError(f"alpha must be H×W uint8/uint16 matching the pixels, got {alpha.shape} {alpha.dtype}")
    if alpha is not None and target == "JPEG":
        notes.append("alpha dropped: JPEG has no alpha channel")
        alpha = None
    if rgb.dtype == np.uint16 and target not in ("PNG", "TIFF"):
        notes.append(f"16-bit pixels reduced to 8 bits: {target} holds 8 bits")
        rgb = _to_8bit(rgb)
    if alpha is not None and alpha.dtype != rgb.dtype:
        alpha = _to_8bit(alpha) if rgb.dtype == np.uint8 else alpha.astype(np.uint16) * 257
    gray = picture.gray and target != "WEBP"
    if picture.gray and not gray:
        notes.append("grayscale written as RGB: WebP has no gray mode")
    return (_luma(rgb) if gray else rgb), alpha, gray


def _to_8bit(arr: np.ndarray) -> np.ndarray:
    return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma, as PIL's RGB → L; exact for pixels with R = G = B."""
    if rgb.dtype == np.uint8:
        return np.asarray(Image.fromarray(rgb).convert("L"))
    y = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.clip(np.rint(y), 0, 65535).astype(np.uint16)


def _metadata(picture: Picture, target: str, mode: str, provenance: str | None, notes: list[str]) -> Metadata:
    have = {"EXIF": picture.exif, "ICC profile": picture.icc_profile, "XMP": picture.xmp, "IPTC": picture.iptc,
            "text": picture.text}
    holds = HOLDS[target]
    meta = Metadata(dpi=picture.dpi)
    if provenance is not None and "EXIF" not in holds:
        notes.append(f"provenance not written: {target} cannot hold metadata")
        provenance = None
    if mode == "strip":
        dropped = [name for name, value in have.items() if value]
        if dropped:
            notes.append("metadata stripped: " + ", ".join(dropped)
                         + ("; without its ICC profile the colours are read as sRGB" if picture.icc_profile else ""))
        if provenance is not None:
            notes.append("provenance written as EXIF Software although metadata was stripped (explicitly asked for)")
    else:
        meta.icc, meta.iptc, meta.text = picture.icc_profile, picture.iptc, dict(picture.text)
        meta.xmp = xmp_orientation_1(picture.xmp) if picture.xmp else None
        if picture.exif and provenance is not None:
            meta.exif_without_provenance = exif_for_output(picture.exif, picture.size, None, [])
    meta.exif = exif_for_output(picture.exif if mode == "keep" else None, picture.size, provenance, notes)
    if provenance is not None:
        meta.text["Software"] = provenance
    for name, attr in (("EXIF", "exif"), ("ICC profile", "icc"), ("XMP", "xmp"), ("IPTC", "iptc"), ("DPI", "dpi")):
        if getattr(meta, attr) and name not in holds:
            notes.append(f"{name} not written: {target} cannot hold it")
            setattr(meta, attr, None)
    if target != "PNG" and meta.text:
        kept = {"Comment"} if target == "JPEG" else set()
        lost = sorted(k for k in meta.text if k not in kept and not (k == "Software" and provenance is not None))
        if lost:
            notes.append(f"text not written: {target} cannot hold {', '.join(lost)}")
        meta.text = {k: v for k, v in meta.text.items() if k in kept}
    return meta


# ------------------------------------------------------------------------------------------------ encoders


def _pil_image(plane: np.ndarray, alpha: np.ndarray | None) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(plane if alpha is None else np.dstack([plane, alpha])))


def _save(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _fit_segment(build, value, name: str, notes: list[str]) -> bytes:
    try:
        return build(value)
    except ValueError:
        notes.append(f"{name} not written: over JPEG's 64 KiB segment limit")
        return b""


def _encode_jpeg(plane, alpha, gray, meta, enc, quality, notes) -> bytes:
    kwargs: dict = {}
    if quality in (None, "keep") and enc.get("jpeg_qtables"):
        kwargs["qtables"] = enc["jpeg_qtables"]
        notes.append(f"JPEG written at the input's quality (its quantization tables, about quality "
                     f"{jpeg_quality(enc['jpeg_qtables'])})")
    else:
        kwargs["quality"] = DEFAULT_JPEG_QUALITY if quality in (None, "keep") else int(quality)
    if enc.get("jpeg_subsampling") is not None:
        kwargs["subsampling"] = enc["jpeg_subsampling"]
    if enc.get("progressive"):
        kwargs["progressive"] = True
    if meta.icc:
        kwargs["icc_profile"] = meta.icc
    if meta.dpi:
        kwargs["dpi"] = meta.dpi
    exif = meta.exif
    if exif and len(exif) > MAX_JPEG_SEGMENT and meta.exif_without_provenance:
        exif = meta.exif_without_provenance
        notes.append("provenance not written: the EXIF segment would exceed JPEG's 64 KiB limit")
    if exif and len(exif) > MAX_JPEG_SEGMENT:
        notes.append("EXIF not written: over JPEG's 64 KiB segment limit")
        exif = None
    if exif:
        kwargs["exif"] = exif
    comment = meta.text.get("Comment", "").encode("utf-8")
    if comment and len(comment) <= MAX_JPEG_SEGMENT:
        kwargs["comment"] = comment
    elif comment:
        notes.append("comment not written: over JPEG's 64 KiB segment limit")
    extra = b""
    if meta.xmp:
        extra += _fit_segment(jpeg_xmp_segment, meta.xmp, "XMP (extended XMP is not supported)", notes)
    if meta.iptc:
        extra += _fit_segment(jpeg_iptc_segment, meta.iptc, "IPTC", notes)
    if extra:
        kwargs["extra"] = extra
    return _save(_pil_image(plane, None), "JPEG", **kwargs)


# the IJG's luminance table at quality 50 (ITU-T T.81 Annex K, Table K.1), row by row as Pillow gives tables
_IJG_LUMINANCE = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
                  14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
                  49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)


def jpeg_quality(qtables) -> int:
    """The IJG quality (1-100) whose luminance table (libjpeg's jpeg_quality_scaling of Table K.1) is nearest a
    JPEG's first table: exact for files libjpeg or Pillow wrote, the nearest for others."""
    table = qtables[0] if isinstance(qtables, (list, tuple)) else next(iter(qtables.values()))

    def distance(quality: int) -> int:
        scale = 5000 // quality if quality < 50 else 200 - 2 * quality
        return sum(abs(max(1, min(255, (t * scale + 50) // 100)) - q) for t, q in zip(_IJG_LUMINANCE, table))

    return min(range(1, 101), key=distance)


def _encode_png(plane, alpha, gray, meta, enc, quality, notes) -> bytes:
    if plane.dtype == np.uint16:
        data = png_encode(plane if alpha is None else np.dstack([plane, alpha]))
    else:
        data = _save(_pil_image(plane, alpha), "PNG")
    chunks = b""
    if meta.icc:
        chunks += png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(meta.icc))
    if meta.exif:
        chunks += png_chunk(b"eXIf", meta.exif[len(EXIF_HEADER):] if meta.exif.startswith(EXIF_HEADER) else meta.exif)
    if meta.dpi:
        chunks += png_chunk(b"pHYs", struct.pack(">IIB", *(int(round(d / 0.0254)) for d in meta.dpi), 1))
    if meta.xmp:
        chunks += png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + meta.xmp)
    for key, value in meta.text.items():
        chunk = png_text_chunk(key, value)
        if chunk is None:
            notes.append(f"text {key!r} not written: not a valid PNG keyword")
        chunks += chunk or b""
    return png_insert_after_ihdr(data, chunks)


def _encode_webp(plane, alpha, gray, meta, enc, quality, notes) -> bytes:
    lossless = enc.get("webp_lossless") if enc else quality is None
    if lossless and quality is None:
        kwargs: dict = {"lossless": True, "quality": 100, "exact": True}
    else:
        kwargs = {"quality": DEFAULT_WEBP_QUALITY if quality in (None, "keep") else int(quality), "exact": True}
    for key, value in (("icc_profile", meta.icc), ("exif", meta.exif), ("xmp", meta.xmp)):
        if value:
            kwargs[key] = value
    return _save(_pil_image(plane, alpha), "WEBP", **kwargs)


def _tiff_tags(meta: Metadata) -> Image.Exif:
    """IFD0 metadata tags for a TIFF: the EXIF's own IFD0 (less layout tags) with its sub-IFDs, XMP, IPTC."""
    tags = Image.Exif()
    if meta.exif:
        tags.load(meta.exif[len(EXIF_HEADER):] if meta.exif.startswith(EXIF_HEADER) else meta.exif)
        for tag in TIFF_LAYOUT_TAGS & set(tags):
            del tags[tag]
    if meta.xmp:
        tags[XMP_TAG] = meta.xmp
    if meta.iptc:
        tags[IPTC_TAG] = meta.iptc
    return tags


def _encode_tiff(plane, alpha, gray, meta, enc, quality, notes) -> bytes:
    """TIFF written here, not by PIL (whose libtiff path cannot write EXIF sub-IFDs nor 16-bit colour): Deflate
    with the horizontal predictor (uncompressed when the source was), in strips, every metadata tag kept."""
    if plane.dtype == np.uint16 and gray and alpha is not None:
        plane = np.repeat(plane[:, :, None], 3, axis=2)
        gray = False
        notes.append("16-bit gray+alpha TIFF written as RGBA (PIL cannot read 16-bit gray+alpha TIFF)")
    pixels = plane if alpha is None else np.dstack([plane, alpha])
    pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
    height, width, channels = pixels.shape
    nbytes = pixels.dtype.itemsize
    ifd = ImageFileDirectory_v2(prefix=b"II")
    tags = _tiff_tags(meta)
    for tag in tags:
        ifd[tag] = tags.get_ifd(tag) if tag in TiffTags.TAGS_V2_GROUPS else tags[tag]
    rows = max(1, min(height, (1 << 18) // (width * channels * nbytes)))
    raw = enc.get("tiff_compression") == "raw"
    dtype = np.dtype("<u2" if nbytes == 2 else np.uint8)
    strips = []
    for y in range(0, height, rows):  # strip by strip: memory stays at one strip
        block = pixels[y : y + rows].astype(dtype)
        if not raw:
            block[:, 1:] -= pixels[y : y + rows, :-1].astype(dtype)  # predictor 2, modulo 2**bits
        strips.append(block.tobytes() if raw else zlib.compress(block.tobytes(), 6))
    layout = {256: width, 257: height, 258: (8 * nbytes,) * channels, 259: 1 if raw else 8,
              262: 1 if gray else 2, 277: channels, 278: rows, 284: 1, 339: (1,) * channels}
    if not raw:
        layout[317] = 2
    if alpha is not None:
        layout[338] = (2,)  # unassociated alpha
    if meta.dpi:
        layout.update({282: meta.dpi[0], 283: meta.dpi[1], 296: 2})
    if meta.icc:
        layout[34675] = meta.icc
    for tag, value in layout.items():
        ifd[tag] = value
    offsets = np.cumsum([0] + [len(s) for s in strips[:-1]]).tolist()
    ifd[273], ifd[279] = tuple(offsets), tuple(len(s) for s in strips)
    ifd.tagtype[273] = ifd.tagtype[279] = TiffTags.LONG
    return b"II*\x00" + struct.pack("<I", 8) + ifd.tobytes(8) + b"".join(strips)  # strip offsets follow the IFD


def _encode_bmp(plane, alpha, gray, meta, enc, quality, notes) -> bytes:
    im = _pil_image(plane, alpha)
    if alpha is not None:
        im = im.convert("RGBA")
        notes.append("alpha written as a 32-bit BMP, which many readers (PIL too) show as opaque RGB")
    return _save(im, "BMP", **({"dpi": meta.dpi} if meta.dpi else {}))


_ENCODERS = {"JPEG": _encode_jpeg, "PNG": _encode_png, "WEBP": _encode_webp, "TIFF": _encode_tiff,
             "BMP": _encode_bmp}
