"""palm.engine.evaluate: evaluation folders and what they record."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from palm.engine.checkpoint import update_sidecar
from palm.engine.evaluate import eval_output_for, evaluate_checkpoint
from palm.engine.export import export_checkpoint


@pytest.fixture(scope="module")
def checkpoint_with_selection(resnet_checkpoint: Path, palm_root: Path, tmp_path_factory) -> Path:
    """The checkpoint as training leaves best.pdparams: the validation images chose it
    (select_on val), their logits in best_selection.csv."""
    run = tmp_path_factory.mktemp("run")
    for suffix in (".pdparams", ".json"):
        shutil.copy(resnet_checkpoint.with_suffix(suffix), run / f"best{suffix}")
    files = sorted((palm_root / "PALM-Validation400").glob("*.jpg"))
    pd.DataFrame({"path": [str(f.resolve()) for f in files], "label": [i % 2 for i in
                  range(len(files))], "logit": np.linspace(-1, 1, len(files))}).to_csv(
        run / "best_selection.csv", index=False)
    update_sidecar(run / "best.pdparams", {"selection": {"select_on": "val",
                                                         "predictions": "best_selection.csv"}})
    return run / "best.pdparams"


@pytest.mark.slow  # exports and evaluates twice (~30 s)
def test_eval_of_an_export_writes_its_own_folder_and_keeps_the_selection(
        checkpoint_with_selection, palm_root, tmp_path):
    exported = export_checkpoint(checkpoint_with_selection, tmp_path / "exported" / "demo")
    assert eval_output_for(exported, None, exist_ok=False) == tmp_path / "exported" / "demo-eval"
    from_checkpoint = evaluate_checkpoint(checkpoint_with_selection, tmp_path / "ckpt-eval",
                                          data_root=palm_root, engine="dygraph",
                                          ci_resamples=0, log=lambda _: None)
    from_export = evaluate_checkpoint(exported, eval_output_for(exported, None, False),
                                      data_root=palm_root, ci_resamples=0, log=lambda _: None)
    assert from_checkpoint["selection"] == "optimistic"
    assert from_export["selection"] == from_checkpoint["selection"]
    assert from_export["selection_detail"] == from_checkpoint["selection_detail"]
    assert (tmp_path / "exported" / "demo-eval" / "metrics.json").is_file()
    assert sorted(p.name for p in exported.iterdir()) == \
        ["model.json", "model.pdiparams", "palm_meta.json"]  # nothing written inside it
