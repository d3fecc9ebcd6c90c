"""report.html: sections, embedded images only, and a real render in headless Chromium."""
from __future__ import annotations

import html
import json
import re
import subprocess
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import paddle
import pytest
import yaml

from palm.engine.checkpoint import save_checkpoint
from palm.io_utils import write_json_atomic
from palm.models import build_model
from palm.reports.gallery import select_cases
from palm.reports.report import build_report
from palm.cli import run_tool
from palm.cli import report as report_tool

CHROMIUM = Path("/usr/bin/chromium")
IMG_SRC = re.compile(r'<img[^>]*\ssrc="([^"]*)"')


def _png(path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(3, 2.5))
    ax.plot([0, 1], [0, 1])
    ax.set_title(title)
    fig.savefig(path)
    plt.close(fig)


@pytest.fixture(scope="module")
def run_and_eval(palm_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A run folder and an eval folder in the layout tools/train.py and tools/eval.py write."""
    base = tmp_path_factory.mktemp("report")
    run, ev = base / "run", base / "eval"
    run.mkdir()
    ev.mkdir()
    paddle.seed(0)
    model = build_model("lenet", 1, image_size=64)
    save_checkpoint(run / "best.pdparams", model, {
        "model": "lenet", "num_classes": 1, "class_names": ["non-PM", "PM"], "image_size": 64,
        "normalize": "minus_one_one", "fundus_crop": False, "threshold": 0.5, "epoch": 2,
        "metrics": {"val_auc": 0.8125}, "model_kwargs": {"image_size": 64},
    })
    (run / "config.yaml").write_text(yaml.safe_dump({
        "model": "lenet", "image_size": 64, "epochs": 3, "lr": 0.001, "data_root": str(palm_root),
    }))
    # no loss_curve.png / metrics_curve.png: the report redraws them from metrics.csv
    pd.DataFrame({
        "epoch": [1, 2, 3], "train_loss": [0.69, 0.55, 0.41], "val_loss": [0.70, 0.60, 0.58],
        "val_accuracy": [0.5, 0.69, 0.75], "val_roc_auc": [0.55, 0.81, 0.80],
    }).to_csv(run / "metrics.csv", index=False)
    # data_tools.inspect plots in the data folder join the report
    (palm_root / "inspect").mkdir(exist_ok=True)
    _png(palm_root / "inspect" / "class_counts.png", "class counts")

    gt = pd.read_csv(palm_root / "PALM-Validation-GT" / "labels.csv")
    rng = np.random.default_rng(0)
    prob = 0.25 * gt["Label"] + rng.uniform(0, 0.75, len(gt))  # informative, 5 errors of 16
    pd.DataFrame({
        "path": [str(palm_root / "PALM-Validation400" / f) for f in gt["imgName"]],
        "label": gt["Label"], "probability": prob.round(4), "prediction": (prob >= 0.5).astype(int),
    }).to_csv(ev / "predictions.csv", index=False)
    write_json_atomic(ev / "metrics.json", {
        "accuracy": 0.75, "roc_auc": 0.8125, "sensitivity": 0.875, "specificity": 0.625,
        "threshold": 0.5, "counts": {"tp": 7, "fn": 1, "tn": 5, "fp": 3},
    })
    for name in ("confusion_matrix", "roc_curve", "pr_curve"):
        _png(ev / f"{name}.png", name)
    return run, ev


@pytest.fixture(scope="module")
def tools_report(palm_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """report.html from the real commands: train (2 epochs, lenet, 64 px) -> eval --report,
    with data_tools.inspect's plots in runs/inspect as its default --out would put them."""
    from palm.cli import inspect as inspect_tool
    from palm.cli import eval as eval_tool
    from palm.cli import train as train_tool

    runs = tmp_path_factory.mktemp("runs")
    inspect_tool.main(inspect_tool.get_args_parser().parse_args(
        [str(palm_root), "--out", str(runs / "inspect")]))
    run = train_tool.main(train_tool.parse_args([
        "--model", "lenet", "--data-root", str(palm_root), "--image-size", "64", "--epochs", "2",
        "--batch-size", "8", "--num-workers", "0", "--output", str(runs / "lenet"), "--seed", "0",
        "--device", "cpu", "--no-progress",
    ]))
    ev = runs / "lenet" / "eval"
    eval_tool.main(eval_tool.get_args_parser().parse_args([
        "--checkpoint", str(Path(run) / "best.pdparams"), "--data-root", str(palm_root),
        "--output", str(ev), "--device", "cpu", "--report",
    ]))
    return ev / "report.html"


def test_eval_report_from_the_real_tools(tools_report):
    page = tools_report.read_text(encoding="utf-8")
    for text in ("palm report: lenet", "Training curves", "loss_curve.png", "metrics_curve.png",
                 "roc_auc", "confusion_matrix.png", "roc_curve.png", "pr_curve.png",
                 "Most confident correct", "class_counts.png", "image_sizes.png"):
        assert text in page, text
    assert "redrawn" not in page  # the run drew its own curves
    srcs = IMG_SRC.findall(page)
    assert len(srcs) >= 2 + 3 + 2 + 2 and all(s.startswith("data:image/") for s in srcs)
    assert "class=\"note\"" not in page, re.findall(r'class="note">([^<]*)', page)


def test_select_cases_ranks_by_confidence_of_the_predicted_class():
    df = pd.DataFrame({
        "path": list("abcdef"), "label": [1, 0, 1, 0, 1, 0],
        "probability": [0.97, 0.9, 0.2, 0.05, 0.6, 0.45], "prediction": [1, 1, 0, 0, 1, 0],
    })
    errors, correct = select_cases(df, 2)
    assert list(errors["path"]) == ["b", "c"]  # b: 0.9 sure of PM; c: 0.8 sure of non-PM
    assert list(correct["path"]) == ["a", "d"]  # 0.97 sure of PM, 0.95 sure of non-PM
    # multi-class: the largest probability_<class> is the predicted class's
    multi = df.drop(columns="probability").assign(
        probability_x=[0.97, 0.1, 0.2, 0.05, 0.6, 0.45],
        probability_y=[0.03, 0.9, 0.8, 0.95, 0.4, 0.55])
    errors, correct = select_cases(multi, 2)
    assert list(errors["path"]) == ["b", "c"] and list(correct["path"]) == ["a", "d"]
    with pytest.raises(ValueError, match="prediction"):
        select_cases(df.drop(columns="prediction"), 2)


def test_galleries_show_both_classes_when_one_is_more_confident():
    """The correct cases of the confident class do not crowd out the other class."""
    df = pd.DataFrame({
        "path": list("abcdef"), "label": [1, 1, 1, 0, 0, 0],
        "probability": [0.99, 0.98, 0.97, 0.3, 0.35, 0.4], "prediction": [1, 1, 1, 0, 0, 0],
    })
    _, correct = select_cases(df, 2)
    assert list(correct["path"]) == ["a", "d"]  # not a, b: one of each class
    assert sorted(correct["label"]) == [0, 1]


def test_report_is_self_contained_with_every_section(run_and_eval):
    run, ev = run_and_eval
    out = build_report(run, ev, gallery_size=3)
    assert out == ev / "report.html"
    page = out.read_text(encoding="utf-8")
    for heading in ("Model and configuration", "Training curves", "Evaluation results",
                    "Most confident errors (3)", "Most confident correct (3)", "Data set"):
        assert heading in page, heading
    n_params = sum(int(np.prod(p.shape)) for p in build_model("lenet", 1, image_size=64).parameters())
    assert f"{n_params:,}" in page
    assert "redrawn from metrics.csv" in page
    assert "Decision threshold: <b>0.5000</b>" in page
    assert "<tr><th>task</th><td>binary</td></tr>" in page
    srcs = IMG_SRC.findall(page)
    # 2 redrawn curves + 3 eval plots + 1 inspect plot + (photo + Grad-CAM) x 6 cases
    assert len(srcs) == 2 + 3 + 1 + 12
    assert all(s.startswith("data:image/") for s in srcs)
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from outside
    assert "<script" not in page


def test_report_tool_without_eval(run_and_eval, tmp_path):
    from palm.cli import report as report_tool

    run, _ = run_and_eval
    out = tmp_path / "r.html"
    args = report_tool.get_args_parser().parse_args(["--run", str(run), "--output", str(out)])
    assert report_tool.main(args) == 0
    page = out.read_text(encoding="utf-8")
    assert "Training curves" in page and "Most confident" not in page
    with pytest.raises(FileNotFoundError, match="nope"):
        build_report(tmp_path / "nope")


# Appended to a copy of the report for the test only: after load, record each image's decoded
# width and src prefix where --dump-dom can read them.
IMG_CHECK = """<pre id="imgcheck"></pre><script>
window.addEventListener('load', () => {
  document.getElementById('imgcheck').textContent = Array.from(document.images)
    .map(i => i.naturalWidth + ' ' + i.getAttribute('src').slice(0, 15)).join('\\n');
});
</script>"""


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium absent (Debian package chromium)")
@pytest.mark.slow
def test_report_renders_in_headless_chromium(tools_report, tmp_path):
    report = tools_report
    n_img = len(IMG_SRC.findall(report.read_text(encoding="utf-8")))

    shot = tmp_path / "report.png"
    res = _chromium([f"--screenshot={shot}", "--window-size=1200,2000", report.as_uri()],
                    tmp_path / "profile1")
    assert shot.is_file(), res.stderr[-2000:]
    img = cv2.imread(str(shot))
    assert img.shape[:2] == (2000, 1200)
    assert img.std() > 20  # rendered content, not a blank page

    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text(encoding="utf-8").replace("</body>", IMG_CHECK + "</body>"),
                     encoding="utf-8")
    res = _chromium(["--dump-dom", "--virtual-time-budget=10000", probe.as_uri()],
                    tmp_path / "profile2")
    found = re.search(r'<pre id="imgcheck">(.*?)</pre>', res.stdout, re.DOTALL)
    assert found, res.stderr[-2000:]
    lines = html.unescape(found.group(1)).strip().splitlines()
    assert len(lines) == n_img > 0
    for line in lines:
        width, prefix = line.split(" ", 1)
        assert prefix.startswith("data:image/"), line
        assert int(width) > 0, line


