"""cxr.threshold_report.describe_lowest: the note the Evaluation page shows above the threshold's images."""

from cxr.threshold_report import describe_lowest


def _report(*images):
    return {"images": [{"file": f, "group": "g", "p_covid": p, "called": c, "p_called": q} for f, p, c, q in images]}


def test_a_lowest_image_called_another_class_is_named_with_its_class_and_score():
    note = describe_lowest(_report(("fig4b.jpg", 0.219, "PNEUMONIA", 0.673), ("fig4a.jpg", 0.323, "PNEUMONIA", 0.49)))
    assert note is not None
    assert "fig4b.jpg" in note and "called PNEUMONIA" in note and "67%" in note and "0.219" in note
    assert "fig4a.jpg" not in note  # only the one that sets it


def test_no_note_when_the_lowest_is_called_covid_or_there_is_none():
    assert describe_lowest(_report(("a.jpg", 0.41, "COVID19", 0.41), ("b.jpg", 0.2, "NORMAL", 0.7))) is None
    assert describe_lowest({"images": []}) is None
    # Reports written before `called` existed (no such key) get no note rather than an error.
    assert describe_lowest({"images": [{"file": "a.jpg", "group": "g", "p_covid": 0.3}]}) is None


def test_under_the_groups_rule_the_image_that_sets_it_is_the_lowest_kept():
    """Counting each paper once may leave its lowest films below the threshold: the note names the one it keeps."""
    report = _report(("fig2a.jpg", 0.05, "NORMAL", 0.8), ("fig4b.jpg", 0.09, "PNEUMONIA", 0.73),
                     ("fig4a.jpg", 0.30, "PNEUMONIA", 0.6), ("p1.jpg", 0.5, "COVID19", 0.5))
    note = describe_lowest({**report, "refitted_threshold": 0.30})
    assert note is not None and "fig4a.jpg" in note and "fig2a.jpg" not in note and "fig4b.jpg" not in note
    assert describe_lowest({**report, "refitted_threshold": 0.5}) is None  # p1 sets it, and it is called COVID19
