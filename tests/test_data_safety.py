"""Data defaults and bad inputs: the positive class, augmentation presets, unreadable and huge
images in every loader, label/path/duplicate checks in lists, and the bounded image cache."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from palm.cli import run_tool
from palm.data import (
    CachedImageReader,
    CsvImageSet,
    FolderImageSet,
    ImageReadError,
    LoaderError,
    build_loader,
    build_transform,
    class_order,
    parse_augment,
    read_image,
    resolve_augment,
    resolve_cache_dir,
)
from palm.data import sources
from palm.engine.runner import resolved_augment
from palm.cli import eval as eval_tool
from palm.cli import train as train_tool

REPO = Path(__file__).resolve().parent.parent
T32 = build_transform(32, train=False)


def _write_png(path: Path, value: int = 100, size: tuple[int, int] = (20, 24)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((*size, 3), value, np.uint8))


def _pm_normal(palm_root: Path, root: Path) -> Path:
    """PM/ and normal/ class folders (train and val) from the synthetic PALM images."""
    train = sorted((palm_root / "PALM-Training400" / "PALM-Training400").glob("*.jpg"))
    gt = pd.read_csv(palm_root / "PALM-Validation-GT" / "labels.csv")
    for path in train:
        dst = root / "train" / ("PM" if path.name.startswith("P") else "normal")
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dst / path.name)
    for name, label in zip(gt["imgName"], gt["Label"]):
        dst = root / "val" / ("PM" if label == 1 else "normal")
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copy(palm_root / "PALM-Validation400" / name, dst / name)
    return root


def _run_tool(main, args) -> str:
    """The message a tool exits with (run_tool turns user errors into `error: ...`)."""
    with pytest.raises(SystemExit) as exc:
        run_tool(main, args)
    return str(exc.value.code)


# ---------------------------------------------------------------- positive class


def test_known_positive_name_goes_to_label_1(palm_root, tmp_path):
    root = _pm_normal(palm_root, tmp_path)
    train, val = sources.training_sets(train_transform=T32, val_transform=T32,
                                       train_dir=root / "train", val_dir=root / "val")
    # sorted folder names would make "normal" label 1
    assert train.classes == val.classes == ["normal", "PM"]
    for ds in (train, val):
        assert all((Path(p).parent.name == "PM") == bool(y) for p, y in ds.samples)
    assert class_order(["0", "1"]) == ["0", "1"]
    assert class_order(["Yes", "no"]) == ["no", "Yes"]
    assert class_order(["a", "b", "c"]) == ["a", "b", "c"]  # multi-class: unchanged


def test_unknown_names_are_refused_naming_both(tmp_path):
    for cls in ("cat", "dog"):
        for i in range(2):
            _write_png(tmp_path / "train" / cls / f"{i}.png", 50 * i)
            _write_png(tmp_path / "val" / cls / f"{i}.png", 50 * i)
    kw = {"train_transform": T32, "val_transform": T32, "train_dir": tmp_path / "train",
          "val_dir": tmp_path / "val"}
    with pytest.raises(ValueError, match=r"two classes 'cat' and 'dog'.*positive_class dog "
                                         r"or positive_class cat"):
        sources.training_sets(**kw)
    train, val = sources.training_sets(**kw, positive_class="cat")
    assert train.classes == val.classes == ["dog", "cat"]
    assert [Path(p).parent.name for p, y in train.samples if y == 1] == ["cat", "cat"]
    train, _ = sources.training_sets(**kw, class_names=["cat", "dog"])  # [negative, positive]
    assert train.classes == ["cat", "dog"]
    with pytest.raises(ValueError, match="positive class 'bird' is not one of"):
        sources.training_sets(**kw, positive_class="bird")
    with pytest.raises(ValueError, match="put 'dog' second .* positive class is 'cat'"):
        sources.training_sets(**kw, class_names=["cat", "dog"], positive_class="cat")


@pytest.fixture(scope="module")
def pm_run(palm_root, tmp_path_factory) -> tuple[Path, Path]:
    """(PM/normal data root, run folder) of a one-epoch LeNet run on class folders."""
    root = _pm_normal(palm_root, tmp_path_factory.mktemp("pm"))
    run = train_tool.main(train_tool.parse_args([
        "--model", "lenet", "--train-dir", str(root / "train"), "--val-dir", str(root / "val"),
        "--image-size", "32", "--batch-size", "8", "--epochs", "1", "--num-workers", "0",
        "--output", str(root / "run"), "--device", "cpu", "--no-progress"]))
    return root, run


def test_run_names_positive_class_and_augmentation(pm_run, tmp_path, capsys):
    root, run = pm_run
    meta = json.loads((run / "best.json").read_text())
    assert meta["class_names"] == ["normal", "PM"] and meta["positive_class"] == "PM"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["positive_class"] == "PM" and cfg["class_names"] == ["normal", "PM"]
    # class folders get the label-safe preset, resolved in full
    assert cfg["augment"] == {"preset": "natural", "hflip": False, "vflip": False, "rotate": 0.0,
                              "brightness": 0.2, "contrast": 0.2, "random_resized_crop": 0.8}

    m = eval_tool.main(eval_tool.get_args_parser().parse_args([
        "--checkpoint", str(run / "best.pdparams"), "--val-dir", str(root / "val"),
        "--output", str(tmp_path / "eval"), "--positive-class", "PM"]))
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert m["positive_class"] == written["positive_class"] == "PM"
    preds = pd.read_csv(tmp_path / "eval" / "predictions.csv")
    assert ((preds["label"] == 1) == preds["path"].str.contains("/PM/")).all()
    args = eval_tool.get_args_parser().parse_args([
        "--checkpoint", str(run / "best.pdparams"), "--val-dir", str(root / "val"),
        "--output", str(tmp_path / "eval2"), "--positive-class", "normal"])
    assert _run_tool(eval_tool.main, args) == (
        "error: the checkpoint's positive class is 'PM' (classes ['normal', 'PM']), not 'normal'")


def test_start_line_names_positive_class(pm_run, capsys):
    root, _ = pm_run
    out_dir = root / "run2"
    train_tool.main(train_tool.parse_args([
        "--model", "lenet", "--train-dir", str(root / "train"), "--val-dir", str(root / "val"),
        "--image-size", "32", "--batch-size", "8", "--epochs", "1", "--num-workers", "0",
        "--output", str(out_dir), "--device", "cpu", "--no-progress", "--augment",
        "none,contrast=0.1"]))
    out = capsys.readouterr().out
    assert "classes ['normal', 'PM'], positive class 'PM'" in out
    assert "augmentation none: contrast 0.1" in out
    assert yaml.safe_load((out_dir / "config.yaml").read_text())["augment"]["preset"] == "none"


# ---------------------------------------------------------------- augmentation presets


def _arrow(pointing_left: bool) -> np.ndarray:
    """A white arrow on black whose tip is on the left (or right)."""
    img = np.zeros((48, 48, 3), np.uint8)
    cv2.fillPoly(img, [np.array([[4, 24], [20, 8], [20, 40]])], (255, 255, 255))
    cv2.rectangle(img, (20, 18), (44, 30), (255, 255, 255), -1)
    return img if pointing_left else np.ascontiguousarray(img[:, ::-1])


def _points_left(x: np.ndarray) -> bool:
    """The arrow head (the tallest lit column, at the triangle's base) is in the left half."""
    gray = x.mean(axis=0)
    gray = gray - gray.min()
    w = gray.shape[1]
    rows_lit = (gray > gray.max() / 2).sum(axis=0)
    return rows_lit[: w // 2].max() > rows_lit[w // 2 :].max()


def test_generic_default_never_flips_or_rotates():
    cfg = {"augment": None, "data_root": None, "train_csv": None, "val_csv": None}
    generic = resolved_augment(cfg)
    assert generic["preset"] == "natural"
    assert not generic["hflip"] and not generic["vflip"] and generic["rotate"] == 0
    assert resolved_augment({**cfg, "data_root": "data/PALM"})["preset"] == "fundus"
    # a data root holding the images of CSV lists is not the PALM layout
    lists = {**cfg, "data_root": "data", "train_csv": "t.csv", "val_csv": "v.csv"}
    assert resolved_augment(lists) == generic

    left, right = _arrow(True), _arrow(False)
    assert _points_left(T32(left)) and not _points_left(T32(right))
    safe = build_transform(32, train=True, augment=generic)
    fundus = build_transform(32, train=True, augment="fundus")
    np.random.seed(0)
    assert all(_points_left(safe(left)) and not _points_left(safe(right)) for _ in range(40))
    # the check can fail: fundus flips turn some arrows around
    assert sum(_points_left(fundus(right)) for _ in range(40)) > 5


def test_augment_text_and_mapping_settings():
    assert parse_augment("natural,hflip=true,rotate=5") == {"preset": "natural", "hflip": True,
                                                            "rotate": 5}
    a = resolve_augment("natural,hflip=true", "fundus")
    assert a["preset"] == "natural" and a["hflip"] and not a["vflip"]
    b = resolve_augment({"rotate": 0}, "fundus")  # an old-style override map
    assert b["preset"] == "fundus" and b["hflip"] and b["rotate"] == 0.0
    assert resolve_augment(b, "natural") == b  # a saved config.yaml reads back the same
    assert resolve_augment("none", "fundus")["random_resized_crop"] == 1.0
    for bad, message in (("blurry", "unknown augment preset 'blurry'"),
                         ("blur=1", r"unknown augment keys \['blur'\]"),
                         ("rotate=400", r"rotate=400 out of range \[0, 180\]"),
                         ("hflip=maybe", "hflip must be true or false"),
                         ("none,fundus", "two presets")):
        with pytest.raises(ValueError, match=message):
            resolve_augment(bad, "natural")


def test_model_configs_load_with_the_new_augment_default():
    for path in sorted((REPO / "palm" / "configs").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        resolve_augment(cfg.get("augment"), "fundus")  # none sets one today; any must resolve


# ---------------------------------------------------------------- bad images in loaders


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_image_read_error_pickles():
    e = pickle.loads(pickle.dumps(ImageReadError("x/a.jpg", "truncated JPEG")))
    assert (e.path, e.problem, str(e)) == ("x/a.jpg", "truncated JPEG", "x/a.jpg: truncated JPEG")


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_loader_raises_bad_image_in_main_process(pm_run, tmp_path, workers):
    root, _ = pm_run
    shutil.copytree(root / "val", tmp_path / "val")
    bad = sorted((tmp_path / "val" / "PM").glob("*.jpg"))[1]
    _truncate(bad)
    ds = FolderImageSet(tmp_path / "val", transform=T32, cache_dir=None)
    start = time.monotonic()
    with pytest.raises(ImageReadError) as exc:
        for _ in build_loader(ds, 4, train=False, num_workers=workers):
            pass
    assert time.monotonic() - start < 30
    assert exc.value.path == str(bad) and "truncated JPEG" in exc.value.problem


def test_loader_bug_in_a_sample_raises_with_its_traceback(tmp_path):
    ds = FolderImageSet(_pm_free_folder(tmp_path), transform=T32, cache_dir=None)

    def broken(path):
        raise KeyError("boom")

    ds.read = broken
    with pytest.raises(LoaderError, match=r"(?s)Traceback.*KeyError: 'boom'"):
        next(iter(build_loader(ds, 2, train=False)))


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["0", "2"])
def test_eval_with_truncated_image_ends_naming_it(pm_run, tmp_path, workers):
    root, run = pm_run
    shutil.copytree(root / "val", tmp_path / "val")
    bad = sorted((tmp_path / "val" / "normal").glob("*.jpg"))[0]
    _truncate(bad)
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "tools/eval.py", "--checkpoint", str(run / "best.pdparams"),
         "--val-dir", str(tmp_path / "val"), "--output", str(tmp_path / "eval"),
         "--num-workers", workers, "--cache-dir", "none", "--engine", "dygraph"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=120)
    elapsed = time.monotonic() - start
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert lines[-1] == f"error: {bad}: truncated JPEG (no end-of-image marker)"
    assert "Traceback" not in proc.stderr
    assert elapsed < 60  # startup and the model load; it used to wait forever


# ---------------------------------------------------------------- huge images


def test_pixel_cap_refuses_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "wide.png"
    _write_png(path, 10, (100, 3000))
    assert read_image(path).shape == (100, 3000, 3)
    with pytest.raises(ImageReadError, match=r"3000x100 pixels would decode to 0 MP, over the "
                                             r"limit of 0.1 MP"):
        read_image(path, max_pixels=100_000)
    monkeypatch.setenv("PALM_MAX_PIXELS", "1e5")  # YAML and the environment give text
    with pytest.raises(ImageReadError, match="over the limit"):
        read_image(path)
    monkeypatch.setenv("PALM_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="PALM_MAX_PIXELS='lots': not a number"):
        read_image(path)
    monkeypatch.delenv("PALM_MAX_PIXELS")
    with pytest.raises(ValueError, match="cache_size_gb=-1: must be a positive number"):
        FolderImageSet(tmp_path, cache_size_gb=-1)
    jpeg = tmp_path / "big.jpg"
    cv2.imwrite(str(jpeg), np.full((1600, 1600, 3), 90, np.uint8))
    assert read_image(jpeg, target_size=200, max_pixels=100_000).shape == (200, 200, 3)  # 1/8
    with pytest.raises(ImageReadError, match="at 1/2 scale"):
        read_image(jpeg, target_size=700, max_pixels=100_000)


_MEASURE = """
import resource, sys
from palm.data import ImageReadError, read_image
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
base = peak_mb()
img = read_image(sys.argv[1], target_size=224)
reduced = peak_mb() - base
try:
    read_image(sys.argv[1])
    refused = False
except ImageReadError as e:
    refused = "over the limit of 100 MP" in str(e)
print(img.shape[0], img.shape[1], reduced, peak_mb() - base, refused)
"""

_MAKE_HUGE = """
import sys, cv2, numpy as np
ok, buf = cv2.imencode(".jpg", np.full((20000, 20000), 128, np.uint8))
buf.tofile(sys.argv[1])
"""


@pytest.mark.slow
def test_20000px_jpeg_stays_under_memory_bound(tmp_path):
    """A 20000x20000 JPEG (400 MP, 1.2 GB as RGB) read for a 224 px model decodes at 1/8
    scale; a full decode is refused from the header. Peak RSS grows by < 150 MB."""
    path = tmp_path / "huge.jpg"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("PALM_MAX_PIXELS", None)
    subprocess.run([sys.executable, "-c", _MAKE_HUGE, str(path)], check=True, timeout=120)
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(path)], env=env, check=True,
                         capture_output=True, text=True, timeout=120).stdout.split()
    (h, w), (reduced_mb, total_mb), refused = map(int, out[:2]), map(float, out[2:4]), out[4]
    assert (h, w) == (2500, 2500)
    assert reduced_mb < 150 and total_mb < 150, (reduced_mb, total_mb)
    assert refused == "True"


