import os
import stat

import pytest

from palm.io_utils import atomic_path, write_json_atomic
import re
from palm.errors import OutputRefused
from palm.io_utils import output_lock
import numpy as np
import pandas as pd
from palm.io_utils import escape_formula, read_csv, unescape_formula, write_csv_atomic
from tests.formula_cells import DANGEROUS, NAMES, assert_no_formula_cells
from palm.io_utils import replace_outputs
import subprocess
import sys
from pathlib import Path


def test_atomic_write_leaves_no_temp_and_uses_umask_permissions(tmp_path):
    target = tmp_path / "sub" / "out.json"
    write_json_atomic(target, {"a": 1})
    assert target.read_text().strip().startswith("{")
    assert os.listdir(target.parent) == ["out.json"]
    mode = stat.S_IMODE(target.stat().st_mode)
    mask = os.umask(0)
    os.umask(mask)
    assert mode == 0o666 & ~mask


def test_failed_write_keeps_previous_file(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["keep.txt"]


@pytest.mark.parametrize("link", ["symbolic", "hard"])
@pytest.mark.parametrize("folder", [False, True])
def test_link_planted_as_lock_file_is_refused_and_its_target_kept(link, folder, tmp_path):
    """The lock file is truncated and written: a link at its name clobbered what it led to."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    output = tmp_path / ("run" if folder else "out.csv")
    lock = output / ".lock" if folder else tmp_path / "out.csv.lock"
    lock.parent.mkdir(exist_ok=True)
    if link == "symbolic":
        lock.symlink_to(victim)
    else:
        os.link(victim, lock)
    with pytest.raises(OutputRefused, match=re.escape(str(lock))):
        with output_lock(output, folder=folder):
            pass
    assert victim.read_text() == "precious"


def test_escape_and_unescape_round_trip():
    for name in NAMES + ["-0.25", "+1e-3", "-inf", "''=x", "'abc", ""]:
        assert unescape_formula(escape_formula(name)) == name
    assert [escape_formula(n) for n in DANGEROUS] == ["'" + n for n in DANGEROUS]
    assert escape_formula("-0.25") == "-0.25" and escape_formula("'=x") == "''=x"
    assert escape_formula(-0.25) == -0.25 and escape_formula(None) is None


def test_write_csv_escapes_text_and_keeps_numbers(tmp_path):
    frame = pd.DataFrame({"path": NAMES, "logit": np.linspace(-0.25, 0.5, len(NAMES)),
                          "=header": ["-x"] * len(NAMES)})
    write_csv_atomic(tmp_path / "t.csv", frame)
    assert_no_formula_cells(tmp_path / "t.csv")
    raw = pd.read_csv(tmp_path / "t.csv")  # what a user's pandas sees
    assert raw["logit"].dtype == float and raw["logit"][0] == -0.25
    assert list(raw["path"]) == [escape_formula(n) for n in NAMES]
    assert read_csv(tmp_path / "t.csv").equals(frame)


def test_replace_outputs_keeps_old_files_on_failure(tmp_path):
    (tmp_path / "metrics.json").write_text("old")
    (tmp_path / "report.html").write_text("old")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError):
        with replace_outputs(tmp_path, ("metrics.json", "report.html")) as staging:
            (staging / "metrics.json").write_text("new")
            raise RuntimeError("crash")
    assert (tmp_path / "metrics.json").read_text() == "old"
    with replace_outputs(tmp_path, ("metrics.json", "report.html")) as staging:
        (staging / "metrics.json").write_text("new")
    assert (tmp_path / "metrics.json").read_text() == "new"
    assert not (tmp_path / "report.html").exists()
    assert (tmp_path / "notes.txt").read_text() == "mine"  # not palm's: left alone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "notes.txt"]


REPO = Path(__file__).resolve().parents[1]


ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def test_lock_refuses_a_second_holder_and_is_removed(tmp_path):
    out = tmp_path / "preds.csv"
    with output_lock(out) as lock:
        assert lock == tmp_path / "preds.csv.lock"
        assert f"pid {os.getpid()} on " in lock.read_text()
        with pytest.raises(OutputRefused, match=rf"preds.csv is in use by pid {os.getpid()} on "):
            with output_lock(out):
                pass
    assert not (tmp_path / "preds.csv.lock").exists()
    with output_lock(tmp_path / "run", folder=True) as lock:
        assert lock == tmp_path / "run" / ".lock"
    assert not (tmp_path / "run").exists()  # created for the lock, left empty: removed
    with output_lock(tmp_path / "run", folder=True):
        (tmp_path / "run" / "metrics.csv").write_text("epoch\n")
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["metrics.csv"]
    with output_lock(out):  # free again
        pass


@pytest.mark.slow
def test_lock_of_a_killed_process_is_not_stale(tmp_path):
    out = tmp_path / "preds.csv"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom palm.io_utils import output_lock\n"
         f"with output_lock({str(out)!r}):\n    print('locked', flush=True); time.sleep(600)"],
        env=ENV, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(OutputRefused, match=f"pid {holder.pid}"):
        with output_lock(out):
            pass
    holder.kill()  # SIGKILL: no cleanup runs, the lock file stays
    holder.wait()
    assert (tmp_path / "preds.csv.lock").exists()
    with output_lock(out):  # the OS released the lock with the process
        pass
