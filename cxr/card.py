"""The model card: everything needed to use a saved model correctly, stored beside its weights.

Like torchxrayvision's model metadata, the card travels with the weights: class names, input
size and resize policy, the operating threshold, and where the model came from.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cxr.errors import ModelError

CARD_FILE = "card.json"
CARD_FORMAT = 1


@dataclass
class ModelCard:
    name: str
    arch: str
    classes: list[str]  # output order; a binary model lists [negative, positive]
    image_size: int  # square input side in px
    resize_policy: str = "crop"  # see cxr.preprocess.RESIZE_POLICIES
    binary: bool = False  # sigmoid head giving P(classes[1])
    created: str = ""  # ISO-8601 UTC
    version: str = ""  # cxr library version that trained it
    # P(COVID19) at or above which the app calls an image COVID-19 positive.
    covid_threshold: float = 0.5
    temperature: float = 1.0  # logits are divided by this (1.0 = uncalibrated)
    # (scale, shift_x, shift_y) boxes whose logits are averaged (cxr.views); [] = the box alone.
    test_time_views: list[list[float]] = field(default_factory=list)
    training: dict[str, Any] = field(default_factory=dict)  # command, data fingerprint, config, history
    metrics: dict[str, Any] = field(default_factory=dict)  # e.g. {"validation": {...}}
    card_format: int = CARD_FORMAT

    @property
    def preprocessing(self) -> str:
        size = f"{self.image_size}x{self.image_size}"
        geometry = {
            "lungs": f"crop to the box around the lung fields (cxr.lungs segmenter), resize to {size}",
            "lung-square": f"crop to the square box around the lung fields at their own scale (cxr.lungs "
                           f"segmenter; black where it leaves the image), resize to {size}",
            "lung-fields": f"crop to the box around the lung fields (cxr.lungs segmenter), resize to {size}, "
                           "black out everything outside the grown lung fields",
        }.get(self.resize_policy, f"{self.resize_policy} to {size}")
        from cxr.views import describe

        views = describe(self.test_time_views)
        # cxr.model.detail_cap: recorded by training (and kept by ensembles, which copy the first
        # member's config), since the card is written without looking inside the model.
        detail = (self.training.get("config") or {}).get("detail_side")
        inside = "intensity normalisation"
        if detail:
            inside = f"blur to {detail}x{detail} and back, then {inside}"
        return (
            f"decode to 8-bit grayscale; {geometry}; "
            f"replicate to 3 channels; {inside} inside the model"
            + (f"; {views}" if views else "")
        )

    def to_json(self) -> str:
        data = asdict(self)
        data["preprocessing"] = self.preprocessing
        return json.dumps(data, indent=2, sort_keys=False)

    def save(self, folder: Path) -> None:
        """Write card.json atomically (a reader never sees half a card)."""
        path = Path(folder) / CARD_FILE
        tmp = path.with_name(f".{CARD_FILE}.tmp")
        tmp.write_text(self.to_json() + "\n", encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, folder: Path) -> ModelCard:
        path = Path(folder) / CARD_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelError(f"No model card ({CARD_FILE}) in {Path(folder).name}.") from None
        except (OSError, ValueError) as exc:
            raise ModelError(f"The model card of {Path(folder).name} is unreadable: {exc}") from None
        data.pop("preprocessing", None)
        known = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise ModelError(f"The model card of {Path(folder).name} is incomplete: {exc}") from None
