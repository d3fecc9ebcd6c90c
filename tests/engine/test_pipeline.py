"""The numpy pipeline of predict and eval on exported and INT8 folders (palm.engine.pipeline):
the same rows and figures as the plain paths, bad images still reported per row, resume, and
the engine thread running one batch ahead."""
from __future__ import annotations

import csv
import shutil
import signal
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from palm.data import FileImageSet, PalmTrainSet, PalmValSet, build_loader, eval_transform
from palm.engine.checkpoint import load_checkpoint_model
from palm.engine.evaluate import evaluate, evaluate_checkpoint
from palm.engine.export import export_checkpoint
from palm.engine.inference import InferencePredictor, OpenVINOPredictor
from palm.engine.pipeline import run_ahead, runs_ahead
from palm.engine.predict import predict_to_csv
from palm.engine.quantize import quantize_to_folder
from palm.predictions import probabilities


def test_run_ahead_draws_the_next_item_while_the_engine_runs():
    """fn(item 0) waits until item 1 has been drawn: without running ahead it never would."""
    drawn_second = threading.Event()
    threads = []

    def items():
        yield 0
        drawn_second.set()
        yield from range(1, 5)

    def fn(item: int) -> tuple[int, bool]:
        threads.append(threading.current_thread())
        return item * item, drawn_second.wait(timeout=5 if item == 0 else 0)

    got = list(run_ahead(fn, items()))
    assert [item for item, _ in got] == list(range(5))
    assert [square for _, (square, _) in got] == [k * k for k in range(5)]
    assert got[0][1][1] is True
    assert threading.main_thread() not in threads


def test_run_ahead_passes_on_an_error_of_fn_after_the_results_before_it():
    def fn(item: int) -> int:
        if item == 2:
            raise ValueError("item 2")
        return item

    got = []
    with pytest.raises(ValueError, match="item 2"):
        for item, result in run_ahead(fn, range(5)):
            got.append(result)
    assert got == [0, 1]


def test_run_ahead_interrupted_while_waiting_drops_the_queued_item():
    """Ctrl-C while the caller waits for item 0 with item 1 queued behind it: the interrupt
    waits for item 0's run only; item 1 is never started (it used to run to its end first,
    a second engine batch between Ctrl-C and the prompt)."""
    started = []
    release = threading.Event()

    def fn(item: int) -> int:
        started.append(item)
        release.wait(timeout=5)
        return item

    main = threading.main_thread().ident
    threading.Timer(0.2, signal.pthread_kill, (main, signal.SIGINT)).start()
    threading.Timer(0.6, release.set).start()
    with pytest.raises(KeyboardInterrupt):
        next(run_ahead(fn, range(3)))
    assert started == [0]


def test_run_ahead_hands_over_the_item_in_flight_when_drawing_fails():
    """An error (or Ctrl-C) while the next item is drawn: the item already on the engine is
    finished either way, so its result reaches the caller before the error (its rows are
    written), as without running ahead."""
    def items():
        yield from range(3)
        raise KeyboardInterrupt

    for ahead in (False, True):
        got = []
        with pytest.raises(KeyboardInterrupt):
            for item, result in run_ahead(lambda k: k * 10, items(), ahead):
                got.append(result)
        assert got == [0, 10, 20], ahead


@pytest.fixture(scope="module")
def trained(tiny_run) -> Path:
    return tiny_run("lenet5") / "best.pdparams"


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> Path:
    return export_checkpoint(trained, tmp_path_factory.mktemp("export") / "lenet5")


@pytest.fixture(scope="module")
def quantized(exported, palm_root, tmp_path_factory) -> Path:
    """An INT8 folder as `palm quantize` writes it (forced: only the pipeline matters here)."""
    train = palm_root / "PALM-Training400" / "PALM-Training400"
    out = tmp_path_factory.mktemp("int8") / "lenet5-int8"
    quantize_to_folder(exported, out, [str(p) for p in sorted(train.glob("*.jpg"))],
                       lambda meta: PalmTrainSet(train, transform=eval_transform(meta)),
                       calib_images=8, force=True, log=lambda _: None)
    return out


