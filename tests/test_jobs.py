"""Background training jobs: after the last epoch, a job says what it is still doing."""

from __future__ import annotations

import threading
import time

from cxr.jobs import TrainingJob
from cxr.store import ModelStore
from cxr.train import TrainConfig


def test_a_job_reports_finishing_and_evaluating_after_its_epochs(tmp_path, mini_data):
    config = TrainConfig(data=mini_data, epochs=2, image_size=64, batch_size=8, name="staged")
    job = TrainingJob(config, ModelStore(tmp_path / "store"))
    seen = []
    job._set_stage = lambda stage: seen.append((stage, job.epoch)) or setattr(job, "stage", stage)
    job.run()
    assert job.status == "done", job.error
    # Calibration and the OOD gate come once both epochs are reported; the test split comes last.
    assert seen == [("finishing", 2), ("evaluating", 2)]


def test_a_cancelled_job_says_so_until_the_model_so_far_is_saved(tmp_path, mini_data):
    config = TrainConfig(data=mini_data, epochs=50, image_size=64, batch_size=8, name="cancelled")
    job = TrainingJob(config, ModelStore(tmp_path / "store"))
    thread = threading.Thread(target=job.run, daemon=True)
    thread.start()
    deadline = time.time() + 300
    while job.epoch < 1 and time.time() < deadline:
        time.sleep(0.2)
    assert job.epoch >= 1 and not job.cancelling
    job.cancel()
    assert job.cancelling and not job.finished
    thread.join(timeout=300)
    assert job.status == "cancelled", job.error
    assert not job.cancelling and job.epoch < 50 and (job.result.path / "model.keras").is_file()
