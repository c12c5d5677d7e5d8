"""A corpus of every kind of input ``read_image`` must handle, each with its expected outcome.

    from corpus import make_corpus, check_picture
    expected = make_corpus(folder)          # {file name: expected}, files written into folder, < 1 s
    status, detail = expected["rotated.jpg"]

``status`` is "ok" (detail: a dict of checks for the Picture, see ``check_picture``) or "error" (detail: a
substring of the InputError message). For an end-to-end CLI run: "error" files end "failed", "ok" files with
``checks["faces"]`` True can be restored, every other "ok" file ends "no_face" (copied through).

Only PIL, numpy and OpenCV are used; every image is tiny. "portrait.jpg" (real faces) is a copy of
../shared/data/photos/old-portrait-01.jpg and "truncated.jpg" is its first half; without ../shared the portrait
is left out and the truncated JPEG is cut from a generated one.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageCms
from PIL.PngImagePlugin import PngInfo

try:
    from conftest import SHARED
except ImportError:  # imported from outside pytest
    SHARED = Path(os.environ.get("FACERESTORE_SHARED", Path(__file__).resolve().parents[2] / "shared"))

PORTRAIT = "data/photos/old-portrait-01.jpg"
XMP_PACKET = (
    b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
    b'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6">'
    b"<dc:creator><rdf:Seq><rdf:li>Corpus Photographer</rdf:li></rdf:Seq></dc:creator>"
    b"</rdf:Description></rdf:RDF></x:xmpmeta>\n<?xpacket end=\"w\"?>"
)
XMP_UPRIGHT = XMP_PACKET.replace(b'tiff:Orientation="6"', b'tiff:Orientation="1"')
IPTC_RECORDS = b"\x1c\x02\x00\x00\x02\x00\x04" + b"\x1c\x02\x78\x00\x0eCorpus caption" + b"\x1c\x02\x50\x00\x03Ann"
DESCRIPTION = "An image description that must survive"


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def pattern(h: int, w: int, channels: int = 3, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    """A smooth gradient with a little noise: compresses well, exposes channel swaps and flips."""
    top = 65535 if dtype == np.uint16 else 255
    yy, xx = np.mgrid[0:h, 0:w]
    planes = [(xx / max(w - 1, 1)), (yy / max(h - 1, 1)), ((xx + yy) / max(w + h - 2, 1)), 1 - xx / max(w - 1, 1)]
    arr = np.stack(planes[:channels], axis=2) * top * 0.9
    arr += np.random.default_rng(seed).integers(0, top // 20, arr.shape)
    return np.clip(arr, 0, top).astype(dtype)


def exif_bytes(orientation: int | None = None, make: str = "CorpusCam") -> bytes:
    exif = Image.Exif()
    exif[0x010F] = make
    exif[0x010E] = DESCRIPTION
    if orientation is not None:
        exif[0x0112] = orientation
    exif.get_ifd(0x8769)[0x9003] = "2001:02:03 04:05:06"
    return exif.tobytes()


def _save(path: Path, im: Image.Image, fmt: str, **kwargs) -> None:
    im.save(path, fmt, **kwargs)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _jpeg(arr: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, "JPEG", **kwargs)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------- builders
# Each builder writes its file (or returns False to leave it out) and the table gives the expected outcome.


def _portrait(path: Path) -> bool:
    source = SHARED / PORTRAIT
    if not source.exists():
        return False
    shutil.copyfile(source, path)
    return True


def _truncated_jpeg(path: Path) -> None:
    source = SHARED / PORTRAIT
    data = source.read_bytes() if source.exists() else _jpeg(pattern(189, 248), quality=90)
    path.write_bytes(data[: len(data) // 2])


def _cut_progressive(path: Path) -> None:
    data = _jpeg(pattern(48, 64), quality=90, progressive=True)
    second_scan = data.index(b"\xff\xda", data.index(b"\xff\xda") + 2)
    path.write_bytes(data[:second_scan])  # libjpeg would show the first scan: a blurry but "whole" image


def _garbage_jpeg(path: Path) -> None:
    data = _jpeg(pattern(48, 64), quality=90)
    sos = data.index(b"\xff\xda")
    start = sos + 2 + struct.unpack(">H", data[sos + 2 : sos + 4])[0]
    garbage = np.random.default_rng(7).integers(0, 256, len(data) - start - 2, dtype=np.uint8).tobytes()
    path.write_bytes(data[:start] + garbage + b"\xff\xd9")


def _garbage_png(path: Path) -> None:
    header = struct.pack(">IIBBBBB", 64, 48, 8, 2, 0, 0, 0)
    garbage = np.random.default_rng(8).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", garbage)
                     + _png_chunk(b"IEND", b""))


def _huge_png(path: Path) -> None:
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
                     + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + _png_chunk(b"IEND", b""))


def _rotated_jpeg(path: Path) -> None:
    # stored 40 wide × 30 high, EXIF (and XMP) orientation 6: shown 30 wide × 40 high
    path.write_bytes(_jpeg(pattern(30, 40), quality=95, exif=exif_bytes(orientation=6), icc_profile=srgb_icc(),
                           xmp=XMP_PACKET, comment=b"a JPEG comment"))
    data = path.read_bytes()
    resource = b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(IPTC_RECORDS)) + IPTC_RECORDS
    resource += b"\x00" * (len(IPTC_RECORDS) & 1)
    app13 = b"Photoshop 3.0\x00" + resource
    path.write_bytes(data[:2] + b"\xff\xed" + struct.pack(">H", len(app13) + 2) + app13 + data[2:])


def _rgba_png(path: Path) -> None:
    info = PngInfo()
    info.add_text("Title", "Corpus RGBA")
    info.add_itxt("Comment", "ünïcode comment ✓")
    info.add_itxt("XML:com.adobe.xmp", XMP_UPRIGHT.decode("utf-8"))
    _save(path, Image.fromarray(pattern(24, 32, 4, seed=1)), "PNG", pnginfo=info, icc_profile=srgb_icc(),
          exif=exif_bytes(), dpi=(300, 300))


def _cv2_write(path: Path, arr: np.ndarray) -> None:
    bgr = arr[:, :, ::-1] if arr.ndim == 3 and arr.shape[2] == 3 else arr
    ok, buf = cv2.imencode(path.suffix, np.ascontiguousarray(bgr))
    assert ok
    path.write_bytes(buf.tobytes())


def _palette(path: Path, transparent: bool) -> None:
    im = Image.fromarray(pattern(24, 32, seed=2)).quantize(16)
    _save(path, im, "PNG", **({"transparency": 0} if transparent else {}))


def _animated_gif(path: Path) -> None:
    frames = [Image.new("RGB", (16, 12), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(path, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _multipage_tiff(path: Path) -> None:
    pages = [Image.fromarray(pattern(12, 16, seed=s)) for s in (1, 2)]
    pages[0].save(path, "TIFF", save_all=True, append_images=pages[1:])


def _tiff8(path: Path) -> None:
    tags = Image.Exif()
    tags[0x010F] = "CorpusScanner"
    tags[0x010E] = DESCRIPTION
    tags[700] = XMP_UPRIGHT
    tags[33723] = IPTC_RECORDS
    _save(path, Image.fromarray(pattern(24, 32, seed=3)), "TIFF", compression="tiff_lzw", exif=tags,
          icc_profile=srgb_icc(), dpi=(600, 600))


def _mpo(path: Path) -> None:
    first, second = Image.fromarray(pattern(24, 32, seed=4)), Image.fromarray(pattern(24, 32, seed=5))
    first.save(path, "MPO", save_all=True, append_images=[second], exif=exif_bytes())


def _cmyk(path: Path) -> None:
    _save(path, Image.fromarray(pattern(24, 32, 4, seed=6), "CMYK"), "JPEG", quality=95)


def _png_named_jpg(path: Path) -> None:
    _save(path, Image.fromarray(pattern(24, 32, seed=9)), "PNG")


def _webp(path: Path, lossless: bool) -> None:
    if lossless:
        _save(path, Image.fromarray(pattern(24, 32, 4, seed=10)), "WEBP", lossless=True, exact=True,
              icc_profile=srgb_icc())
    else:
        _save(path, Image.fromarray(pattern(24, 32, seed=11)), "WEBP", quality=80, exif=exif_bytes(),
              xmp=XMP_UPRIGHT)


def _ok(fmt: str, size: tuple[int, int], **checks) -> tuple[str, dict]:
    return "ok", {"format": fmt, "size": size, "bit_depth": 8, "alpha": False, "gray": False, "exif": False,
                  "icc": False, "xmp": False, "iptc": False, "faces": False, **checks}


CORPUS: dict[str, tuple] = {
    # name: (builder, expected)
    "portrait.jpg": (_portrait, _ok("JPEG", (248, 189), exif=True, faces=True)),
    "empty.jpg": (lambda p: p.write_bytes(b""), ("error", "empty file (0 bytes)")),
    "text.jpg": (lambda p: p.write_text("This is a text file, not a photo.\n" * 5), ("error", "holds text")),
    "truncated.jpg": (_truncated_jpeg, ("error", "truncated or corrupt JPEG data")),
    "cut-progressive.jpg": (_cut_progressive, ("error", "truncated or corrupt JPEG data")),
    "garbage.jpg": (_garbage_jpeg, ("error", "truncated or corrupt JPEG data")),
    "garbage.png": (_garbage_png, ("error", "truncated or corrupt PNG data")),
    "huge.png": (_huge_png, ("error", "100000×100000 = 10,000,000,000 pixels, above the limit")),
    "animated.gif": (_animated_gif, ("error", "animated images are not supported (3 frames)")),
    "multipage.tif": (_multipage_tiff, ("error", "multi-page TIFF is not supported (2 pages)")),
    "cmyk.jpg": (_cmyk, _ok("JPEG", (32, 24), note="CMYK")),
    "rotated.jpg": (_rotated_jpeg, _ok("JPEG", (30, 40), note="orientation 6", exif=True, icc=True, xmp=True,
                                       iptc=True, text={"Comment": "a JPEG comment"})),
    "mpo.jpg": (_mpo, _ok("JPEG", (32, 24), note="MPO", exif=True)),
    "rgba.png": (_rgba_png, _ok("PNG", (32, 24), alpha=True, exif=True, icc=True, xmp=True,
                                text={"Title": "Corpus RGBA", "Comment": "ünïcode comment ✓"})),
    "rgb16.png": (lambda p: _cv2_write(p, pattern(24, 32, dtype=np.uint16, seed=12)), _ok("PNG", (32, 24), bit_depth=16)),
    "gray.png": (lambda p: _save(p, Image.fromarray(pattern(24, 32, 1)[:, :, 0]), "PNG"), _ok("PNG", (32, 24), gray=True)),
    "gray16.png": (lambda p: _cv2_write(p, pattern(24, 32, 1, np.uint16)[:, :, 0]),
                   _ok("PNG", (32, 24), gray=True, bit_depth=16)),
    "one-pixel.png": (lambda p: _save(p, Image.new("RGB", (1, 1), (200, 120, 80)), "PNG"), _ok("PNG", (1, 1))),
    "palette.png": (lambda p: _palette(p, False), _ok("PNG", (32, 24), note="palette expanded to RGB")),
    "palette-transparent.png": (lambda p: _palette(p, True), _ok("PNG", (32, 24), alpha=True, note="palette")),
    "png-named.jpg": (_png_named_jpg, _ok("PNG", (32, 24), note="content is PNG")),
    "still.gif": (lambda p: _save(p, Image.fromarray(pattern(12, 16)).quantize(32), "GIF"),
                  _ok("GIF", (16, 12), note="palette")),
    "rgb8.tif": (_tiff8, _ok("TIFF", (32, 24), exif=True, icc=True, xmp=True, iptc=True)),
    "rgb16.tif": (lambda p: _cv2_write(p, pattern(24, 32, dtype=np.uint16, seed=13)), _ok("TIFF", (32, 24), bit_depth=16)),
    "gray16.tif": (lambda p: _save(p, Image.fromarray(pattern(24, 32, 1, np.uint16)[:, :, 0]), "TIFF"),
                   _ok("TIFF", (32, 24), gray=True, bit_depth=16)),
    "lossy.webp": (lambda p: _webp(p, False), _ok("WEBP", (32, 24), exif=True, xmp=True)),
    "lossless.webp": (lambda p: _webp(p, True), _ok("WEBP", (32, 24), alpha=True, icc=True)),
    "picture.bmp": (lambda p: _save(p, Image.fromarray(pattern(24, 32, seed=14)), "BMP"), _ok("BMP", (32, 24))),
}
CORPUS_NAMES = tuple(CORPUS)


def make_corpus(folder: str | os.PathLike) -> dict[str, tuple]:
    """Write the corpus into folder (created if needed); {file name: ("ok", checks) | ("error", reason)}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for name, (build, outcome) in CORPUS.items():
        if build(folder / name) is not False:
            expected[name] = (outcome[0], dict(outcome[1]) if isinstance(outcome[1], dict) else outcome[1])
    return expected


def check_picture(picture, checks: dict) -> list[str]:
    """What in picture differs from checks (empty when all hold). Keys: format, size, bit_depth, alpha, gray,
    exif, icc, xmp, iptc (bool: present or not), text (a subset), note (a substring of one note); faces is
    for the pipeline and ignored here."""
    present = {"alpha": picture.alpha, "exif": picture.exif, "icc": picture.icc_profile, "xmp": picture.xmp,
               "iptc": picture.iptc}
    problems = []
    for key, want in checks.items():
        if key == "faces":
            continue
        if key == "note":
            got, ok = picture.notes, any(want in note for note in picture.notes)
        elif key == "text":
            got, ok = picture.text, all(picture.text.get(k) == v for k, v in want.items())
        elif key in present:
            got = present[key] is not None
            ok = got == want
        else:
            got = getattr(picture, key)
            ok = got == want
        if not ok:
            problems.append(f"{key}: expected {want!r}, got {got!r}")
    return problems
