"""FFHQ 5-point alignment and inverse-affine paste-back (facexlib FaceRestoreHelper).

Conventions: images and crops are RGB. ``warp_face`` keeps the input dtype (uint8, uint16, or float in
[0, 1]); restored crops given to ``paste_faces`` are float in [0, 1]; ``paste_faces`` returns the
image's dtype, with integer images rounded (facexlib truncates) and pixels outside every mask unchanged.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from facerestore_cli.faces.masks import square_soft_mask

FACE_SIZE = 512
# facexlib's template for FFHQ 512 crops: left eye, right eye, nose, left mouth corner, right mouth corner.
FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ]
)
# facexlib passes (135, 133, 132) to warpAffine on a BGR image; in RGB order that gray is (132, 133, 135).
BORDER_RGB = (132.0, 133.0, 135.0)


def estimate_affine(landmarks5: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    """2×3 similarity matrix (float64) mapping image points onto the FFHQ template scaled to size."""
    template = FFHQ_TEMPLATE_512 * (size / 512.0)
    points = np.asarray(landmarks5, dtype=np.float32).reshape(5, 2)
    # LMEDS for equivalence with skimage's SimilarityTransform, as in facexlib.
    affine, _ = cv2.estimateAffinePartial2D(points, template.astype(np.float32), method=cv2.LMEDS)
    if affine is None:
        raise ValueError("could not estimate a face alignment from these landmarks")
    return affine


def _value_scale(dtype: np.dtype) -> float:
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    if np.issubdtype(dtype, np.floating):
        return 1.0
    raise ValueError(f"unsupported pixel dtype {dtype}")


def warp_face(rgb: np.ndarray, affine: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    """Aligned size×size RGB crop, bilinear, outside filled with facexlib's gray; keeps rgb's dtype."""
    border = tuple(v / 255.0 * _value_scale(rgb.dtype) for v in BORDER_RGB)
    return cv2.warpAffine(
        rgb, affine, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=border
    )


def warp_face_float(rgb: np.ndarray, affine: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    """warp_face of the photo converted to float [0, 1] (the crop the networks get), converting only the rectangle
    the crop samples (the crop's inverse map, as warpAffine inverts it, moved to the rectangle's corner), so a large
    scan is never copied whole to float. Equal to warping the whole float photo to float rounding: OpenCV's bilinear
    warp rounds source coordinates to float32, whose last bits depend on the origin (tests/test_faces.py)."""
    height, width = rgb.shape[:2]
    inverse = cv2.invertAffineTransform(np.asarray(affine, dtype=np.float64))
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64) @ inverse.T
    x0 = min(max(int(np.floor(corners[:, 0].min())) - 2, 0), width - 1)
    y0 = min(max(int(np.floor(corners[:, 1].min())) - 2, 0), height - 1)
    x1 = max(min(int(np.ceil(corners[:, 0].max())) + 2, width), x0 + 1)
    y1 = max(min(int(np.ceil(corners[:, 1].max())) + 2, height), y0 + 1)
    region = rgb[y0:y1, x0:x1].astype(np.float32) / np.float32(_value_scale(rgb.dtype))
    local = inverse.copy()
    local[:, 2] -= (x0, y0)
    return cv2.warpAffine(region, local, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=tuple(v / 255.0 for v in BORDER_RGB))


def crop_to_unit_float(crop: np.ndarray) -> np.ndarray:
    """uint8/uint16/float crop → float32 in [0, 1]."""
    return crop.astype(np.float32) / _value_scale(crop.dtype)


def _paste_region(inverse_affine: np.ndarray, size: int, width: int, height: int):
    """Image rectangle (x0, y0, x1, y1) that holds everything one face's paste can touch, or None."""
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64)
    mapped = corners @ inverse_affine.T
    x_min, y_min = mapped.min(axis=0)
    x_max, y_max = mapped.max(axis=0)
    # The square mask's blur reaches sqrt(area)/20 px; keep it (and bilinear spill) inside the region.
    margin = int(max(x_max - x_min, y_max - y_min)) // 20 + 8
    x0, y0 = max(int(np.floor(x_min)) - margin, 0), max(int(np.floor(y_min)) - margin, 0)
    x1, y1 = min(int(np.ceil(x_max)) + margin, width), min(int(np.ceil(y_max)) + margin, height)
    if x0 >= x1 or y0 >= y1:
        return None
    return x0, y0, x1, y1


