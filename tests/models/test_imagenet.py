"""`--pretrained imagenet`: Paddle's published weights, fetched through a mirror, checked by
MD5, cached whole or not at all, and loaded through the safe reader with the head skipped."""
from __future__ import annotations

import hashlib
import importlib
import logging
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import paddle
import paddle.vision.models as paddle_vision
import pytest
import yaml

from palm.cli.common import cli
from palm.engine.tasks import run_cache, run_weights
from palm.errors import BadConfig, DownloadFailed
from palm.experiments.trials import _absolute_paths
from palm.models import (IMAGENET_WEIGHTS, build_model, fetch_imagenet, load_pretrained,
                         pretrained_weights_file, published_weights)
from palm.weights import read_weights
from palm.models.imagenet import MIRROR_ENV, STALL_ENV, WEIGHTS_DIR_ENV, mirrored

from tests.marks import quick_or_slow
from tests.mirror import serving_mirror
from tests.processes import REPO, ctrl_c_once

# small enough (5 MB) to write, serve and hash in a test
NETWORK = "squeezenet1_1"


@pytest.mark.parametrize("name", quick_or_slow(IMAGENET_WEIGHTS, quick={"resnet18", NETWORK}))
def test_every_listed_network_has_paddle_visions_names_and_shapes(name):
    """The table promises that Paddle's file for `name` fills palm's network: same parameter
    names and shapes as paddle.vision's network it was published for."""
    ours = {k: list(v.shape) for k, v in build_model(name, num_classes=1000).state_dict().items()}
    theirs = {k: list(v.shape)
              for k, v in getattr(paddle_vision, name)(pretrained=False).state_dict().items()}
    assert {k: theirs.get(k) for k in ours} == ours
    extra = set(theirs) - set(ours)
    # Paddle's GoogLeNet file holds the auxiliary heads, which palm builds only with
    # aux_logits=True; without them they are reported as unexpected
    aux = {k for k in extra if k.startswith(("_conv_o", "_fc_o", "_out1.", "_out2."))}
    assert extra == (aux if name == "googlenet" else set())
    weights = published_weights(name)
    assert urlsplit(weights.url).scheme == "https" and weights.file_name.endswith(".pdparams")
    assert len(weights.md5) == 32 and int(weights.md5, 16) >= 0


def test_mirror_replaces_scheme_and_host_only():
    url = "https://paddle-hapi.bj.bcebos.com/models/resnet18.pdparams"
    assert mirrored(url, "") == url
    assert mirrored(url, "http://10.0.0.5:8080") == "http://10.0.0.5:8080/models/resnet18.pdparams"
    assert mirrored(url, "https://m.example/paddle/") == \
        "https://m.example/paddle/models/resnet18.pdparams"
    for bad in ("ftp://m.example", "m.example", "http://"):
        with pytest.raises(BadConfig, match=MIRROR_ENV):
            mirrored(url, bad)


def test_a_network_without_published_weights_is_one_line_listing_those_with():
    with pytest.raises(BadConfig, match="no ImageNet weights published for 'lenet5'.*resnet50"):
        pretrained_weights_file("imagenet", "lenet5")


@pytest.fixture(scope="module")
def imagenet_file(tmp_path_factory) -> bytes:
    """A state dict shaped like Paddle's ImageNet SqueezeNet 1.1 file (1000 classes)."""
    paddle.seed(1)
    path = tmp_path_factory.mktemp("published") / "weights.pdparams"
    paddle.save(build_model(NETWORK, num_classes=1000).state_dict(), str(path))
    return path.read_bytes()


@pytest.fixture
def mirror(imagenet_file, tmp_path, monkeypatch):
    """The mirror serving `imagenet_file` where Paddle publishes SqueezeNet 1.1, with that
    file's MD5 as the published one; an empty weights cache."""
    module, key = IMAGENET_WEIGHTS[NETWORK]
    urls = importlib.import_module(f"paddle.vision.models.{module}").model_urls
    url, _ = urls[key]
    monkeypatch.setitem(urls, key, (url, hashlib.md5(imagenet_file).hexdigest()))
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(tmp_path / "weights"))
    with serving_mirror() as server:
        server.files[urlsplit(url).path] = imagenet_file
        server.path = urlsplit(url).path
        monkeypatch.setenv(MIRROR_ENV, server.url)
        yield server


def _cache_holds(tmp_path: Path) -> list[str]:
    folder = tmp_path / "weights"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_downloaded_once_through_the_mirror_then_taken_from_the_cache(mirror, imagenet_file,
                                                                      tmp_path):
    path = fetch_imagenet(NETWORK)
    assert path.read_bytes() == imagenet_file
    assert fetch_imagenet(NETWORK) == path
    assert mirror.requests[mirror.path] == 1
    assert _cache_holds(tmp_path) == [path.name]


