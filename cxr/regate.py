"""Re-read a trained model over its lung fields, without retraining (`python -m cxr lung-gate`).

Every member of a plain cxrnet model (or of an ensemble of them) becomes its atrous, lung-gated copy
(`cxr.model.lung_gated_copy`): the same weights, the decision pooled over the lung cells of a 14x14
map, Grad-CAM read from that gated map. Temperature, COVID-19 threshold, OOD gate and templates are
refitted on the validation split the card records, as for a new ensemble; test-time views are dropped
(set them again with `calibrate --test-time-scales`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import cxr
from cxr.card import ModelCard
from cxr.errors import ModelError


def lung_gated_model(path: Path, name: str, data: Path | None = None, command: str = ""):
    """The model saved at `path`, re-read over its lung fields -> (model, card, write_extra), ready for
    `ModelStore.save`. `data`: where the training data is now, if not where the card says."""
    from cxr.calibration import threshold_rule_of
    from cxr.ensemble import build_ensemble, member_count, unpack
    from cxr.model import lung_gated_copy
    from cxr.store import load_model
    from cxr.train import finalize_on_recorded_split

    model, source = load_model(Path(path))
    if source.arch != "cxrnet" or source.binary:
        raise ModelError(f"{source.name} is not a cxrnet with a softmax head; only those can be re-read "
                         "over the lungs")
    try:
        if member_count(model):
            parts = unpack(model, source.temperature)
            gated = build_ensemble([lung_gated_copy(m, prefix) for m, _, prefix in parts], [t for _, t, _ in parts])
        else:
            gated = lung_gated_copy(model)
    except ValueError as exc:
        raise ModelError(str(exc)) from exc
    config = {**source.training.get("config", {}), "lung_gate": True, "atrous": True}
    card = ModelCard(
        name=name, arch=source.arch, classes=list(source.classes), image_size=source.image_size,
        resize_policy=source.resize_policy, created=datetime.now(UTC).isoformat(timespec="seconds"),
        version=cxr.__version__,
        training={**{k: v for k, v in source.training.items() if k not in ("history", "command")},
                  "config": config, "command": command, "lung_gated_from": source.name},
    )
    # The source's threshold rule (a new card would otherwise count images).
    write_extra = finalize_on_recorded_split(gated, card, data, threshold_rule=threshold_rule_of(source))
    return gated, card, write_extra
