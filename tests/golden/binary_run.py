"""One binary PALM run through palm's command line: synth -> train -> eval -> predict.

`python tests/golden/binary_run.py OUT_JSON` runs it with the checkout's palm and writes what
the run measured (eval's metrics.json numbers, eval's and predict's probabilities). It was
run once at commit f2314e9, the last commit before multi-class tasks other than binary and
multiclass existed (issue 25), and its output is committed as binary_run.json;
tests/engine/test_binary_golden.py runs it again with today's code and compares.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

# keys of metrics.json that describe the machine or the moment, not the model's answers
VOLATILE = {"provenance", "engine", "compute_precision", "seconds", "images_per_second",
            "created", "checkpoint", "output", "data_root", "dataset"}


def palm(*argv: str) -> None:
    subprocess.run([sys.executable, "-m", "palm", *argv], check=True, stdout=subprocess.DEVNULL)


def answers(metrics: dict) -> dict:
    """metrics.json without the entries that describe the machine or the moment."""
    return {key: value for key, value in metrics.items() if key not in VOLATILE}


def run(work: Path) -> dict:
    data, out = work / "data", work / "run"
    palm("synth", "--output", str(data), "--n-train", "24", "--n-val", "16", "--image-size",
         "64", "--seed", "0", "--quiet")
    palm("train", "--model", "resnet18", "--data-root", str(data), "--image-size", "32",
         "--batch-size", "8", "--epochs", "2", "--num-workers", "0", "--device", "cpu",
         "--seed", "0", "--output", str(out), "--quiet")
    palm("eval", "--checkpoint", str(out / "best.pdparams"), "--data-root", str(data),
         "--output", str(work / "eval"), "--device", "cpu", "--quiet")
    palm("predict", "--checkpoint", str(out / "best.pdparams"), "--input",
         str(data / "PALM-Validation400"), "--output", str(work / "predict.csv"),
         "--device", "cpu", "--quiet")
    evaluated = pd.read_csv(work / "eval" / "predictions.csv")
    predicted = pd.read_csv(work / "predict.csv")
    return {
        "metrics": answers(json.loads((work / "eval" / "metrics.json").read_text())),
        "eval_probability": dict(zip(evaluated["path"].map(lambda p: Path(p).name),
                                     evaluated["probability"])),
        "predict_probability": dict(zip(predicted["path"].map(lambda p: Path(p).name),
                                        predicted["probability"])),
        "eval_prediction": dict(zip(evaluated["path"].map(lambda p: Path(p).name),
                                    evaluated["prediction"].astype(int))),
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        result = run(Path(folder))
    Path(sys.argv[1]).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