# Appended to a copy of the report: the page's layout facts at the window size, for --dump-dom.
LAYOUT_CHECK = """<pre id="layout"></pre><script>
window.addEventListener('load', () => {
  const top = (e) => e ? e.getBoundingClientRect().top + window.scrollY : -1;
  document.getElementById('layout').textContent = JSON.stringify({
    scrollWidth: document.documentElement.scrollWidth,
    clientWidth: document.documentElement.clientWidth,
    summary: top(document.querySelector('.summary')),
    h2: Array.from(document.querySelectorAll('h2')).map(h => [h.textContent, top(h)]),
  });
});
</script>"""


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium absent (Debian package chromium)")
@pytest.mark.slow
def test_report_leads_with_results_and_fits_a_narrow_window(tools_report, tmp_path):
    """Issue 22: results before ~45 rows of config, and no sideways scrolling on a phone."""
    page = tools_report.read_text(encoding="utf-8")
    probe = tmp_path / "layout.html"
    probe.write_text(page.replace("</body>", LAYOUT_CHECK + "</body>"), encoding="utf-8")
    res = _chromium(["--dump-dom", "--window-size=420,900", "--virtual-time-budget=10000",
                     probe.as_uri()], tmp_path / "profile")
    found = re.search(r'<pre id="layout">(.*?)</pre>', res.stdout, re.DOTALL)
    assert found, res.stderr[-2000:]
    layout = json.loads(html.unescape(found.group(1)))
    assert layout["clientWidth"] <= 500  # headless Chromium windows are at least 500 px
    assert layout["scrollWidth"] <= layout["clientWidth"], layout
    tops = dict(layout["h2"])
    assert layout["h2"][0][0] == "Evaluation results", layout["h2"]
    assert tops["Evaluation results"] < layout["summary"] < tops["Training curves"] \
        < tops["Model and configuration"] < tops["About this evaluation"], layout