def paste_faces(
    image: np.ndarray,
    crops: Sequence[np.ndarray],
    affines: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None] | None = None,
    clip_to_square: bool = False,
    upscale: int = 1,
) -> np.ndarray:
    """Blend restored crops back into image: ``img = mask * face + (1 - mask) * img``, face by face.

    image: H×W×3 RGB uint8/uint16 (or float in [0, 1]), `upscale` times the photo the faces were found in (its
    enlarged background); crops: size×size×3 RGB float in [0, 1]
    (integer crops are scaled by their dtype's range);
    affines: the forward matrices from estimate_affine; masks: per face a crop-space soft mask
    (parse_soft_mask) or None for facexlib's square mask. clip_to_square: with a parse mask, use
    min(parse, square) and the eroded face, as DifFace's/CodeFormer's fork of the helper does.
    Returns a new array of image's dtype and shape.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 RGB image, got shape {image.shape}")
    if len(crops) != len(affines) or (masks is not None and len(masks) != len(crops)):
        raise ValueError("crops, affines and masks must have one entry per face")
    if masks is None:
        masks = [None] * len(crops)
    height, width = image.shape[:2]
    scale = _value_scale(image.dtype)

    jobs = []
    for crop, affine, mask in zip(crops, affines, masks):
        size = crop.shape[0]
        inverse = cv2.invertAffineTransform(np.asarray(affine, dtype=np.float64)) * upscale
        if upscale > 1:
            inverse[:, 2] += 0.5 * upscale  # facexlib's "extra offset, for more precise back alignment"
        region = _paste_region(inverse, size, width, height)
        if region is not None:
            jobs.append((crop, inverse, mask, region))
    out = image.copy()
    if not jobs:
        return out

    # A float [0, 1] working copy of the union of the regions only: facexlib blends in float across faces and
    # quantises once at the end; the same on a sub-rectangle gives the same pixels (an integer pixel converted to
    # float and back is itself) and keeps large photos cheap.
    ux0 = min(j[3][0] for j in jobs)
    uy0 = min(j[3][1] for j in jobs)
    ux1 = max(j[3][2] for j in jobs)
    uy1 = max(j[3][3] for j in jobs)
    canvas = image[uy0:uy1, ux0:ux1].astype(np.float32) / np.float32(scale)

    for crop, inverse, mask, (x0, y0, x1, y1) in jobs:
        size = crop.shape[0]
        local = inverse.copy()
        local[:, 2] -= (x0, y0)
        dsize = (x1 - x0, y1 - y0)
        face = crop if np.issubdtype(crop.dtype, np.floating) else crop_to_unit_float(crop)
        face = np.ascontiguousarray(face, dtype=np.float32)
        inv_face = cv2.warpAffine(face, local, dsize)
        square = square_soft_mask(local, dsize, size, upscale) if mask is None or clip_to_square else None
        if mask is None:
            soft = square.soft
            pasted = square.eroded[:, :, None] * inv_face
        else:
            mask = np.asarray(mask, dtype=np.float32)
            if mask.shape != (size, size):
                mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_LINEAR)
            soft = cv2.warpAffine(mask, local, dsize, flags=cv2.INTER_LINEAR)
            pasted = inv_face
            if clip_to_square:
                soft = np.minimum(soft, square.soft)
                pasted = square.eroded[:, :, None] * inv_face
        soft = soft[:, :, None]
        view = canvas[y0 - uy0 : y1 - uy0, x0 - ux0 : x1 - ux0]
        view[...] = soft * pasted + (1 - soft) * view

    if np.issubdtype(image.dtype, np.floating):
        out[uy0:uy1, ux0:ux1] = canvas
    else:
        out[uy0:uy1, ux0:ux1] = np.rint(np.clip(canvas, 0.0, 1.0) * np.float32(scale)).astype(image.dtype)
    return out
