"""Calibration and operating point, both fitted on the validation split (never on test).

Temperature scaling (Guo et al. 2017) divides the logits by one scalar T chosen to minimise the
negative log-likelihood on held-out data: it changes how confident the model is, not what it
predicts. The COVID-19 threshold is the highest P(COVID19) cut that still finds the requested
share of the validation COVID-19 images: missing a case costs more than a second look. The share is
counted per image ("images") or with each patient or publication weighing one ("groups"), so that one
paper's many films of a few patients do not set the threshold alone.
"""

from __future__ import annotations

import numpy as np

from cxr.predict import apply_temperature


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0))))


def fit_temperature(probs: np.ndarray, labels: np.ndarray, lo: float = 0.05, hi: float = 20.0) -> float:
    """The T in [lo, hi] that minimises validation NLL (golden-section search on log T)."""
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels, np.int64)
    if len(labels) == 0:
        return 1.0
    f = lambda log_t: nll(apply_temperature(probs, float(np.exp(log_t))), labels)  # noqa: E731
    a, b = np.log(lo), np.log(hi)
    ratio = (np.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    for _ in range(60):
        if f(c) < f(d):
            b, d = d, c
            c = b - ratio * (b - a)
        else:
            a, c = c, d
            d = a + ratio * (b - a)
    best = float(np.exp((a + b) / 2))
    # Keep T = 1 unless scaling actually helps (flat NLL on a tiny validation set).
    return round(best, 4) if f(np.log(best)) < f(0.0) - 1e-6 else 1.0


def threshold_for_sensitivity(p_positive: np.ndarray, is_positive: np.ndarray, sensitivity: float = 0.95) -> float:
    """Highest threshold t with mean(p >= t | positive) >= `sensitivity`; 0.5 if no positives."""
    return threshold_for_weighted_sensitivity(p_positive, is_positive, np.ones(len(is_positive)), sensitivity)


# How a threshold counts the validation COVID-19 images it must find: each image once, or each group
# (a patient, or a paper's patients together: the manifest's group_id) once, its images sharing its weight.
THRESHOLD_RULES = ("images", "groups")


def threshold_rule_of(card) -> str:
    """The rule a card's COVID-19 threshold was set by ("images" for cards from before the rules)."""
    return (card.metrics.get("calibration") or {}).get("threshold_rule", "images")


def group_weights(groups) -> np.ndarray:
    """Each item's weight when every group weighs one: 1 / (its group's number of items)."""
    groups = np.asarray(groups, dtype=object)
    _, inverse, counts = np.unique(groups.astype(str), return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse]


def threshold_for_weighted_sensitivity(p_positive: np.ndarray, is_positive: np.ndarray, weights: np.ndarray,
                                       sensitivity: float = 0.95) -> float:
    """Highest threshold t at which the positives at or above t carry >= `sensitivity` of the positives'
    weight; 0.5 if no positives. With equal weights this is `threshold_for_sensitivity`."""
    is_positive = np.asarray(is_positive, bool)
    scores = np.asarray(p_positive, np.float64)[is_positive]
    if len(scores) == 0:
        return 0.5
    w = np.asarray(weights, np.float64)[is_positive]
    order = np.argsort(scores, kind="stable")
    scores, w = scores[order], w[order]
    # missed[k]: the weight left below a cut at the k-th lowest score; the highest k within budget sets it.
    missed = np.concatenate([[0.0], np.cumsum(w)[:-1]])
    k = int(np.flatnonzero(missed <= (1 - sensitivity) * w.sum() + 1e-9)[-1])
    return float(np.floor(scores[k] * 1e4) / 1e4)  # round down: it stays found


def rule_weights(is_covid: np.ndarray, rule: str = "images", groups=None) -> np.ndarray:
    """What each image weighs in the sensitivity `rule` (THRESHOLD_RULES) counts: one, or under "groups"
    a COVID-19 image 1 / (its group's COVID-19 images); "groups" without groups counts each image once."""
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"Unknown threshold rule {rule!r}; choose one of {', '.join(THRESHOLD_RULES)}.")
    is_covid = np.asarray(is_covid, bool)
    weights = np.ones(len(is_covid))
    if rule == "groups" and groups is not None:
        weights[is_covid] = group_weights(np.asarray(groups, dtype=object)[is_covid])
    return weights


