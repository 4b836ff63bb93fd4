"""Background training jobs: after the last epoch, a job says what it is still doing."""

from __future__ import annotations

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
