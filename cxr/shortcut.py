"""Source cues: make an X-ray look like a journal figure, for training and for the shortcut probe.

In the public COVID-19 collections every COVID image was cut out of a paper or a case page: small,
JPEG-compressed, cropped, with panel letters, arrows and borders. Normal and pneumonia images come
from hospital archives as full-size originals. A model can therefore learn "looks like a figure"
instead of "has COVID-19 opacities". Two uses of the same degradations:

* training (`SourceCues`): put the cues on images of EVERY class, so they stop predicting the label;
* the probe (`bench/shortcut.py`): put them on normal and pneumonia test images and watch whether
  P(COVID19) rises. The probe also uses a figure caption strip, which training never adds.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Degradations seen in published figures; each takes and returns a (H, W) uint8 image.
TRAINING_KINDS = ("downscale", "jpeg", "crop", "letters", "arrows", "border")
# Held out from training: tells whether the model learnt "ignore figure furniture" or only
# "ignore exactly the furniture it was shown".
PROBE_ONLY_KINDS = ("caption",)
KINDS = TRAINING_KINDS + PROBE_ONLY_KINDS


def degrade(img: np.ndarray, kinds: tuple[str, ...], rng: np.random.Generator) -> np.ndarray:
    """Apply `kinds` in a journal-figure order (geometry, then ink, then compression)."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown degradation(s) {sorted(unknown)}; choose from {KINDS}")
    pil = Image.fromarray(np.asarray(img, np.uint8))
    for kind in ("crop", "downscale", "border", "caption", "letters", "arrows", "jpeg"):
        if kind in kinds:
            pil = _APPLY[kind](pil, rng)
    return np.asarray(pil, dtype=np.uint8)


def _crop(pil: Image.Image, rng) -> Image.Image:
    """Tight or off-centre crop, independently in x and y (figures are rarely square)."""
    w, h = pil.size
    cw, ch = int(w * rng.uniform(0.65, 0.95)), int(h * rng.uniform(0.65, 0.95))
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return pil.crop((left, top, left + cw, top + ch))


# A journal figure's longest side, in px: the downscale cue draws from this range.
FIGURE_SIDES = (160, 420)


def _downscale(pil: Image.Image, rng) -> Image.Image:
    """Shrink to a figure's few hundred pixels, then back: the lost detail is the cue."""
    return shrink_and_restore(pil, rng.uniform(*FIGURE_SIDES))


def shrink_and_restore(pil: Image.Image, side: float) -> Image.Image:
    """`pil` shrunk to a longest side of `side` px and resized back to its own size (unchanged if
    already that small): the image as a figure of that resolution would carry it."""
    w, h = pil.size
    target = side / max(w, h)
    if target >= 1:
        return pil
    small = pil.resize((max(8, round(w * target)), max(8, round(h * target))), Image.Resampling.BILINEAR,
                       reducing_gap=2.0)
    return small.resize((w, h), Image.Resampling.BILINEAR)


def _jpeg(pil: Image.Image, rng) -> Image.Image:
    buf = io.BytesIO()
    pil.save(buf, "JPEG", quality=int(rng.integers(30, 71)))
    buf.seek(0)
    return Image.open(buf).convert("L")


def _ink(rng) -> int:
    return 255 if rng.random() < 0.7 else 0  # figure annotations are mostly white on an X-ray


def _font(size: int):
    return ImageFont.load_default(size=max(8, size))


def _letters(pil: Image.Image, rng) -> Image.Image:
    """Panel letters and side markers ('A', 'b', 'R', ...) near corners and edges."""
    pil = pil.copy()
    draw = ImageDraw.Draw(pil)
    w, h = pil.size
    for _ in range(int(rng.integers(1, 4))):
        size = int(min(w, h) * rng.uniform(0.06, 0.14))
        text = str(rng.choice(list("ABCDabcdLR")) + ("" if rng.random() < 0.7 else str(rng.choice(list("1234")))))
        x = int(rng.uniform(0.02, 0.25) * w) if rng.random() < 0.5 else int(rng.uniform(0.7, 0.9) * w)
        y = int(rng.uniform(0.02, 0.2) * h) if rng.random() < 0.6 else int(rng.uniform(0.75, 0.88) * h)
        ink = _ink(rng)
        if rng.random() < 0.3:  # letter on a box, as many figures do
            draw.rectangle((x - 2, y - 2, x + size, y + size + 2), fill=255 - ink)
        draw.text((x, y), text, fill=ink, font=_font(size))
    return pil