def test_loaded_through_the_safe_reader_with_the_head_skipped(mirror, caplog):
    model = build_model(NETWORK, num_classes=1)
    with caplog.at_level(logging.INFO):
        report = load_pretrained(model, pretrained_weights_file("ImageNet", NETWORK))
    assert report["skipped"] == ["_conv9.weight", "_conv9.bias"]  # the classifier only
    assert len(report["loaded"]) == len(model.state_dict()) - len(report["skipped"])
    assert "skipped (shape differs)" in caplog.text and "[1000, 512, 1, 1]->[1, 512, 1, 1]" \
        in caplog.text


def test_a_truncated_download_is_refused_by_its_hash_and_nothing_stays(mirror, imagenet_file,
                                                                       tmp_path):
    mirror.files[mirror.path] = imagenet_file[: len(imagenet_file) // 2]
    with pytest.raises(DownloadFailed, match=r"refused: its MD5 is [0-9a-f]{32}, Paddle publishes"):
        fetch_imagenet(NETWORK)
    assert _cache_holds(tmp_path) == []
    assert mirror.requests[mirror.path] == 1  # fetched once, not once per retry


def test_a_file_that_would_run_code_is_refused_by_the_reader_even_with_the_right_hash(
        mirror, tmp_path, monkeypatch):
    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "ran",))

    hostile = pickle.dumps({"features.0.weight": Payload()})
    module, key = IMAGENET_WEIGHTS[NETWORK]
    urls = importlib.import_module(f"paddle.vision.models.{module}").model_urls
    monkeypatch.setitem(urls, key, (urls[key][0], hashlib.md5(hostile).hexdigest()))
    mirror.files[mirror.path] = hostile
    path = fetch_imagenet(NETWORK)
    with pytest.raises(ValueError, match="refusing .*: it contains pathlib.Path.touch"):
        load_pretrained(build_model(NETWORK), path)
    assert not (tmp_path / "ran").exists()