_DECODE_PEAK = """
import sys
from palm.data import ImageReadError, read_image
def status_mb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(field))
with open("/proc/self/clear_refs", "w") as f:  # peak := now, not the peak of importing paddle
    f.write("5")
base = status_mb("VmRSS")
try:
    shape = read_image(sys.argv[1], max_pixels=int(sys.argv[2])).shape
except ImageReadError as e:
    shape = str(e)
print(status_mb("VmHWM") - base, shape)
"""


def _decode_peak_mb(path: Path, max_pixels: int) -> tuple[float, str]:
    """(growth of peak RSS in MB, shape or error) of read_image in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", _DECODE_PEAK, str(path), str(max_pixels)],
                         env=env, check=True, capture_output=True, text=True, timeout=120)
    peak, result = out.stdout.strip().split(" ", 1)
    return float(peak), result


def test_16_bit_rgba_png_decodes_without_a_full_depth_copy(tmp_path):
    """A 16-bit RGBA PNG decoded unchanged (8 bytes a pixel) and then converted (4 + 3) took
    15.5 bytes a pixel: 1.55 GB for 99 MP under a cap meant for 300 MB. libpng now strips
    the depth and alpha row by row; OpenCV 5.1 still holds about twice the 3-byte result."""
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), np.full((2000, 2000, 4), 40000, np.uint16))  # 4 MP, a few KB
    peak, shape = _decode_peak_mb(path, 5_000_000)
    assert shape == "(2000, 2000, 3)"
    assert peak < 4 * 8, f"{peak:.0f} MB for 4 MP: {peak / 4:.1f} bytes a pixel"


def test_16_bit_rgba_tiff_over_the_byte_budget_is_refused_before_decoding(tmp_path):
    """TIFF decodes at its own depth: 4 MP of 16-bit RGBA is 32 MB, over the 3-byte budget of
    max_pixels=5 MP (15 MB) although it has fewer pixels; nothing is decoded."""
    path = tmp_path / "deep.tif"
    cv2.imwrite(str(path), np.full((2000, 2000, 4), 40000, np.uint16))
    peak, error = _decode_peak_mb(path, 5_000_000)
    assert "16-bit 4-channel image of 2000x2000 pixels would decode to 32 MB (8 bytes a pixel)" \
        in error and "over the limit of 15 MB" in error, error
    assert peak < 5, peak  # the decoded image alone takes 32 MB
    assert read_image(path, max_pixels=11_000_000).shape == (2000, 2000, 3)  # 33 MB budget


# ---------------------------------------------------------------- lists: labels, paths, rows


def _csv_set(tmp_path: Path, labels: list[object], names: list[str] | None = None) -> Path:
    names = names or [f"img/{i}.png" for i in range(len(labels))]
    for name in names:
        if not name.startswith(".."):
            _write_png(tmp_path / name, 7)
    pd.DataFrame({"path": names, "label": labels}).to_csv(tmp_path / "list.csv", index=False)
    return tmp_path / "list.csv"


@pytest.mark.parametrize("stray", [2, "yes"])
def test_stray_label_names_the_row(tmp_path, stray):
    labels: list[object] = [i % 2 for i in range(120)]
    labels[40] = stray  # file row 42
    csv = _csv_set(tmp_path, labels)
    with pytest.raises(ValueError, match=rf"list\.csv row 42: label {stray!r}"):
        CsvImageSet(csv, transform=T32)
    ds = CsvImageSet(csv, transform=T32, skip_bad=True)
    assert ds.classes == ["0", "1"] and len(ds) == 119 and ds.skipped[0][0].endswith("row 42")
    labels[40] = 1
    assert CsvImageSet(_csv_set(tmp_path, labels), transform=T32).classes == ["0", "1"]


def test_stray_label_through_train_tool_is_one_line(tmp_path):
    labels: list[object] = [i % 2 for i in range(120)]
    labels[7] = 2
    csv = _csv_set(tmp_path, labels)
    args = train_tool.parse_args(["--model", "lenet", "--train-csv", str(csv), "--val-csv",
                                  str(csv), "--output", str(tmp_path / "run")])
    message = _run_tool(train_tool.main, args)
    assert message == f"error: {csv} row 9: label 2 occurs in 1 of 120 rows (a typo? list " \
                      "every class in class_names to keep it)"


def test_outside_paths_need_the_flag(tmp_path):
    (tmp_path / "lists").mkdir()
    _write_png(tmp_path / "outside.png")
    _write_png(tmp_path / "lists" / "in.png")
    csv = tmp_path / "lists" / "l.csv"
    csv.write_text("path,label\nin.png,0\n../outside.png,1\n")
    with pytest.raises(ValueError, match=r"l\.csv row 3: path '\.\./outside\.png' escapes the "
                                         r"image folder .*allow_outside_paths"):
        CsvImageSet(csv, classes=["a", "b"], transform=T32)
    csv.write_text(f"path,label\nin.png,0\n{tmp_path / 'outside.png'},1\n")
    with pytest.raises(ValueError, match="row 3: path absolute path .* not allowed"):
        CsvImageSet(csv, classes=["a", "b"], transform=T32)
    ds = CsvImageSet(csv, classes=["a", "b"], transform=T32, allow_outside_paths=True)
    assert [Path(p).name for p, _ in ds.samples] == ["in.png", "outside.png"]
    # lists written beside the data (data_tools.prepare) may lead into the data root
    csv.write_text("path,label\nin.png,0\n../outside.png,1\n")
    assert len(CsvImageSet(csv, classes=["a", "b"], transform=T32, data_root=tmp_path)) == 2
    with pytest.raises(ValueError, match="escapes the image folder .* and the data root"):
        CsvImageSet(csv, classes=["a", "b"], transform=T32, data_root=tmp_path / "lists")
    # a symlinked image folder inside the list's folder is fine (names are checked as written)
    (tmp_path / "lists" / "linked").symlink_to(tmp_path)
    csv.write_text("path,label\nin.png,0\nlinked/outside.png,1\n")
    assert len(CsvImageSet(csv, classes=["a", "b"], transform=T32)) == 2


def test_duplicate_rows_dropped_with_warning_and_conflicts_refused(tmp_path, caplog):
    csv = _csv_set(tmp_path, [0, 1, 0], ["img/a.png", "img/b.png", "img/./a.png"])
    ds = CsvImageSet(csv, classes=["x", "y"], transform=T32)
    assert len(ds) == 2 and ds.labels.tolist() == [0, 1]
    assert ds.duplicates == [f"{csv} row 4: {tmp_path / 'img/./a.png'} repeats {csv} row 2; "
                             "dropped"]
    assert "1 duplicate rows dropped" in caplog.text
    csv = _csv_set(tmp_path, [0, 1, 1], ["img/a.png", "img/b.png", "img/a.png"])
    with pytest.raises(ValueError, match=r"row 4: .*a\.png is also listed in .* row 2 with "
                                         "another label"):
        CsvImageSet(csv, classes=["x", "y"], transform=T32)


# ---------------------------------------------------------------- bounded cache


def test_cache_evicts_least_recently_used(tmp_path):
    files = []
    for i in range(4):
        files.append(tmp_path / f"{i}.png")
        _write_png(files[-1], 40 * i, (40, 40))
    probe = CachedImageReader(tmp_path / "probe", 32)
    probe(files[0])
    entry = next((tmp_path / "probe").glob("*.npy")).stat().st_size

    reader = CachedImageReader(tmp_path / "cache", 32, max_bytes=int(entry * 3.5))
    for path in files[:3]:
        reader(path)
        time.sleep(0.02)  # distinct modification times
    reader(files[0])  # a hit: files[0] is now the most recent
    time.sleep(0.02)
    reader(files[3])  # over the limit: evict down to 80 % (2 entries)
    kept = {p.name for p in (tmp_path / "cache").glob("*.npy")}
    assert kept == {reader.cache_path(files[0]).name, reader.cache_path(files[3]).name}
    assert sum(p.stat().st_size for p in (tmp_path / "cache").glob("*.npy")) <= 3.5 * entry


def test_cache_bound_holds_with_two_writers(tmp_path):
    """Two readers on one folder (as two loader workers) each see the other's entries."""
    files = []
    for i in range(10):
        files.append(tmp_path / f"{i}.png")
        _write_png(files[-1], 20 * i, (40, 40))
    a = CachedImageReader(tmp_path / "cache", 32, max_bytes=10**9)
    a(files[0])
    entry = next((tmp_path / "cache").glob("*.npy")).stat().st_size
    limit = int(entry * 4.5)
    readers = [CachedImageReader(tmp_path / "cache", 32, max_bytes=limit) for _ in range(2)]
    for i, path in enumerate(files):
        readers[i % 2](path)
        total = sum(p.stat().st_size for p in (tmp_path / "cache").glob("*.npy"))
        assert total <= limit + entry  # each reader alone would have let 9 entries pile up


def test_cache_keys_follow_file_and_size(tmp_path):
    path = tmp_path / "a.png"
    _write_png(path, 30, (64, 64))
    reader = CachedImageReader(tmp_path / "cache", 32)
    assert reader(path).mean() == 30
    _write_png(path, 200, (64, 80))  # replaced: new size and mtime
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert reader(path).mean() == 200  # not the stale entry
    other = CachedImageReader(tmp_path / "cache", 48)
    assert other.cache_path(path) != reader.cache_path(path)  # decode size is part of the key
    assert other(path).shape == (48, 60, 3)


def test_unusable_cache_dir_warns_once_and_reads(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert resolve_cache_dir(blocker / "cache") is None  # explicit folder below a file
    assert caplog.text.count("cannot create the image cache") == 1
    ds = FolderImageSet(_pm_free_folder(tmp_path), transform=T32, cache_dir=blocker / "cache")
    assert ds[0][0].shape == (3, 32, 32)


def _pm_free_folder(tmp_path: Path) -> Path:
    for cls in ("a", "b"):
        _write_png(tmp_path / "set" / cls / "x.png")
    return tmp_path / "set"