@pytest.fixture(scope="module")
def photos(palm_root, tmp_path_factory) -> list[str]:
    """The 16 validation photos with a truncated JPEG among them (its batch keeps 3 images)."""
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for k, src in enumerate(sorted((palm_root / "PALM-Validation400").glob("*.jpg"))):
        paths.append(str(shutil.copy(src, folder / f"{k:02d}.jpg")))
    broken = folder / "05b.jpg"
    whole = Path(paths[0]).read_bytes()
    broken.write_bytes(whole[:len(whole) // 2])
    return sorted(paths + [str(broken)])


def _rows(model, meta, paths, output: Path, **options) -> list[dict[str, str]]:
    predict_to_csv(model, meta, paths, output, batch_size=4, progress=False,
                   checkpoint_sha256="test", **{"num_workers": 0, **options})
    with open(output, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("tta", [False, True])
def test_an_fp32_export_gives_the_rows_of_the_dygraph_model(trained, exported, photos, tmp_path,
                                                            tta):
    model, meta = load_checkpoint_model(trained)
    plain = _rows(model, meta, photos, tmp_path / "dygraph.csv", tta=tta)
    predictor = InferencePredictor(exported)
    assert not runs_ahead(predictor)
    fast = _rows(predictor, predictor.meta, photos, tmp_path / "export.csv", tta=tta)
    assert [r["path"] for r in fast] == [r["path"] for r in plain] == photos  # order kept
    assert [r["error"] for r in fast] == [r["error"] for r in plain]
    assert "truncated JPEG" in fast[photos.index(str(Path(photos[0]).parent / "05b.jpg"))]["error"]
    ok = [k for k, r in enumerate(plain) if not r["error"]]
    assert len(ok) == len(photos) - 1
    np.testing.assert_allclose([float(fast[k]["probability"]) for k in ok],
                               [float(plain[k]["probability"]) for k in ok], atol=1e-4)
    assert [fast[k]["prediction"] for k in ok] == [plain[k]["prediction"] for k in ok]


def _direct_int8_probabilities(predictor: OpenVINOPredictor, paths: list[str],
                               batch_size: int) -> dict[str, str]:
    """path -> probability as predict writes it, the predictor called on the same batches."""
    images = FileImageSet(paths, eval_transform(predictor.meta), predictor.meta["image_size"])
    out = {}
    for start in range(0, len(paths), batch_size):
        read = [images[i] for i in range(start, min(start + batch_size, len(paths)))]
        ok = [k for k, (_, _, error) in enumerate(read) if not error]
        logits = predictor.predict(np.stack([read[k][0] for k in ok]))
        for k, p in zip(ok, probabilities(logits)):
            out[paths[start + k]] = f"{float(p):.6f}"
    return out


def test_int8_rows_are_the_int8_predictors_own(quantized, photos, tmp_path):
    predictor = OpenVINOPredictor(quantized)
    assert runs_ahead(predictor)
    rows = _rows(predictor, predictor.meta, photos, tmp_path / "int8.csv", num_workers=2)
    assert [r["path"] for r in rows] == photos
    expected = _direct_int8_probabilities(predictor, photos, 4)
    assert {r["path"]: r["probability"] for r in rows if not r["error"]} == expected
    assert [r["path"] for r in rows if r["error"]] == [p for p in photos if p.endswith("05b.jpg")]


def test_int8_resume_keeps_the_earlier_rows_and_predicts_the_rest(quantized, photos, tmp_path):
    predictor = OpenVINOPredictor(quantized)
    out = tmp_path / "resumed.csv"
    first = _rows(predictor, predictor.meta, photos[:6], out)
    summary = predict_to_csv(predictor, predictor.meta, photos, out, batch_size=4,
                             num_workers=0, progress=False, checkpoint_sha256="test",
                             resume=True)
    assert summary.reused == sum(1 for r in first if not r["error"])
    resumed = pd.read_csv(out, dtype=str, keep_default_na=False)
    whole = pd.DataFrame(_rows(predictor, predictor.meta, photos, tmp_path / "whole.csv"))
    # kept rows first, then the rest in order; every image's row as one run gives it
    assert sorted(resumed["path"]) == photos
    merged = resumed.merge(whole, on="path", suffixes=("", "_whole"))
    ok = merged["error"] == ""
    assert (merged["error"] == merged["error_whole"]).all()
    np.testing.assert_allclose(merged.loc[ok, "probability"].astype(float),
                               merged.loc[ok, "probability_whole"].astype(float), atol=1e-6)


def _validation(palm_root: Path, meta: dict) -> PalmValSet:
    return PalmValSet(palm_root / "PALM-Validation400",
                      palm_root / "PALM-Validation-GT" / "labels.csv",
                      transform=eval_transform(meta))


def test_eval_of_an_int8_folder_scores_the_predictors_logits(quantized, palm_root, tmp_path):
    predictor = OpenVINOPredictor(quantized)
    dataset = _validation(palm_root, predictor.meta)
    loader = build_loader(dataset, 4, train=False, num_workers=2)
    result = evaluate(predictor, loader)
    direct = np.concatenate([predictor.predict(np.stack([dataset[i][0] for i in
                                                         range(k, min(k + 4, len(dataset)))]))
                             for k in range(0, len(dataset), 4)])
    np.testing.assert_array_equal(result.logits, direct)
    np.testing.assert_array_equal(result.labels, [label for _, label in dataset.samples])
    metrics = evaluate_checkpoint(quantized, tmp_path / "eval", data_root=palm_root,
                                  batch_size=4, ci_resamples=0, log=lambda _: None)
    assert metrics["engine"] == "openvino"
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(result.labels,
                                                             probabilities(direct)))


def test_eval_of_an_fp32_export_matches_dygraph(trained, exported, palm_root):
    model, meta = load_checkpoint_model(trained)
    dataset = _validation(palm_root, meta)
    plain = evaluate(model, build_loader(dataset, 4, train=False))
    fast = evaluate(InferencePredictor(exported), build_loader(dataset, 4, train=False))
    np.testing.assert_allclose(fast.logits, plain.logits, atol=1e-4)
    np.testing.assert_array_equal(fast.labels, plain.labels)


def test_int8_resume_gives_the_csv_of_an_uninterrupted_run(quantized, photos, tmp_path):
    """A run stopped after 8 photos (the truncated one among them), then resumed: the failed
    photo, tried again, is back in its place, not after the rows kept from the first run."""
    predictor = OpenVINOPredictor(quantized)
    out = tmp_path / "resumed.csv"
    first = _rows(predictor, predictor.meta, photos[:8], out)
    assert sum(1 for r in first if "truncated JPEG" in r["error"]) == 1
    summary = predict_to_csv(predictor, predictor.meta, photos, out, batch_size=4,
                             num_workers=0, progress=False, checkpoint_sha256="test",
                             resume=True)
    assert summary.reused == 7
    resumed = pd.read_csv(out, dtype=str, keep_default_na=False)
    whole = pd.DataFrame(_rows(predictor, predictor.meta, photos, tmp_path / "whole.csv"))
    assert list(resumed["path"]) == list(whole["path"]) == photos
    assert list(resumed["error"]) == list(whole["error"])
    ok = whole["error"] == ""
    np.testing.assert_allclose(resumed.loc[ok, "probability"].astype(float),
                               whole.loc[ok, "probability"].astype(float), atol=1e-6)
