"""One preprocessing path for training and serving: grayscale uint8 -> square model input.

Intensity normalisation lives *inside* the model (its first layers), so a saved model carries its
own normalisation; here we only fix the geometry, which must happen before batching.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from cxr.lungs import central_square

# How a non-square X-ray becomes square. "crop" (the default for new models) takes the central
# square, so the aspect ratio of the source, which differs by hospital, cannot leak into the
# input; "letterbox" keeps everything but pads with black bars; "stretch" is what the reference
# design did and distorts non-square images. "lungs" crops to the box around the lung fields found
# by `cxr.lungs` (plus a margin), so the lungs fill every input at the same scale whatever the
# source's framing, and most of the frame (borders, letters, markers) never reaches the model.
# "lung-square" is that box kept square at the lungs' scale, black where it leaves the frame, so a
# figure cut close to the lungs is not stretched (see `cxr.lungs`).
# "lung-fields" is the lung box with everything outside the (grown) lung fields blacked out, so
# letters, arrows and the mediastinum edge inside the box cannot reach the model either.
RESIZE_POLICIES = ("crop", "letterbox", "stretch", "lungs", "lung-square", "lung-fields")
LUNG_POLICIES = ("lungs", "lung-square", "lung-fields")  # the policies that need the lung segmenter


def lung_options(policy: str) -> dict[str, bool]:
    """`LungSegmenter.views` keyword arguments of a lung policy: whether to build the lung field
    (only "lung-fields" blacks out the rest) and whether the box may leave the frame."""
    return {"fields": policy == "lung-fields", "pad": policy == "lung-square"}


def input_box(img: np.ndarray, policy: str) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the original (H, W) image that becomes the model input.

    Letterbox boxes reach outside the image (the black bars). Used to map a saliency heatmap of
    the model input back onto the original X-ray.
    """
    return input_boxes([img], policy)[0]


def input_boxes(imgs: list[np.ndarray], policy: str) -> list[tuple[int, int, int, int]]:
    """`input_box` of several images; under the lung policies they go through the segmenter as one batch."""
    if policy in LUNG_POLICIES:
        from cxr.lungs import default_segmenter

        return [box.as_tuple() for box in default_segmenter().boxes(list(imgs), pad=lung_options(policy)["pad"])]
    return [_geometric_box(np.asarray(img).shape[:2], policy) for img in imgs]


def _geometric_box(shape: tuple[int, int], policy: str) -> tuple[int, int, int, int]:
    h, w = shape
    if policy == "crop":
        return central_square(shape)
    if policy == "letterbox":
        side = max(w, h)
        left, top = -((side - w) // 2), -((side - h) // 2)
        return left, top, left + side, top + side
    return 0, 0, w, h


def prepare_image(img: np.ndarray, size: int, policy: str = "crop") -> np.ndarray:
    """(H, W) uint8 -> (size, size) uint8 model input under `policy`: the one path for train and serve."""
    return model_view(img, size, policy)[0]


def model_view(img: np.ndarray, size: int, policy: str) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """(model input pixels, the box of the original they come from) of one (H, W) uint8 image."""
    stack, box = model_view_stacks([img], size, policy)[0]
    return stack[0], box


def model_view_stacks(imgs: list[np.ndarray], size: int, policy: str,
                      views=()) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """Each (H, W) uint8 image as ((K, S, S) uint8 stack, its box): one view per test-time view of the
    box (`cxr.views`; K = 1 without them). View 0 is the box itself; the others re-crop the original
    around the same box, scaled and shifted (black where they leave the frame)."""
    from cxr.views import view_boxes

    if policy not in RESIZE_POLICIES:
        raise ValueError(f"unknown resize policy {policy!r}; choose one of {RESIZE_POLICIES}")
    if policy in LUNG_POLICIES:
        from cxr.lungs import default_segmenter

        # Both lung policies take one path (as the training loader does): the field is built, and
        # blacks out the outside of the lungs, only under "lung-fields".
        segmented = default_segmenter().views(list(imgs), **lung_options(policy))
        found = [(box.as_tuple(), field) for box, field in segmented]
    else:
        found = [(box, None) for box in input_boxes(imgs, policy)]
    return [(np.stack([apply_lung_field(crop_box(img, view, size), field, view, np.asarray(img).shape[:2])
                       for view in view_boxes(box, views)]), box)
            for img, (box, field) in zip(imgs, found, strict=True)]


def apply_lung_field(pixels: np.ndarray, field: np.ndarray | None, box: tuple[int, int, int, int],
                     shape: tuple[int, int]) -> np.ndarray:
    """Black out a (S, S) uint8 model input made from `box` of an (H, W) image outside that
    image's whole-frame lung `field` (None: keep all). Serving and training both come here."""
    if field is None:
        return pixels
    from cxr.lungs import field_in_box

    weights = field_in_box(field, box, shape, pixels.shape[0])
    return np.round(pixels.astype(np.float32) * weights).astype(np.uint8)


def crop_box(img: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """The `box` of a (H, W) uint8 image (zero outside it), resized to (size, size)."""
    pil = Image.fromarray(np.asarray(img, np.uint8)).crop(box)
    return np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0), dtype=np.uint8)


def place_heatmap(heatmap: np.ndarray, box: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    """Map a (S, S) heatmap of the model input back onto the (H, W) original; 0 where the model saw nothing."""
    left, top, right, bottom = box
    h, w = shape
    resized = np.asarray(Image.fromarray(np.asarray(heatmap, np.float32)).resize(
        (right - left, bottom - top), Image.Resampling.BILINEAR), np.float32)
    out = np.zeros((h, w), np.float32)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(bottom, h), min(right, w)
    out[y0:y1, x0:x1] = resized[y0 - top:y1 - top, x0 - left:x1 - left]
    return out


def to_model_input(imgs: np.ndarray) -> np.ndarray:
    """(N, S, S) or (S, S) uint8 -> (N, S, S, 3) float32 in 0..255, the models' input."""
    x = np.asarray(imgs, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    return np.repeat(x[..., None], 3, axis=-1)