def test_offline_is_one_line_naming_the_url_and_where_to_place_the_file(mirror, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:9")  # discard port: nothing listens
    weights = published_weights(NETWORK)
    with pytest.raises(DownloadFailed) as error:
        fetch_imagenet(NETWORK)
    line = str(error.value)
    assert "\n" not in line and line.startswith(f"{weights.url}: ")
    assert f"place the file at {tmp_path / 'weights' / weights.file_name} by hand" in line
    assert weights.md5 in line and _cache_holds(tmp_path) == []


@pytest.mark.parametrize("kind", ["stalled", "trickled"])
def test_a_mirror_that_stops_sending_or_trickles_is_given_up_on(kind, mirror, tmp_path,
                                                                monkeypatch):
    """A trickle grows the file every 0.25 s, so 'no new byte' alone never gave it up."""
    getattr(mirror, kind).add(mirror.path)
    monkeypatch.setenv(STALL_ENV, "1")
    start = time.monotonic()
    with pytest.raises(DownloadFailed, match="less than 64 KiB received in 1 s"):
        fetch_imagenet(NETWORK)
    assert time.monotonic() - start < 30
    assert _cache_holds(tmp_path) == []


def test_a_retry_after_a_cut_download_is_progress_not_a_stall(mirror, imagenet_file,
                                                             monkeypatch):
    """Paddle retries from byte 0 into the same file: while the retry is below the size the
    cut try reached, the file shrank over the window, which was taken for a stall."""
    mirror.cut_once.add(mirror.path)
    monkeypatch.setenv(STALL_ENV, "2")  # Paddle waits 1 s before its retry
    assert fetch_imagenet(NETWORK).read_bytes() == imagenet_file
    assert mirror.requests[mirror.path] == 2


def test_ctrl_c_during_a_download_is_one_line_and_leaves_nothing(mirror, tmp_path):
    mirror.trickled.add(mirror.path)
    argv = [sys.executable, "-m", "palm", "weights", "download", "--model", NETWORK]
    proc = subprocess.Popen(argv, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = ctrl_c_once(proc, lambda: mirror.requests[mirror.path] > 0, 60, "download started")
    assert proc.returncode != 0 and "Traceback" not in err
    # the line follows Paddle's progress bar, which ends without a newline
    assert "stopped: interrupted" in err.splitlines()[-1], err[-500:]
    assert _cache_holds(tmp_path) == []


def test_weights_command_lists_downloads_and_verifies(mirror, imagenet_file, tmp_path, capsys):
    run_weights("list", [NETWORK])
    assert f"{NETWORK:20s} not cached" in capsys.readouterr().out
    assert run_weights("download", [NETWORK]) == 0
    assert run_weights("verify", [NETWORK]) == 0
    assert "MD5 ok" in capsys.readouterr().out
    run_weights("list", [NETWORK])
    assert f"on disk, {len(imagenet_file) / 1e6:.1f} MB" in capsys.readouterr().out
    path = published_weights(NETWORK).path
    path.write_bytes(path.read_bytes()[:-1])
    run_weights("list", [NETWORK])  # says only what is on disk: it reads no file
    listed = capsys.readouterr().out
    assert f"on disk, {(len(imagenet_file) - 1) / 1e6:.1f} MB" in listed
    assert "`palm weights verify` checks them now" in listed
    assert run_weights("verify", [NETWORK]) == 1
    assert "MD5 WRONG" in capsys.readouterr().out
    run_cache("info", str(tmp_path / "images"))
    assert "1 ImageNet weight files" in capsys.readouterr().out


def test_weights_command_line_errors():
    with pytest.raises(SystemExit) as stop:
        cli("weights", ["download"])
    assert str(stop.value.code) == "error: name the networks to download (--model) or ask for --all"
    with pytest.raises(SystemExit) as stop:
        cli("weights", ["verify", "--model", "lenet5"])
    assert str(stop.value.code).startswith("error: no ImageNet weights published for lenet5; ")


@pytest.mark.slow
def test_train_pretrained_imagenet_starts_from_the_published_weights(mirror, palm_root,
                                                                       tmp_path, capsys):
    """`palm train --pretrained imagenet`: the run fetches the file, starts from it (head
    skipped) and records the setting, so `-c config.yaml` trains a like run."""
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        cli("train", ["--model", NETWORK, "--pretrained", "imagenet", "--data-root",
                      str(palm_root), "--image-size", "64", "--epochs", "1", "--lr", "1e-9",
                      "--num-workers", "0", "--cache-dir", "none", "--device", "cpu",
                      "--no-progress", "--output", str(run)])
    assert stop.value.code == 0
    assert mirror.requests[mirror.path] == 1
    assert yaml.safe_load((run / "config.yaml").read_text())["pretrained"] == "imagenet"
    # lr 1e-9: the trained body still equals the published one
    published = read_weights(published_weights(NETWORK).path)
    trained = read_weights(run / "last.pdparams")
    np.testing.assert_allclose(trained["_conv.weight"], published["_conv.weight"], atol=1e-6)
    assert not np.allclose(trained["_conv9.weight"][:1], published["_conv9.weight"][:1])


def test_a_sweep_keeps_imagenet_as_a_setting_not_a_path():
    assert _absolute_paths({"pretrained": "imagenet", "data_root": "d"})["pretrained"] == "imagenet"


@pytest.mark.slow  # Paddle's downloader retries a closed port three times (3 s)
def test_mirror_values_that_would_be_misread_are_refused_and_passwords_masked(monkeypatch,
                                                                              tmp_path):
    url = "https://paddle-hapi.bj.bcebos.com/models/resnet18.pdparams"
    # a query or fragment was dropped from every URL; a broken IPv6 host was a traceback
    for bad in ("http://m.example/p?token=1", "http://m.example/#x", "http://[::1",
                "http://m.example:99999"):
        with pytest.raises(BadConfig, match=MIRROR_ENV):
            mirrored(url, bad)
    with pytest.raises(BadConfig) as error:
        mirrored(url, "http://me:s3cret@m.example/?q")
    assert "s3cret" not in str(error.value)
    monkeypatch.setenv(MIRROR_ENV, "http://me:s3cret@127.0.0.1:9")  # nothing listens
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(tmp_path / "weights"))
    weights = published_weights(NETWORK)
    assert weights.url.startswith("http://me:s3cret@") and "s3cret" not in weights.shown_url
    with pytest.raises(DownloadFailed) as error:
        fetch_imagenet(NETWORK)
    assert str(error.value).startswith("http://me:***@127.0.0.1:9/")
    assert "s3cret" not in str(error.value)


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan", "inf"])
def test_a_stall_setting_that_is_no_positive_number_is_refused_before_downloading(
        mirror, tmp_path, monkeypatch, value):
    """'abc' was a ValueError traceback once the download had started (its folder was left
    in the cache); 0 and -5 gave up at once, nan never."""
    monkeypatch.setenv(STALL_ENV, value)
    with pytest.raises(BadConfig, match=f"{STALL_ENV} must be a positive number.*{value}"):
        fetch_imagenet(NETWORK)
    assert mirror.requests[mirror.path] == 0 and _cache_holds(tmp_path) == []


def test_the_partial_download_of_a_killed_run_is_removed_a_day_later(mirror, tmp_path):
    """kill -9 mid-download left `.download-*/NAME_tmp` in the cache for ever."""
    folder = tmp_path / "weights"
    killed, live = folder / ".download-killed", folder / ".download-live"
    for staging in (killed, live):
        staging.mkdir(parents=True)
        (staging / "SqueezeNet1_1_pretrained.pdparams_tmp").write_bytes(b"\0" * 1000)
    day_ago = time.time() - 24 * 3600 - 60
    for path in (killed / "SqueezeNet1_1_pretrained.pdparams_tmp", killed):
        os.utime(path, (day_ago, day_ago))
    path = fetch_imagenet(NETWORK)
    assert _cache_holds(tmp_path) == [".download-live", path.name]
