"""The decoded picture and the byte-level metadata helpers shared by reading and writing.

Metadata is edited in place wherever possible (EXIF orientation, pixel dimensions, Software) instead of being
re-serialised, so maker notes, the thumbnail IFD and anything a library would not understand keep their bytes.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

WRITABLE_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP")
READABLE_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF", "HEIF")  # HEIF/HEIC through pillow-heif
# Formats read but not written, and what they are written as: phone photos stay photos (JPEG), the rest lossless.
WRITTEN_AS = {"HEIF": "JPEG", "GIF": "PNG"}
FORMAT_ALIASES = {"JPG": "JPEG", "MPO": "JPEG", "TIF": "TIFF"}
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp"}
ORIENTATION_TAG = 0x0112
SOFTWARE_TAG = 0x0131
EXIF_IFD_TAG = 0x8769
PIXEL_X_TAG, PIXEL_Y_TAG = 0xA002, 0xA003
XMP_TAG, IPTC_TAG = 700, 33723
EXIF_HEADER = b"Exif\x00\x00"
XMP_JPEG_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
PNG_XMP_KEY = "XML:com.adobe.xmp"
MAX_JPEG_SEGMENT = 65533  # payload bytes of one APPn segment
# TIFF stores its own layout in IFD0; these tags describe the old pixels and must not be copied along.
TIFF_LAYOUT_TAGS = frozenset(
    {254, 255, 256, 257, 258, 259, 262, 266, 273, 277, 278, 279, 280, 281, 284, 317, 320, 322, 323, 324,
     325, 338, 339, 340, 341, 347, 530, 531, 532, 34675}
)


@dataclass
class Picture:
    """rgb: H×W×3 uint8/uint16 RGB; alpha: H×W of the same dtype or None; size is (w, h).

    Metadata travels as bytes so that it is written back unchanged: exif (starts with b"Exif\\0\\0", orientation
    already 1), icc_profile, xmp (the XMP packet, tiff:Orientation already 1), iptc (IPTC-IIM records) and text
    (PNG tEXt/zTXt/iTXt chunks; a JPEG/GIF comment as "Comment")."""

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    format: str = "PNG"
    gray: bool = False
    exif: bytes | None = None
    icc_profile: bytes | None = None
    dpi: tuple[float, float] | None = None
    notes: list[str] = field(default_factory=list)  # what reading changed (CMYK → RGB, palette, ...)
    encoder: dict = field(default_factory=dict)  # format details to re-encode in kind (JPEG tables, ...)
    xmp: bytes | None = None
    iptc: bytes | None = None
    text: dict[str, str] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]

    @property
    def bit_depth(self) -> int:
        return 16 if self.rgb.dtype == np.uint16 else 8


def canonical_format(fmt: str) -> str:
    return FORMAT_ALIASES.get(fmt.upper().lstrip("."), fmt.upper().lstrip("."))


def output_format(fmt: str) -> str:
    """The format an image read as fmt is written in: itself when writable, else WRITTEN_AS (PNG by default)."""
    fmt = canonical_format(fmt)
    return fmt if fmt in WRITABLE_FORMATS else WRITTEN_AS.get(fmt, "PNG")


# ---------------------------------------------------------------------------------------------------- EXIF

_SHORT, _LONG, _ASCII = 3, 4, 2


def _ifd_entries(blob, offset: int, endian: str) -> tuple[list[tuple[int, int, int, int]], int]:
    """[(tag, type, count, entry position)] of the IFD at offset, and the position of its next-IFD pointer."""
    if offset < 8 or offset + 2 > len(blob):
        raise ValueError("IFD offset outside the EXIF data")
    (count,) = struct.unpack_from(endian + "H", blob, offset)
    end = offset + 2 + 12 * count
    if end + 4 > len(blob):
        raise ValueError("IFD runs past the EXIF data")
    entries = []
    for pos in range(offset + 2, end, 12):
        tag, typ, n = struct.unpack_from(endian + "HHI", blob, pos)
        entries.append((tag, typ, n, pos))
    return entries, end


def patch_exif(exif: bytes, size: tuple[int, int] | None = None, software: str | None = None) -> bytes:
    """EXIF with orientation 1, PixelX/YDimension = size (where present) and, given software, tag 0x0131 set.

    Values are changed in place; Software needs a new IFD0, appended at the end (the old one becomes unused), so
    every other offset, maker notes and the IFD1 thumbnail stay valid. Raises ValueError on malformed EXIF."""
    blob = bytearray(exif[len(EXIF_HEADER):] if exif.startswith(EXIF_HEADER) else exif)
    endian = {b"II": "<", b"MM": ">"}.get(bytes(blob[:2]))
    if endian is None or len(blob) < 8 or struct.unpack_from(endian + "H", blob, 2)[0] != 42:
        raise ValueError("not a TIFF-structured EXIF block")
    (ifd0,) = struct.unpack_from(endian + "I", blob, 4)
    entries, next_pos = _ifd_entries(blob, ifd0, endian)
    for tag, typ, count, pos in entries:
        if tag == ORIENTATION_TAG:
            if count != 1 or typ not in (_SHORT, _LONG):
                raise ValueError("orientation tag of an unexpected type")
            struct.pack_into(endian + ("H" if typ == _SHORT else "I"), blob, pos + 8, 1)
        if tag == EXIF_IFD_TAG and size is not None and typ == _LONG and count == 1:
            (sub,) = struct.unpack_from(endian + "I", blob, pos + 8)
            for sub_tag, sub_typ, sub_count, sub_pos in _ifd_entries(blob, sub, endian)[0]:
                value = {PIXEL_X_TAG: size[0], PIXEL_Y_TAG: size[1]}.get(sub_tag)
                if value is None or sub_count != 1:
                    continue
                if sub_typ == _LONG:
                    struct.pack_into(endian + "I", blob, sub_pos + 8, value)
                elif sub_typ == _SHORT and value <= 0xFFFF:
                    struct.pack_into(endian + "H", blob, sub_pos + 8, value)
    if software is not None:
        raw = [bytes(blob[pos : pos + 12]) for tag, _t, _c, pos in entries if tag != SOFTWARE_TAG]
        value = software.encode("ascii") + b"\x00"
        if len(blob) & 1:
            blob += b"\x00"
        new_ifd = len(blob)
        value_at = new_ifd + 2 + 12 * (len(raw) + 1) + 4
        field_value = value.ljust(4, b"\x00") if len(value) <= 4 else struct.pack(endian + "I", value_at)
        raw.append(struct.pack(endian + "HHI", SOFTWARE_TAG, _ASCII, len(value)) + field_value)
        raw.sort(key=lambda entry: struct.unpack_from(endian + "H", entry)[0])
        blob += struct.pack(endian + "H", len(raw)) + b"".join(raw) + blob[next_pos : next_pos + 4]
        if len(value) > 4:
            blob += value
        struct.pack_into(endian + "I", blob, 4, new_ifd)
    return EXIF_HEADER + bytes(blob)


def exif_for_output(exif: bytes | None, size: tuple[int, int], software: str | None, notes: list[str]) -> bytes | None:
    """The EXIF to write: the picture's own (orientation 1, current size), plus Software when given."""
    if exif is None:
        if software is None:
            return None
        fresh = Image.Exif()
        fresh[SOFTWARE_TAG] = software
        return fresh.tobytes()
    try:
        return patch_exif(exif, size, software)
    except (ValueError, struct.error):
        pass
    try:  # not patchable in place: let PIL parse and re-serialise what it understands
        parsed = Image.Exif()
        parsed.load(exif[len(EXIF_HEADER):] if exif.startswith(EXIF_HEADER) else exif)
        if ORIENTATION_TAG in parsed:
            parsed[ORIENTATION_TAG] = 1
        if software is not None:
            parsed[SOFTWARE_TAG] = software
        notes.append("EXIF re-serialised: its layout could not be edited in place")
        return parsed.tobytes()
    except Exception:  # noqa: BLE001 - PIL raises a wide variety on malformed EXIF
        notes.append("EXIF not written: it is malformed")
        return exif_for_output(None, size, software, notes)


