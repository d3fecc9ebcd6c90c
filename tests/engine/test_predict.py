"""palm.engine.predict: its output guard and the resume journal."""
from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

from palm.engine.checkpoint import load_checkpoint_model
from palm.engine.predict import check_output, predict_to_csv
from palm.errors import OutputRefused
from palm.weights import file_sha256


@pytest.mark.parametrize("name", ["best", "best.partial"])
def test_predict_output_beside_a_checkpoint_keeps_its_sidecar(name, fresh_checkpoint):
    """`--output run/best` wrote its record to run/best.json: the checkpoint's sidecar."""
    side = fresh_checkpoint.with_suffix(".json")
    if name == "best.partial":  # the journal's record is best.partial.json
        side.rename(fresh_checkpoint.parent / "best.partial.json")
        side = fresh_checkpoint.parent / "best.partial.json"
    before = side.read_bytes()
    with pytest.raises(OutputRefused, match=rf"--output .*{name} would replace .*{side.name}, "
                                            r"which palm did not write"):
        check_output(fresh_checkpoint.parent / name)
    assert side.read_bytes() == before


def test_resume_keeps_only_rows_of_this_runs_inputs(fresh_checkpoint, tmp_path):
    """Resuming into an output made for other files kept their rows and counted them as
    predicted images of this run."""
    images = []
    for k in range(4):
        images.append(str(tmp_path / f"img{k}.png"))
        cv2.imwrite(images[-1], np.full((40, 40, 3), 60 * k, np.uint8))
    model, meta = load_checkpoint_model(fresh_checkpoint)
    out = tmp_path / "preds.csv"
    run = dict(num_workers=0, progress=False, checkpoint_sha256=file_sha256(fresh_checkpoint))
    predict_to_csv(model, meta, images[:3], out, **run)
    summary = predict_to_csv(model, meta, images[2:], out, resume=True, **run)
    with open(out, newline="") as f:
        assert [row["path"] for row in csv.DictReader(f)] == images[2:]
    assert (summary.images, summary.reused) == (2, 1)
