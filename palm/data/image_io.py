"""Image decoding for fundus photos: RGB uint8 out, reduced-scale JPEG decode, on-disk cache.

PALM photos are 2124x2056 JPEGs and models see 224 px. Decoding at 1/4 scale with
`IMREAD_REDUCED_COLOR_4` costs 14-16 ms instead of 32-37 ms for a full decode + resize (PSNR 54
against the full path; measured on this machine, ../shared/REFERENCE.md), and the cache removes
decoding from every epoch after the first.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image  # header-only size probe; Pillow is a matplotlib dependency

from palm.io_utils import atomic_path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
_REDUCED_FLAGS = {
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}
_CACHE_VERSION = "1"  # bump when the cached representation changes
CACHE_DIR_ENV = "PALM_CACHE_DIR"

log = logging.getLogger(__name__)


class ImageReadError(ValueError):
    """A file that cannot be used as an image; the message is `"<path>: <problem>"`."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def is_image_file(path: str | os.PathLike) -> bool:
    """True for a non-hidden file name with one of IMAGE_EXTENSIONS (case-insensitive)."""
    name = os.path.basename(path)
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _is_jpeg(buf: np.ndarray) -> bool:
    return buf.size > 3 and bytes(buf[:3]) == b"\xff\xd8\xff"


def _jpeg_is_complete(data: bytes) -> bool:
    # libjpeg decodes a truncated file without failing (it pads with grey), so look for the
    # end-of-image marker after the last start-of-scan; 0xFFD9 cannot occur inside scan data
    # (0xFF is byte-stuffed there), and an EXIF thumbnail's EOI lies before the main scan.
    sos = data.rfind(b"\xff\xda")
    return sos != -1 and data.find(b"\xff\xd9", sos) != -1


def _reduction_factor(data: bytes, target_size: int) -> int:
    """Largest of 8/4/2 that keeps the decoded short side >= target_size (1 = full decode)."""
    try:
        w, h = Image.open(io.BytesIO(data)).size
    except Exception:  # unreadable header: let the full decode report the problem
        return 1
    for factor in (8, 4, 2):
        if min(w, h) // factor >= target_size:
            return factor
    return 1


def _to_rgb_uint8(img: np.ndarray) -> np.ndarray:
    """OpenCV's BGR/BGRA/gray at 8/16-bit or float -> RGB uint8."""
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) * (255.0 / 65535.0) + 0.5).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = img.astype(np.float32)
        if img.max(initial=0.0) <= 1.0:  # float images are usually 0..1
            img = img * 255.0
        img = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    if img.ndim == 2 or img.shape[2] == 1:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)  # alpha dropped
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_image(path: str | os.PathLike, target_size: int | None = None) -> np.ndarray:
    """Decode an image file to HxWx3 uint8 RGB.

    Grayscale, RGBA (alpha dropped), 16-bit and float images are converted. Non-ASCII paths
    work (the bytes are read with numpy and decoded in memory).

    Args:
        path: image file.
        target_size: side the caller will resize to; a JPEG whose short side is at least twice
            that is decoded at 1/2, 1/4 or 1/8 scale, keeping the decoded short side
            >= target_size. None decodes at full size.

    Returns:
        HxWx3 uint8 array in RGB order.

    Raises:
        ImageReadError: missing, empty, truncated, unreadable or non-image file.
    """
    if not os.path.exists(path):
        raise ImageReadError(path, "file not found")
    if os.path.isdir(path):
        raise ImageReadError(path, "is a folder, not an image file")
    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise ImageReadError(path, f"cannot read file ({e.strerror or e})") from e
    if buf.size == 0:
        raise ImageReadError(path, "empty file")
    if _is_jpeg(buf):
        data = buf.tobytes()
        if not _jpeg_is_complete(data):
            raise ImageReadError(path, "truncated JPEG (no end-of-image marker)")
        factor = _reduction_factor(data, target_size) if target_size else 1
        flags = _REDUCED_FLAGS.get(factor, cv2.IMREAD_COLOR)
    else:
        flags = cv2.IMREAD_UNCHANGED  # keeps 16-bit depth and alpha for _to_rgb_uint8
    img = cv2.imdecode(buf, flags)
    if img is None or img.size == 0:
        raise ImageReadError(path, "not a readable image (corrupt file or unsupported format)")
    return _to_rgb_uint8(img)


def resize_short_side(img: np.ndarray, size: int) -> np.ndarray:
    """Shrink so the short side is `size` (aspect kept); smaller images are returned as is."""
    h, w = img.shape[:2]
    if min(h, w) <= size:
        return img
    scale = size / min(h, w)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    return cv2.resize(img, new, interpolation=cv2.INTER_AREA)


def default_cache_dir() -> Path:
    """The shared cache folder: $PALM_CACHE_DIR, else $XDG_CACHE_HOME/palm/images, else
    ~/.cache/palm/images (the XDG convention pip, torch and Hugging Face follow)."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "palm" / "images"


def resolve_cache_dir(setting: str | os.PathLike | None) -> Path | None:
    """A `cache_dir` setting as a folder, or None for no cache.

    "auto" means `default_cache_dir()`, or no cache (with a warning) when that folder cannot
    be created, e.g. a read-only home; None, "" and "none" mean no cache; anything else is
    the folder itself.
    """
    if setting is None or str(setting).strip().lower() in ("", "none"):
        return None
    if str(setting) != "auto":
        return Path(setting)
    folder = default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        log.warning("%s: cannot create the image cache (%s); decoding every epoch. Set %s "
                    "or --cache-dir to a writable folder.", folder, e.strerror or e, CACHE_DIR_ENV)
        return None
    return folder


class CachedImageReader:
    """`read_image` with an on-disk cache of images shrunk to short side `target_size`.

    Entries are `.npy` files keyed by the absolute path, modification time, file size and
    target size, so an edited or replaced image is decoded again. Writes are atomic, so
    DataLoader workers may share one cache folder. A failed write (disk full, read-only
    folder) is logged once and the image is used anyway: the cache only saves time.

    Example:
        read = CachedImageReader("cache/224", 224)
        img = read("PALM-Training400/P0001.jpg")  # decodes once, later calls load the .npy
    """

    def __init__(self, cache_dir: str | os.PathLike, target_size: int | None):
        self.cache_dir = Path(cache_dir)
        self.target_size = target_size
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._write_failed = False

    def cache_path(self, path: str | os.PathLike) -> Path:
        try:
            st = os.stat(path)
        except OSError as e:
            raise ImageReadError(path, "file not found") from e
        key = "|".join(
            map(
                str,
                (
                    _CACHE_VERSION,
                    os.path.abspath(path),
                    st.st_mtime_ns,
                    st.st_size,
                    self.target_size,
                ),
            )
        )
        return self.cache_dir / f"{hashlib.sha1(key.encode('utf-8')).hexdigest()}.npy"

    def __call__(self, path: str | os.PathLike) -> np.ndarray:
        entry = self.cache_path(path)
        if entry.exists():
            try:
                return np.load(entry, allow_pickle=False)
            except (OSError, ValueError):
                pass  # unreadable entry (e.g. disk trouble): decode again and overwrite it
        img = read_image(path, self.target_size)
        if self.target_size:
            img = resize_short_side(img, self.target_size)
        try:
            with atomic_path(entry) as tmp, open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(img), allow_pickle=False)
        except OSError as e:
            if not self._write_failed:
                log.warning("%s: cannot write to the image cache (%s); going on without "
                            "caching", entry, e.strerror or e)
                self._write_failed = True
        return img