def covid_threshold(p_covid: np.ndarray, is_covid: np.ndarray, sensitivity: float = 0.95, rule: str = "images",
                    groups=None) -> float:
    """The COVID-19 threshold by `rule` (THRESHOLD_RULES), weighing images by `rule_weights`."""
    return threshold_for_weighted_sensitivity(p_covid, is_covid, rule_weights(is_covid, rule, groups), sensitivity)


def allowed_misses(n: int, sensitivity: float) -> int:
    """How many of n positives a threshold for `sensitivity` may leave below it: floor((1 - s) n)."""
    return int(np.floor((1 - sensitivity) * n + 1e-9))


def threshold_evidence(calibration: dict) -> dict | None:
    """What a card's validation COVID-19 images say about the sensitivity at its threshold.

    {"target_sensitivity", "found", "n", "sensitivity_ci"}: at least `found` of the `n` images were at or above the
    threshold when it was chosen, and the exact 95 % interval of the sensitivity that implies. Cards that
    record the images' groups add {"groups", "groups_found", "largest_group", "group_sensitivity_ci"}: the same,
    counting each patient or publication once. None for cards without the count (older ones).
    """
    from cxr.metrics import proportion_ci

    n = int(calibration.get("n_covid_validation") or 0)
    if n == 0:
        return None
    target = calibration.get("target_sensitivity", 0.95)
    # Cards since the "groups" rule record the count; under the image rule it is what the target allows.
    found = int(calibration.get("covid_found_validation", n - allowed_misses(n, target)))
    out = {"target_sensitivity": target, "found": found, "n": n, "sensitivity_ci": proportion_ci(found, n)}
    groups = int(calibration.get("n_covid_validation_groups") or 0)
    if groups:
        groups_found = int(calibration["covid_groups_found"])
        out.update(groups=groups, groups_found=groups_found, largest_group=int(calibration["covid_largest_group"]),
                   group_sensitivity_ci=proportion_ci(groups_found, groups))
    return out


def describe_threshold(threshold: float, calibration: dict) -> str:
    """A card's COVID-19 threshold, what it was set for and what that rests on, in words ('' without a target)."""
    if "target_sensitivity" not in calibration:
        return ""
    return (f"COVID-19 threshold {threshold:.3f}, set for {calibration['target_sensitivity']:.0%} validation "
            f"sensitivity{rule_words(calibration)}." + describe_evidence(calibration))


def rule_words(calibration: dict) -> str:
    """', each patient or publication counted once' for a threshold set by the "groups" rule, else ''."""
    return ", each patient or publication counted once" if calibration.get("threshold_rule") == "groups" else ""


def describe_evidence(calibration: dict) -> str:
    """How little the validation sensitivity behind a card's threshold pins down, in words (older cards: '')."""
    evidence = threshold_evidence(calibration)
    if evidence is None:
        return ""
    found, n, (lo, _) = evidence["found"], evidence["n"], evidence["sensitivity_ci"]
    note = (f" It rests on {n} validation COVID-19 images: with {found} of {n} at or above it, the true "
            f"sensitivity could be as low as {lo:.0%} (exact 95% confidence interval).")
    return note + grouped_evidence_note(evidence)


def grouped_evidence_note(evidence: dict) -> str:
    """The threshold's evidence counted once per patient or publication ('' when every image is its own)."""
    groups = evidence.get("groups")
    if not groups or groups >= evidence["n"]:
        return ""
    return (f" Those images come from only {groups} patients or publications ({evidence['largest_group']} from one), "
            f"and images of one patient are not independent: counting each once ({evidence['groups_found']} of "
            f"{groups} found), it could be as low as {evidence['group_sensitivity_ci'][0]:.0%}.")


def covid_group_counts(p_covid: np.ndarray, is_covid: np.ndarray, groups: list[str], threshold: float) -> dict:
    """How many groups (patients, publications) the validation COVID-19 images come from, how many
    of them have every image at or above `threshold`, and the most images one group gave.

    Images of one patient, or serial films in one paper, are not independent: counted once per group,
    14 "all found" images from 7 groups say the sensitivity is at least 59 %, not 77 %.
    """
    from cxr.metrics import groups_found

    is_covid = np.asarray(is_covid, bool)
    g = groups_found(np.asarray(p_covid)[is_covid] >= threshold, np.asarray(groups, dtype=object)[is_covid])
    return {"n_covid_validation_groups": g["groups"], "covid_groups_found": g["groups_found"],
            "covid_largest_group": g["largest_group"]}