def test_report_operating_points_show_the_bootstrap_intervals(run_and_eval, tmp_path):
    """metrics.json's bootstrap intervals of the operating points reach the report."""
    from palm import metrics as M

    run, ev = run_and_eval
    y = np.repeat([0, 1], 30)
    p = np.clip(0.4 * y + np.random.default_rng(1).uniform(0, 0.6, 60), 0, 1)
    points = M.operating_points(y, p, resamples=200)
    ev2 = tmp_path / "eval"
    ev2.mkdir()
    metrics = json.loads((ev / "metrics.json").read_text()) | {"operating_points": points}
    write_json_atomic(ev2 / "metrics.json", metrics)
    page = build_report(run, ev2, gallery_size=0).read_text(encoding="utf-8")
    low, high = points["sens_at_spec_0.90"]["sensitivity_bootstrap_ci"]
    assert f"sensitivity ({low:.3f}\u2013{high:.3f})" in page
    low, high = points["youden"]["j_bootstrap_ci"]
    assert f"j ({low:.3f}\u2013{high:.3f})" in page


def _exit(main, args) -> int | str | None:
    """The exit code (or `error: ...` line) of a tool run as its command line runs it."""
    with pytest.raises(SystemExit) as info:
        run_tool(main, args)
    return info.value.code


def test_report_on_empty_folders_is_an_error_and_writes_nothing(tmp_path):
    run, evaluation = tmp_path / "run", tmp_path / "eval"
    run.mkdir()
    evaluation.mkdir()
    args = report_tool.get_args_parser().parse_args(["--run", str(run), "--eval", str(evaluation)])
    assert _exit(report_tool.main, args) == (
        f"error: {run}: not a training run folder (none of config.yaml, metrics.csv, "
        "best.pdparams, last.pdparams); nothing to report")
    (run / "metrics.csv").write_text("epoch,train_loss\n1,0.5\n")
    assert _exit(report_tool.main, args) == (
        f"error: {evaluation}: not an evaluation folder (none of metrics.json, predictions.csv); "
        "nothing to report")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["eval", "metrics.csv", "run"]
