"""palm.data decoding, cache, transforms and loader."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from palm.data.synth import FundusSpec, render_fundus
from palm.data import (
    CachedImageReader,
    ImageReadError,
    PalmTrainSet,
    build_loader,
    build_transform,
    crop_fundus,
    default_cache_dir,
    read_image,
    resolve_cache_dir,
)
from palm.data.image_io import CACHE_DIR_ENV
import pickle
import subprocess
import sys
import time
from palm.data import FolderImageSet


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory) -> Path:
    """A 1040x1000 synthetic fundus JPEG: large enough for 1/4-scale decoding at 128 px."""
    img, _ = render_fundus(FundusSpec("P", 0.7, True), (1040, 1000), 0.3, np.random.default_rng(0))
    path = tmp_path_factory.mktemp("big") / "P0001.jpg"
    cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])[
        1
    ].tofile(str(path))
    return path


def _to_255(x: np.ndarray) -> np.ndarray:
    return (x + 1.0) * 127.5  # minus_one_one back to 0..255


# ---------------------------------------------------------------- read_image


def test_rgb_order_and_conversions(tmp_path):
    bgr = np.zeros((8, 10, 3), np.uint8)
    bgr[..., 2] = 200  # red in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    assert read_image(tmp_path / "red.png")[0, 0].tolist() == [200, 0, 0]

    cv2.imwrite(str(tmp_path / "gray.png"), np.full((8, 10), 77, np.uint8))
    gray = read_image(tmp_path / "gray.png")
    assert gray.shape == (8, 10, 3) and (gray == 77).all()

    bgra = np.dstack([bgr, np.zeros((8, 10), np.uint8)])  # fully transparent: alpha is dropped
    cv2.imwrite(str(tmp_path / "rgba.png"), bgra)
    assert read_image(tmp_path / "rgba.png")[0, 0].tolist() == [200, 0, 0]

    deep = np.zeros((8, 10, 3), np.uint16)
    deep[..., 1] = 65535
    deep[..., 0] = 257 * 100
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    img = read_image(tmp_path / "deep.png")
    assert img.dtype == np.uint8 and img[0, 0].tolist() == [0, 255, 100]

    cv2.imwrite(str(tmp_path / "gray16.tif"), np.full((8, 10), 65535, np.uint16))
    assert (read_image(tmp_path / "gray16.tif") == 255).all()


def test_missing_and_folder_paths(tmp_path):
    with pytest.raises(ImageReadError, match=r"nope\.jpg: file not found"):
        read_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageReadError, match="is a folder"):
        read_image(tmp_path)


def test_reduced_decode_matches_full_decode(big_jpeg):
    full = read_image(big_jpeg)
    reduced = read_image(big_jpeg, target_size=128)
    assert full.shape == (1000, 1040, 3)
    assert reduced.shape == (250, 260, 3)  # 1/4 scale: short side 250 >= 128, 1/8 would be 125
    assert read_image(big_jpeg, target_size=600).shape == (1000, 1040, 3)  # 1/2 would be < 600
    t = build_transform(128, train=False)
    diff = np.abs(_to_255(t(full)) - _to_255(t(reduced)))
    assert diff.mean() < 3.0


def test_cache_matches_plain_path_and_tracks_file_changes(big_jpeg, tmp_path):
    reader = CachedImageReader(tmp_path / "cache", 128)
    first = reader(big_jpeg)
    assert min(first.shape[:2]) == 128  # stored shrunk to the target
    entries = list((tmp_path / "cache").glob("*.npy"))
    assert len(entries) == 1 and not list((tmp_path / "cache").glob("*.tmp"))
    np.testing.assert_array_equal(reader(big_jpeg), first)  # served from the .npy

    t = build_transform(128, train=False)
    diff = np.abs(_to_255(t(read_image(big_jpeg))) - _to_255(t(first)))
    assert diff.mean() < 3.0

    st = os.stat(big_jpeg)
    os.utime(big_jpeg, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # "edited" image
    assert reader.cache_path(big_jpeg) != entries[0]
    reader(big_jpeg)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2


def test_dataset_cache_gives_same_tensors(palm_root, tmp_path):
    t = build_transform(32, train=False)
    plain = PalmTrainSet(palm_root / "PALM-Training400", transform=t)
    cached = PalmTrainSet(palm_root / "PALM-Training400", transform=t, cache_dir=tmp_path / "c")
    for i in (0, 5, 23):
        a, b = plain[i][0], cached[i][0]
        assert np.abs(_to_255(a) - _to_255(b)).mean() < 3.0
    assert len(list((tmp_path / "c").glob("*.npy"))) == 3


def test_cache_dir_settings(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "palm" / "images"
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    assert resolve_cache_dir("auto") == tmp_path / "mine" and (tmp_path / "mine").is_dir()
    assert resolve_cache_dir(tmp_path / "explicit") == tmp_path / "explicit"
    for off in (None, "", "none", "None"):
        assert resolve_cache_dir(off) is None


def test_auto_cache_falls_back_to_no_cache_when_unwritable(palm_root, tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(CACHE_DIR_ENV, str(blocker / "cache"))  # cannot mkdir below a file
    assert resolve_cache_dir("auto") is None
    assert "cannot create the image cache" in caplog.text and str(blocker / "cache") in caplog.text
    ds = PalmTrainSet(palm_root / "PALM-Training400", transform=build_transform(32, train=False),
                      cache_dir="auto")
    assert ds[0][0].shape == (3, 32, 32)


def test_cache_write_failure_keeps_going(big_jpeg, tmp_path, monkeypatch, caplog):
    reader = CachedImageReader(tmp_path / "cache", 128)
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(np, "save", disk_full)
    first = reader(big_jpeg)
    second = reader(big_jpeg)
    assert min(first.shape[:2]) == 128 and np.array_equal(first, second)
    assert caplog.text.count("cannot write to the image cache (No space left on device)") == 1
    assert not list((tmp_path / "cache").iterdir())  # no half-written entry left behind


# ---------------------------------------------------------------- transforms


def test_crop_fundus_trims_border_and_keeps_circle_round():
    img = np.zeros((300, 400, 3), np.uint8)
    cv2.circle(img, (220, 150), 100, (200, 90, 40), -1)
    img[0:3, 0:3] = 255  # a stray bright corner pixel block must not widen the crop
    crop = crop_fundus(img)
    # the circle is 201 px across; rows/columns with < 2 % fundus pixels (its very tips) go
    assert crop.shape[0] == crop.shape[1] and 195 <= crop.shape[0] <= 201
    clipped = np.zeros((300, 400, 3), np.uint8)
    cv2.circle(clipped, (200, 150), 170, (200, 90, 40), -1)  # cut at top and bottom
    crop = crop_fundus(clipped)
    assert crop.shape[0] == crop.shape[1] and 335 <= crop.shape[0] <= 341
    assert crop[0, crop.shape[1] // 2].max() == 0  # padded with black, not squashed
    black = np.zeros((10, 10, 3), np.uint8)
    assert crop_fundus(black) is black


def test_eval_transform_normalizations():
    img = np.full((40, 50, 3), 255, np.uint8)
    img[:, :25] = 0
    x = build_transform(16, train=False)(img)
    assert x.shape == (3, 16, 16) and x.dtype == np.float32
    assert x.min() == -1.0 and x.max() == 1.0
    y = build_transform(16, train=False, normalize="imagenet")(np.full((4, 4, 3), 255, np.uint8))
    np.testing.assert_allclose(
        y[:, 0, 0],
        (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]),
        rtol=1e-5,
    )
    with pytest.raises(ValueError, match="unknown normalize 'zscore'"):
        build_transform(16, train=False, normalize="zscore")
    with pytest.raises(ValueError, match="unknown augment keys \\['blur'\\]"):
        build_transform(16, train=True, augment={"blur": 1})


def test_train_transform_is_random_but_seedable():
    img = np.random.default_rng(0).integers(0, 255, (60, 70, 3), dtype=np.uint8)
    t = build_transform(32, train=True)
    assert t.decode_size == 36  # ceil(32 / sqrt(0.8)): the random crop zooms in
    np.random.seed(3)
    a = t(img)
    np.random.seed(3)
    b = t(img)
    c = t(img)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (3, 32, 32) and -1 <= a.min() and a.max() <= 1
    assert not np.array_equal(b, c)
    off = build_transform(
        32,
        train=True,
        augment={
            k: 0
            for k in ("hflip", "vflip", "rotate", "brightness", "contrast", "random_resized_crop")
        },
    )
    np.testing.assert_array_equal(off(img), build_transform(32, train=False)(img))


# ---------------------------------------------------------------- loader


def test_loader_train_and_eval(palm_root):
    ds = PalmTrainSet(palm_root / "PALM-Training400", transform=build_transform(32, train=False))
    train = build_loader(ds, batch_size=5, train=True, seed=1)
    epoch0 = [y.numpy().tolist() for _, y in train]
    epoch1 = [y.numpy().tolist() for _, y in train]
    assert [len(b) for b in epoch0] == [5] * 4  # 24 samples: drop_last drops the 4 left over
    assert epoch0 != epoch1
    again = build_loader(ds, batch_size=5, train=True, seed=1)
    assert [y.numpy().tolist() for _, y in again] == epoch0  # same seed, same epoch-0 order

    x, y = next(iter(build_loader(ds, batch_size=5, train=False)))
    assert list(x.shape) == [5, 3, 32, 32] and str(x.dtype).endswith("float32")
    assert str(y.dtype).endswith("int64")
    labels = np.concatenate([y.numpy() for _, y in build_loader(ds, 5, train=False)])
    np.testing.assert_array_equal(labels, ds.labels)  # in order, nothing dropped


@pytest.mark.slow
def test_loader_workers_seed_augmentation_per_epoch(palm_root):
    ds = PalmTrainSet(palm_root / "PALM-Training400", transform=build_transform(32, train=True))

    def first_epochs(seed):
        loader = build_loader(ds, batch_size=8, train=True, num_workers=2, seed=seed)
        return [next(iter(loader))[0].numpy() for _ in range(2)]

    a0, a1 = first_epochs(5)
    b0, b1 = first_epochs(5)
    np.testing.assert_array_equal(a0, b0)
    np.testing.assert_array_equal(a1, b1)
    assert not np.array_equal(a0, a1)


def _radiance_hdr(side: int) -> bytes:
    """A run-length-coded Radiance HDR image: 2 kB per row, side x side float pixels."""
    channel = b""
    left = side
    while left:
        run = min(127, left)
        channel += bytes([128 + run, 100])
        left -= run
    row = bytes([2, 2, side >> 8, side & 255]) + channel * 4
    return b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y %d +X %d\n" % (side, side) + row * side


def test_format_opencv_decodes_but_pil_cannot_size_is_refused(tmp_path):
    """OpenCV picks its decoder by content: an HDR named .png went past the pixel cap
    (9 MB of file decoded to 12000 x 12000 float pixels, gigabytes)."""
    path = tmp_path / "photo.png"
    path.write_bytes(_radiance_hdr(2000))
    with pytest.raises(ImageReadError, match=r"photo.png: not a JPEG, PNG, BMP or TIFF image"):
        read_image(path, max_pixels=1_000_000)


def test_16_bit_image_converts_without_float_copies(tmp_path):
    """A 16-bit RGBA image became float32 copies (12+ bytes a pixel) before 8-bit: a 100 MP
    PNG under the pixel cap took gigabytes."""
    import tracemalloc

    path = tmp_path / "deep.png"
    rng = np.random.default_rng(0)
    cv2.imwrite(str(path), rng.integers(0, 65536, (1000, 1000, 4), dtype=np.uint16))
    # libpng keeps the high byte of each sample while decoding (palm.data.image_io._decode_flags)
    expected = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[..., 2::-1] >> 8
    tracemalloc.start()
    try:
        image = read_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(image, expected.astype(np.uint8))
    # the file read twice (array, bytes), 3 bytes a pixel decoded (8 + 4 + 3 when it was
    # decoded unchanged), some slack; float copies add 12 or more bytes a pixel
    assert peak < 2 * path.stat().st_size + 20 * 1_000_000


def test_named_pipe_with_an_image_name_is_refused_not_waited_on(tmp_path):
    """A FIFO named .jpg in an image folder or list: reading it waited forever."""
    path = tmp_path / "eye.jpg"
    os.mkfifo(path)
    with pytest.raises(ImageReadError, match=r"eye.jpg: not a regular file"):
        read_image(path)


def test_cache_entry_that_is_not_an_image_is_decoded_again(tmp_path):
    """A planted or damaged .npy in the cache (any shape, any dtype) was used as the image."""
    path = tmp_path / "eye.png"
    cv2.imwrite(str(path), np.full((40, 50, 3), 90, np.uint8))
    read = CachedImageReader(tmp_path / "cache", 32)
    expected = read(path)
    for planted in (np.zeros(5, np.float64), np.zeros((4, 4, 5), np.uint8),
                    np.zeros((400, 500, 3), np.uint8)):
        np.save(read.cache_path(path), planted)
        np.testing.assert_array_equal(read(path), expected)


def test_progressive_jpeg_is_capped_at_its_full_size(tmp_path):
    """libjpeg holds all coefficients of a progressive JPEG (3 bytes a pixel) even at 1/8
    scale: a 65535 x 65535 one passed the 100 MP cap at 1/8 scale and needed 13 GB."""
    image = np.full((800, 800, 3), 120, np.uint8)
    baseline, progressive = tmp_path / "baseline.jpg", tmp_path / "progressive.jpg"
    cv2.imwrite(str(baseline), image)
    cv2.imwrite(str(progressive), image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert read_image(baseline, target_size=32, max_pixels=100_000).shape == (100, 100, 3)
    with pytest.raises(ImageReadError, match=r"progressive.jpg: progressive JPEG, held at full "
                                             r"size while decoding; image of 800x800 pixels"):
        read_image(progressive, target_size=32, max_pixels=100_000)
    assert read_image(progressive, target_size=32, max_pixels=640_000).shape == (100, 100, 3)


def test_cache_tool_counts_and_clears_only_cache_files(tmp_path, monkeypatch, capsys):
    from palm.cli import cache as cache_tool

    folder = tmp_path / "cache"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i:040x}.npy").write_bytes(b"x" * 1000)
    (folder / "mine.txt").write_text("not the cache's")
    monkeypatch.setenv("PALM_CACHE_DIR", str(folder))
    info = cache_tool.get_args_parser().parse_args(["info"])
    assert cache_tool.main(info) == (3, 3000)
    assert f"{folder}: 3 cached images" in capsys.readouterr().out
    assert cache_tool.main(cache_tool.get_args_parser().parse_args(["clear"])) == (3, 3000)
    assert [p.name for p in folder.iterdir()] == ["mine.txt"]
    assert cache_tool.main(info) == (0, 0)


REPO = Path(__file__).resolve().parents[2]


T32 = build_transform(32, train=False)


def _write_png(path: Path, value: int = 100, size: tuple[int, int] = (20, 24)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((*size, 3), value, np.uint8))


def test_image_read_error_pickles():
    e = pickle.loads(pickle.dumps(ImageReadError("x/a.jpg", "truncated JPEG")))
    assert (e.path, e.problem, str(e)) == ("x/a.jpg", "truncated JPEG", "x/a.jpg: truncated JPEG")


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


@pytest.mark.slow  # a child process measuring its peak memory
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


def test_jpeg_completeness_agrees_with_an_eoi_after_the_last_scan(big_jpeg):
    """The check searches from the file's ends; the rule is an end-of-image marker after the
    last start-of-scan, computed here by scanning for that scan. Cuts, trailing bytes and a
    thumbnail-like EOI before the main scan (a file truncated after it) are all tried."""
    from palm.data.image_io import _jpeg_is_complete

    def last_scan_rule(data: bytes) -> bool:
        sos = data.rfind(b"\xff\xda")
        return sos != -1 and data.find(b"\xff\xd9", sos) != -1

    whole = big_jpeg.read_bytes()
    sos = whole.find(b"\xff\xda")
    thumbnail = whole[:sos] + b"\xff\xda\x00\x02\xff\xd9" + whole[sos:]
    cases = [whole, whole + b"\x00" * 7, whole[:-2], whole[:sos + 10], whole[:10], b"",
             thumbnail, thumbnail[:-2], thumbnail[:len(thumbnail) // 2]]
    assert [_jpeg_is_complete(c) for c in cases] == [last_scan_rule(c) for c in cases]
    assert [_jpeg_is_complete(c) for c in cases] == [True, True, False, False, False, False,
                                                     True, False, False]
