"""Several browser sessions predicting while another session retrains, against a real server."""

import re

import pytest
from playwright.sync_api import expect

from cxr.decode import decode_image
from cxr.predict import Predictor

SESSIONS = 5
ROUNDS = 3


def wait_for_result(page, name: str, timeout_ms: int = 180_000) -> str:
    """The label shown for upload `name` on `page`."""
    card = page.locator("[class*=st-key-result-]").filter(has_text=name)
    card.get_by_text("Grad-CAM:").first.wait_for(timeout=timeout_ms)
    heading = card.get_by_role("heading", name="Predicted:").first.inner_text()
    return heading.split("Predicted:")[1].strip()


@pytest.mark.timeout(1200)
def test_five_sessions_predict_correctly_while_a_sixth_retrains(server, browser, app_env, tiny_model):
    files = sorted((app_env["mini"] / "train").glob("*/*.jpg"))
    expected_model = Predictor.from_path(tiny_model)
    expected = {f.name: expected_model.classes[int(expected_model.predict_proba([decode_image(f)])[0].argmax())]
                for f in files}

    # Session 6 starts a real training run on the mini set through the Retrain page; it is long
    # enough to outlast the predictions and is cancelled from the page at the end.
    # Two cores serve six sessions, a training run and six browser tabs: allow slow steps.
    timeout_ms = 180_000
    trainer = browser.new_context().new_page()
    trainer.set_default_timeout(timeout_ms)
    trainer.goto(f"{server}/retrain_page")
    trainer.get_by_text("Start training").wait_for(timeout=60_000)
    trainer.get_by_label("Epochs", exact=True).fill("200")
    trainer.get_by_label("Early-stopping patience (epochs)", exact=True).fill("200")
    trainer.get_by_text("Start training").click()
    trainer.get_by_text("Training on cxr-data-mini: running").wait_for(timeout=60_000)

    pages = []
    for _ in range(SESSIONS):
        page = browser.new_context().new_page()
        page.set_default_timeout(timeout_ms)
        page.goto(server)
        pages.append(page)
    for page in pages:
        page.get_by_text("Chest X-ray classification").wait_for()

    requests, errors, during_training = 0, 0, 0
    for round_ in range(ROUNDS):
        chosen = [files[(round_ * SESSIONS + i) % len(files)] for i in range(SESSIONS)]
        for page, path in zip(pages, chosen):  # all uploads go out before any result is awaited
            page.locator("input[type=file]").first.set_input_files(str(path))
        for page, path in zip(pages, chosen):
            label = wait_for_result(page, path.name)
            requests += 1
            during_training += trainer.get_by_text("Training on cxr-data-mini: running").count() > 0
            assert label == expected[path.name], f"{path.name}: shown {label}, expected {expected[path.name]}"
            errors += page.locator("[data-testid=stException]").count() + page.locator(
                "[data-testid=stAlertContentError]").count()
        # No cross-talk: each session shows only the files it uploaded itself.
        for i, page in enumerate(pages):
            own = {files[(r * SESSIONS + i) % len(files)].name for r in range(round_ + 1)}
            others = {f.name for f in files} - own
            assert all(page.get_by_role("heading", name=n, exact=True).count() == 0 for n in others)
    assert requests == SESSIONS * ROUNDS and errors == 0
    assert during_training == requests, "training ended before the sessions finished; the test proved less"

    for page in pages:  # the predicting sessions are done; free their share of the two cores
        page.context.close()
    # Nobody touched the trainer's page since the start: an epoch count there proves the job panel
    # redraws itself (a lost auto-refresh would otherwise show up only as a timeout at the very end).
    trainer.get_by_text(re.compile(r"epoch [1-9][0-9]* of 200")).wait_for(timeout=120_000)
    trainer.get_by_role("button", name="Cancel training").click()
    # The page confirms the click at once; ending the epoch, saving and evaluating take longer.
    trainer.get_by_text("Training on cxr-data-mini: cancelling").wait_for(timeout=60_000)
    # The page redraws element by element, so the button may turn disabled a moment after the heading.
    expect(trainer.get_by_role("button", name="Cancel training")).to_be_disabled(timeout=60_000)
    saved = trainer.get_by_text("stopped early by you")
    saved.wait_for(timeout=480_000)
    # The end redraws the whole page, not only the job panel: the list of saved models offers the
    # new model at once, without a click.
    name = re.search(r"Saved as (\S+)", saved.inner_text()).group(1)
    expect(trainer.locator(f".st-key-act-{name}")).to_be_visible(timeout=30_000)
    assert trainer.locator("[data-testid=stException]").count() == 0
    print(f"concurrency: {SESSIONS} sessions, {requests} predictions ({during_training} while training), "
          f"{errors} errors")