# ----------------------------------------------------------------------------------------------------- XMP

_XMP_ORIENTATION = re.compile(rb"""(tiff:Orientation\s*=\s*["']|<tiff:Orientation>\s*)[0-9]""")


def xmp_orientation_1(xmp: bytes) -> bytes:
    """The XMP packet with tiff:Orientation (attribute or element form) set to 1: pixels are stored upright."""
    return _XMP_ORIENTATION.sub(rb"\g<1>1", xmp)


def as_bytes(value) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value or None
    if isinstance(value, str):
        return value.encode("utf-8") or None
    if isinstance(value, tuple) and all(isinstance(v, int) and 0 <= v < 256 for v in value):
        return bytes(value) or None
    return None


# ---------------------------------------------------------------------------------------------------- JPEG


def jpeg_app_segment(marker: int, payload: bytes) -> bytes:
    if len(payload) > MAX_JPEG_SEGMENT:
        raise ValueError(f"APP{marker - 0xE0} segment of {len(payload)} bytes is over JPEG's 64 KiB limit")
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def jpeg_xmp_segment(xmp: bytes) -> bytes:
    return jpeg_app_segment(0xE1, XMP_JPEG_HEADER + xmp)


def jpeg_iptc_segment(iptc: bytes) -> bytes:
    """APP13 "Photoshop 3.0" holding one 8BIM IPTC-NAA resource (0x0404)."""
    resource = b"8BIM" + struct.pack(">HHI", 0x0404, 0, len(iptc)) + iptc + b"\x00" * (len(iptc) & 1)
    return jpeg_app_segment(0xED, b"Photoshop 3.0\x00" + resource)