def _arrows(pil: Image.Image, rng) -> Image.Image:
    """Arrows pointing at the lung fields, drawn from the outside in."""
    pil = pil.copy()
    draw = ImageDraw.Draw(pil)
    w, h = pil.size
    for _ in range(int(rng.integers(1, 4))):
        tip = np.array([rng.uniform(0.25, 0.75) * w, rng.uniform(0.3, 0.75) * h])
        angle = rng.uniform(0, 2 * np.pi)
        length = min(w, h) * rng.uniform(0.08, 0.18)
        direction = np.array([np.cos(angle), np.sin(angle)])
        tail = tip + direction * length
        width = max(1, int(min(w, h) * rng.uniform(0.006, 0.015)))
        ink = _ink(rng)
        draw.line([tuple(tail), tuple(tip)], fill=ink, width=width)
        head = length * 0.35
        normal = np.array([-direction[1], direction[0]])
        base = tip + direction * head
        draw.polygon([tuple(tip), tuple(base + normal * head * 0.5), tuple(base - normal * head * 0.5)], fill=ink)
    return pil


def _border(pil: Image.Image, rng) -> Image.Image:
    """A white or black frame on some or all sides (page margins, panel gutters)."""
    w, h = pil.size
    pad = [int(min(w, h) * rng.uniform(0.01, 0.06)) if rng.random() < 0.7 else 0 for _ in range(4)]
    if not any(pad):
        pad[0] = max(1, int(min(w, h) * 0.03))
    left, top, right, bottom = pad
    canvas = Image.new("L", (w + left + right, h + top + bottom), 255 if rng.random() < 0.6 else 0)
    canvas.paste(pil, (left, top))
    return canvas


def _caption(pil: Image.Image, rng) -> Image.Image:
    """A strip of caption text under the image (probe only)."""
    w, h = pil.size
    strip = int(h * rng.uniform(0.08, 0.15))
    canvas = Image.new("L", (w, h + strip), 255)
    canvas.paste(pil, (0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.text((int(w * 0.03), h + strip // 5), "Fig. 2 Chest radiograph, day 4", fill=0, font=_font(int(strip * 0.5)))
    return canvas


_APPLY = {"crop": _crop, "downscale": _downscale, "jpeg": _jpeg, "letters": _letters, "arrows": _arrows,
          "border": _border, "caption": _caption}


@dataclass(frozen=True)
class SourceCues:
    """Training augmentation: with probability `p`, make an image of ANY class look like a figure.

    Each training kind is then applied independently with probability `p_kind`, so the model sees
    every combination. Works on decoded images, before the square resize, like a real figure.
    """

    p: float = 0.5
    p_kind: float = 0.5
    max_side: int = 512  # shrink huge originals first: the cues cost ~ms per image at this size
    # Every image of `figure_class` here is a figure cut out of a page, so its lungs are often cut
    # close by the frame, while the other classes are whole originals. Cues at rate p on every
    # class leave that imbalance (p x p_kind of the originals get cropped, all of the figures were);
    # `crop_others` also crops that share of the OTHER classes' images, whatever `p` drew, so a
    # frame close to the lungs stops marking the figure class.
    crop_others: float = 0.0
    figure_class: str = "COVID19"
    kinds: tuple[str, ...] = TRAINING_KINDS  # the OOD gate's figure copies use every KINDS

    def __call__(self, img: np.ndarray, rng: np.random.Generator, label: str | None = None) -> np.ndarray:
        return self.apply(img, self.draw(rng, label), rng)

    def draw(self, rng: np.random.Generator, label: str | None = None) -> tuple[str, ...]:
        """Which cues one image (of class `label`, if known) gets: none with probability 1 - p, else
        at least one kind; plus the crop with probability `crop_others` outside the figure class."""
        kinds: tuple[str, ...] = ()
        if rng.random() < self.p:
            kinds = tuple(k for k in self.kinds if rng.random() < self.p_kind) or (str(rng.choice(self.kinds)),)
        # Drawn only when used, so crop_others = 0 leaves a seed's cues exactly as before.
        if (self.crop_others > 0 and label is not None and label != self.figure_class and "crop" not in kinds
                and rng.random() < self.crop_others):
            kinds += ("crop",)
        return kinds

    def apply(self, img: np.ndarray, kinds: tuple[str, ...], rng: np.random.Generator) -> np.ndarray:
        if not kinds:
            return img
        h, w = img.shape
        if max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
            img = np.asarray(Image.fromarray(img).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                                         Image.Resampling.BILINEAR, reducing_gap=2.0))
        return degrade(img, kinds, rng)