_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_AFTER_SCAN = {0xC4, 0xCC, 0xD9, 0xDA, 0xDB, 0xDC, 0xDD, 0xFE, *range(0xE0, 0xF0)}


def jpeg_structure_problem(data: bytes) -> str | None:
    """None when the marker structure is whole from SOI to EOI, else what is wrong.

    Catches truncation whatever PIL's LOAD_TRUNCATED_IMAGES says (including a progressive file cut between two
    scans, which libjpeg decodes into a blurry but error-free image) and stray markers inside the coded data."""
    if data[:2] != b"\xff\xd8":
        return "no start-of-image marker"
    pos, end, scans = 2, len(data), 0
    while True:
        if pos + 2 > end:
            return "the file ends before the end-of-image marker"
        if data[pos] != 0xFF:
            return f"expected a marker at byte {pos}"
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            return None if scans else "no image data before the end-of-image marker"
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 2
            continue
        if pos + 4 > end:
            return "the file ends inside a marker segment"
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2 or pos + 2 + length > end:
            return "the file ends inside a marker segment" if length >= 2 else f"bad segment length at byte {pos}"
        pos += 2 + length
        if marker == 0xDA:
            scans += 1
            found = _SCAN_END.search(data, pos)
            if found is None:
                return "the file ends inside the image data (no end-of-image marker)"
            pos = found.start()
            if data[pos + 1] not in _AFTER_SCAN:
                return f"invalid marker 0xFF{data[pos + 1]:02X} inside the image data at byte {pos}"


# ----------------------------------------------------------------------------------------------------- PNG


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_text_chunk(key: str, value: str) -> bytes | None:
    """tEXt (zTXt when long) for Latin-1 text, iTXt (UTF-8) otherwise; None for a keyword PNG cannot hold."""
    try:
        keyword = key.encode("latin-1")
    except UnicodeEncodeError:
        return None
    if not 1 <= len(keyword) <= 79 or b"\x00" in keyword:
        return None
    try:
        latin = value.encode("latin-1")
    except UnicodeEncodeError:
        return png_chunk(b"iTXt", keyword + b"\x00\x00\x00\x00\x00" + value.encode("utf-8"))
    if len(latin) > 1024:
        return png_chunk(b"zTXt", keyword + b"\x00\x00" + zlib.compress(latin, 9))
    return png_chunk(b"tEXt", keyword + b"\x00" + latin)


def png_insert_after_ihdr(png: bytes, chunks: bytes) -> bytes:
    ihdr_end = 8 + 8 + 13 + 4
    if png[12:16] != b"IHDR":
        raise ValueError("PNG does not start with IHDR")
    return png[:ihdr_end] + chunks + png[ihdr_end:]


def png_encode(pixels: np.ndarray, level: int = 6) -> bytes:
    """A PNG of H×W (gray), H×W×2 (gray+alpha), ×3 (RGB) or ×4 (RGBA) uint8/uint16 pixels, "Sub" filtered,
    compressed in bands of rows so that memory stays at a few copies of one band."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    height, width, channels = pixels.shape
    depth = 16 if pixels.dtype == np.uint16 else 8
    step = channels * depth // 8
    compressor = zlib.compressobj(level)
    idat = []
    band = max(1, (1 << 22) // max(1, width * step))
    for y in range(0, height, band):
        rows = np.ascontiguousarray(pixels[y : y + band].astype(">u2" if depth == 16 else np.uint8))
        rows = rows.view(np.uint8).reshape(-1, width * step)
        scanlines = np.empty((rows.shape[0], width * step + 1), np.uint8)
        scanlines[:, 0] = 1  # PNG "Sub" filter: each byte minus the same byte of the pixel to its left
        scanlines[:, 1 : 1 + step] = rows[:, :step]
        np.subtract(rows[:, step:], rows[:, :-step], out=scanlines[:, 1 + step :])
        idat.append(compressor.compress(scanlines.tobytes()))
    idat.append(compressor.flush())
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", b"".join(idat)) + png_chunk(b"IEND", b""))
