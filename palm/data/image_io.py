"""Image decoding for fundus photos: RGB uint8 out, reduced-scale JPEG decode, on-disk cache.

PALM photos are 2124x2056 JPEGs and models see 224 px. Decoding at 1/4 scale with
`IMREAD_REDUCED_COLOR_4` costs about half of a full decode + resize (`palm benchmark-data`
measures both) at nearly the same pixels, and the cache removes decoding from every epoch
after the first.

Decoding is budgeted in bytes: the size, bit depth and channels are read from the file's
header first, and an image whose decoded array would take more than `max_pixels` x 3 bytes
(default 100 MP of 8-bit RGB, or $PALM_MAX_PIXELS) is refused before any pixel is decoded.
JPEG, PNG and BMP decode straight to 8-bit BGR (libpng drops 16-bit samples' low bytes and
alpha row by row), 3 bytes a pixel whatever the file holds; TIFF decodes at its own depth and
channels (16-bit RGBA: 8 bytes a pixel), which count. OpenCV 5.1 holds about twice the
decoded array while decoding (measured 6.1 bytes a pixel for 8- and 16-bit PNG, JPEG, BMP).
A huge JPEG read for a small model decodes at 1/8 scale and stays small.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image  # header-only size probe; Pillow is a matplotlib dependency

from palm.errors import BadConfig, BadData
from palm.io_utils import atomic_path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
_REDUCED_FLAGS = {
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}
_CACHE_VERSION = "1"  # bump when the cached representation changes
CACHE_DIR_ENV = "PALM_CACHE_DIR"
CACHE_SIZE_ENV = "PALM_CACHE_SIZE_GB"
DEFAULT_CACHE_SIZE_GB = 4.0  # PALM's 800 photos at 224 px take about 0.15 GB
MAX_PIXELS_ENV = "PALM_MAX_PIXELS"
# 100 MP decode to 300 MB of RGB (plus OpenCV's working copy); PALM photos have 4.4 MP
DEFAULT_MAX_PIXELS = 100_000_000
RGB_BYTES = 3  # a pixel of the decoded 8-bit RGB image; the byte budget is max_pixels x this

log = logging.getLogger(__name__)


class ImageReadError(BadData):
    """A file that cannot be used as an image; the message is `"<path>: <problem>"`.

    Picklable (it crosses process boundaries from loader workers).
    """

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self):
        return type(self), (self.path, self.problem)


class TooManyPixels(ImageReadError):
    """An image whose decoded bytes would exceed the budget (refused before decoding)."""


def is_image_file(path: str | os.PathLike) -> bool:
    """True for a non-hidden file name with one of IMAGE_EXTENSIONS (case-insensitive)."""
    name = os.path.basename(path)
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _jpeg_is_complete(data: bytes) -> bool:
    # libjpeg decodes a truncated file without failing (it pads with grey), so look for the
    # end-of-image marker after the last start-of-scan; 0xFFD9 cannot occur inside scan data
    # (0xFF is byte-stuffed there), and an EXIF thumbnail's EOI lies before the main scan.
    # Searched from the ends: the last EOI is near the end of the file and the first SOS near
    # its start, where scanning for the last SOS read the whole file (1 ms of a 9 ms decode
    # of a PALM photo). "The last EOI lies after every SOS" is the same condition.
    eoi = data.rfind(b"\xff\xd9")
    sos = b"\xff\xda"
    return eoi != -1 and data.find(sos, 0, eoi) != -1 and data.find(sos, eoi) == -1


# The formats palm reads, by the signature both PIL and OpenCV pick their decoder by.
# OpenCV also decodes other formats whatever the file's extension (Radiance HDR, PFM,
# OpenEXR, ...), some of which PIL cannot size: a 9 MB run-length-coded HDR named .png
# decoded to gigabytes of float pixels, past the pixel cap.
_SIGNATURES = {
    b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"BM": "BMP",
    b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"II+\x00": "TIFF", b"MM\x00+": "TIFF",
}


def image_format(data: bytes) -> str | None:
    """"JPEG", "PNG", "BMP" or "TIFF" from the file's first bytes; None for anything else."""
    return next((fmt for magic, fmt in _SIGNATURES.items() if data.startswith(magic)), None)


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says about the array it decodes to."""

    format: str  # "JPEG", "PNG", "BMP" or "TIFF"
    width: int
    height: int
    bits: tuple[int, ...]  # bits of each sample as stored (TIFF); (8, 8, 8) for the others
    bytes_per_pixel: int  # of the array decoded, or of the RGB result if that is larger

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


_TIFF_BITS_PER_SAMPLE, _TIFF_SAMPLES_PER_PIXEL = 258, 277


def read_header(data: bytes) -> ImageHeader | None:
    """Size and decoded bytes a pixel of a JPEG, PNG, BMP or TIFF file, without decoding
    pixels; None for another format or a damaged header.

    PIL's format plugin parses the header lazily. `Image.open` would refuse very large
    images (its decompression-bomb check) before telling their size, so the plugin is called
    directly and the budget is applied by the caller instead.
    """
    fmt = image_format(data)
    if fmt is None:
        return None
    Image.init()
    try:
        image = Image.OPEN[fmt][0](io.BytesIO(data), "")
        bits: tuple[int, ...] = (8, 8, 8)
        if fmt == "TIFF":  # decoded at its own depth and channels (see _decode_flags)
            stored = image.tag_v2.get(_TIFF_BITS_PER_SAMPLE, 1)
            bits = tuple(stored) if isinstance(stored, (tuple, list)) else (int(stored),)
            if len(bits) == 1:  # one value given for all samples
                bits *= int(image.tag_v2.get(_TIFF_SAMPLES_PER_PIXEL, 1))
    except Exception:  # noqa: BLE001 - a damaged header (plugins raise many types)
        return None
    width, height = image.size
    return ImageHeader(fmt, width, height, bits, max(RGB_BYTES, math.ceil(sum(bits) / 8)))


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of a JPEG, PNG, BMP or TIFF file (see read_header)."""
    header = read_header(data)
    return None if header is None else header.size


def _jpeg_is_progressive(data: bytes) -> bool:
    """True if the first start-of-frame marker of a JPEG is a progressive one (SOF2/6/10/14)."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return marker in (0xC2, 0xC6, 0xCA, 0xCE)
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return False


def _positive_number(value: object, what: str) -> float:
    """`value` (a number or numeric text, e.g. "1e8" as PyYAML leaves it) as a float > 0."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise BadConfig(f"{what}={value!r}: not a number") from None
    if not number > 0 or math.isinf(number):
        raise BadConfig(f"{what}={value!r}: must be a positive number")
    return number


def max_pixels_setting(max_pixels: int | float | str | None = None) -> int:
    """`max_pixels`, else $PALM_MAX_PIXELS, else DEFAULT_MAX_PIXELS."""
    if max_pixels is not None:
        return int(_positive_number(max_pixels, "max_pixels"))
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    return int(_positive_number(text, MAX_PIXELS_ENV)) if text else DEFAULT_MAX_PIXELS


def _reduction_factor(size: tuple[int, int], target_size: int | None) -> int:
    """Largest of 8/4/2 that keeps the decoded short side >= target_size (1 = full decode)."""
    if not target_size:
        return 1
    for factor in (8, 4, 2):
        if min(size) // factor >= target_size:
            return factor
    return 1


def _decode_flags(header: ImageHeader, factor: int) -> int:
    """OpenCV flags decoding `header`'s file to 8-bit BGR where the codec can do it itself."""
    if header.format == "JPEG":
        return _REDUCED_FLAGS.get(factor, cv2.IMREAD_COLOR)
    if header.format == "TIFF":
        # OpenCV would turn float samples (usually 0..1) to 0 and 1; _decode_rgb scales them
        return cv2.IMREAD_UNCHANGED
    # libpng strips 16-bit samples to 8 and drops alpha row by row: no full-depth copy
    # (a 16-bit RGBA PNG decoded unchanged held 8 bytes a pixel, then 4 + 3 converted)
    return cv2.IMREAD_COLOR


def _decode_rgb(buf: np.ndarray, flags: int) -> np.ndarray | None:
    """Decode and convert to RGB uint8 (None if OpenCV cannot decode). Each intermediate is
    a local that the next step replaces, so at most two are alive at once."""
    img = cv2.imdecode(buf, flags)
    if img is None or img.size == 0:
        return None
    if img.dtype == np.uint16:
        # in one pass, rounded and saturated: a float copy of a 100 MP 16-bit RGBA image
        # and its temporaries took 3-5 GB on top of the 800 MB decode
        img = cv2.convertScaleAbs(img, alpha=255.0 / 65535.0)
    elif img.dtype != np.uint8:
        img = img.astype(np.float32)
        if img.max(initial=0.0) <= 1.0:  # float images are usually 0..1
            img *= 255.0
        img = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    if img.ndim == 2 or img.shape[2] == 1:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)  # alpha dropped
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=img)  # in place: no second copy


def read_image(
    path: str | os.PathLike, target_size: int | None = None, max_pixels: int | None = None
) -> np.ndarray:
    """Decode an image file to HxWx3 uint8 RGB.

    Grayscale, RGBA (alpha dropped), 16-bit and float images are converted. Non-ASCII paths
    work (the bytes are read with numpy and decoded in memory).

    Args:
        path: image file.
        target_size: side the caller will resize to; a JPEG whose short side is at least twice
            that is decoded at 1/2, 1/4 or 1/8 scale, keeping the decoded short side
            >= target_size. None decodes at full size.
        max_pixels: refuse an image that would decode to more pixels (after the JPEG scale
            reduction); None: $PALM_MAX_PIXELS or DEFAULT_MAX_PIXELS.

    Returns:
        HxWx3 uint8 array in RGB order.

    Raises:
        ImageReadError: missing, empty, truncated, too large, unreadable or non-image file.
    """
    if not os.path.exists(path):
        raise ImageReadError(path, "file not found")
    if os.path.isdir(path):
        raise ImageReadError(path, "is a folder, not an image file")
    if not os.path.isfile(path):  # reading a named pipe waits for a writer forever
        raise ImageReadError(path, "not a regular file (a pipe, socket or device)")
    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise ImageReadError(path, f"cannot read file ({e.strerror or e})") from e
    return decode_image(buf.tobytes(), path, target_size, max_pixels)


def decode_image(
    data: bytes, source: str | os.PathLike, target_size: int | None = None,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Decode an image file's bytes (e.g. an upload) to HxWx3 uint8 RGB, as `read_image`.

    Args:
        source: names the image in error messages (a path or an upload's file name).

    Raises:
        TooManyPixels: over `max_pixels` (checked from the header, before decoding).
        ImageReadError: empty, truncated, unreadable or not an image.
    """
    if not data:
        raise ImageReadError(source, "empty file")
    buf = np.frombuffer(data, dtype=np.uint8)
    header = read_header(data)
    if header is None:
        raise ImageReadError(source, "not a JPEG, PNG, BMP or TIFF image, or its header is damaged")
    factor = 1
    if header.format == "JPEG":
        if not _jpeg_is_complete(data):
            raise ImageReadError(source, "truncated JPEG (no end-of-image marker)")
        factor = _reduction_factor(header.size, target_size)
    # libjpeg keeps every coefficient of a progressive JPEG (about 3 bytes a pixel at full
    # size) whatever the output scale, so its full size counts
    progressive = factor > 1 and _jpeg_is_progressive(data)
    _check_budget(source, header, 1 if progressive else factor, max_pixels_setting(max_pixels),
                  "progressive JPEG, held at full size while decoding; " if progressive else "")
    img = _decode_rgb(buf, _decode_flags(header, factor))
    if img is None:
        raise ImageReadError(source, "not a readable image (corrupt file or unsupported format)")
    return img


def _check_budget(path: str | os.PathLike, header: ImageHeader, factor: int,
                  max_pixels: int, why: str = "") -> None:
    """Refuse, before decoding, an image whose decoded array would take more bytes than
    `max_pixels` pixels of 8-bit RGB."""
    w, h = header.size
    pixels = math.ceil(w / factor) * math.ceil(h / factor)
    scale = f" at 1/{factor} scale" if factor > 1 else ""
    advice = f"raise max_pixels or ${MAX_PIXELS_ENV} to read it"
    if header.bytes_per_pixel == RGB_BYTES:
        if pixels > max_pixels:
            raise TooManyPixels(
                path, f"{why}image of {w}x{h} pixels would decode{scale} to {pixels / 1e6:.0f} "
                      f"MP, over the limit of {max_pixels / 1e6:g} MP ({advice})")
    elif pixels * header.bytes_per_pixel > max_pixels * RGB_BYTES:
        depth = "/".join(map(str, sorted(set(header.bits))))
        raise TooManyPixels(
            path, f"{depth}-bit {len(header.bits)}-channel image of {w}x{h} pixels would decode "
                  f"to {pixels * header.bytes_per_pixel / 1e6:.0f} MB ({header.bytes_per_pixel} "
                  f"bytes a pixel), over the limit of {max_pixels * RGB_BYTES / 1e6:g} MB "
                  f"({max_pixels / 1e6:g} MP of 8-bit RGB; {advice})")


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
    """A `cache_dir` setting as a usable folder, or None for no cache.

    "auto" means `default_cache_dir()`; None, "" and "none" mean no cache; anything else is
    the folder itself. A folder that cannot be created or written to (read-only, not a
    folder, no permission) means no cache, with one warning: the cache only saves time.
    """
    if setting is None or str(setting).strip().lower() in ("", "none"):
        return None
    folder = default_cache_dir() if str(setting) == "auto" else Path(setting).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # a folder may exist and still refuse files (read-only mount, another owner)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        log.warning("%s: cannot create the image cache or write in it (%s); decoding every "
                    "epoch. Set %s or --cache-dir to a writable folder.", folder,
                    e.strerror or e, CACHE_DIR_ENV)
        return None
    return folder


def cache_size_setting(size_gb: float | str | None = None) -> int:
    """The cache's size limit in bytes: `size_gb`, else $PALM_CACHE_SIZE_GB, else 4 GB."""
    if size_gb is not None:
        return int(_positive_number(size_gb, "cache_size_gb") * 1e9)
    text = os.environ.get(CACHE_SIZE_ENV, "").strip()
    return int(_positive_number(text, CACHE_SIZE_ENV) * 1e9 if text
               else DEFAULT_CACHE_SIZE_GB * 1e9)


# A cache entry: SHA-1 of (path, size, mtime, decode size, version) + .npy (see cache_path);
# interrupted writes leave `.NAME.npy.*.tmp` (palm.io_utils.atomic_path).
_CACHE_ENTRY = re.compile(r"^(?:[0-9a-f]{40}\.npy|\.[0-9a-f]{40}\.npy\..*\.tmp)$")


def cache_entries(folder: str | os.PathLike) -> list[Path]:
    """The files palm's image cache wrote in `folder` (nothing else there is counted)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if _CACHE_ENTRY.match(p.name) and p.is_file()]


def cache_usage(folder: str | os.PathLike) -> tuple[int, int]:
    """(entries, bytes) of the image cache in `folder`."""
    sizes = []
    for path in cache_entries(folder):
        try:
            sizes.append(path.stat().st_size)
        except FileNotFoundError:  # evicted meanwhile by a running training
            pass
    return len(sizes), sum(sizes)


def clear_cache(folder: str | os.PathLike) -> tuple[int, int]:
    """Delete the image cache's entries in `folder`; returns (entries, bytes) removed.

    Safe while a run uses the cache: it decodes the missing images again.
    """
    removed, freed = 0, 0
    for path in cache_entries(folder):
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            continue
        removed, freed = removed + 1, freed + size
    return removed, freed


def _is_cached_image(img: np.ndarray, target_size: int | None) -> bool:
    # a damaged or planted entry (a header declaring any shape, another dtype) is not used:
    # it would reach the network as a wrong image
    return (img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) > 0
            and (not target_size or min(img.shape[:2]) <= target_size))


class CachedImageReader:
    """`read_image` with a bounded on-disk cache of images shrunk to short side `target_size`.

    Entries are `.npy` files keyed by the absolute path, modification time, file size and
    target size, so an edited or replaced image is decoded again and every transform size
    has its own entries. A hit refreshes the entry's modification time; when the folder
    grows past `max_bytes`, the least recently used entries are deleted down to 80 % of it
    (entries left by an edited image age out the same way). Writes are atomic, so
    DataLoader workers may share one cache folder. Each process counts its own writes and
    measures the folder again after every 2 % of the limit, so with N workers the folder
    can exceed the limit by about N x 2 % before one of them evicts.
    A failed write (disk full, read-only folder) is logged once and the image is used
    anyway: the cache only saves time.

    Example:
        read = CachedImageReader("cache/224", 224)
        img = read("PALM-Training400/P0001.jpg")  # decodes once, later calls load the .npy
    """

    def __init__(self, cache_dir: str | os.PathLike, target_size: int | None,
                 max_bytes: int | None = None, max_pixels: int | None = None):
        self.cache_dir = Path(cache_dir)
        self.target_size = target_size
        self.max_bytes = cache_size_setting() if max_bytes is None else int(max_bytes)
        self.max_pixels = max_pixels
        self._write_failed = False
        self._written = 0  # bytes this process wrote since it last measured the folder
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            self._used = sum(size for _, size, _ in self._entries())
        except OSError as e:
            self._warn_once(self.cache_dir, e)
            self._used = 0

    def _warn_once(self, where: Path, error: OSError) -> None:
        if not self._write_failed:
            log.warning("%s: cannot write to the image cache (%s); going on without caching",
                        where, error.strerror or error)
            self._write_failed = True

    def _entries(self) -> list[tuple[float, int, Path]]:
        """(last use, bytes, path) of every entry; entries deleted meanwhile are left out."""
        found = []
        with os.scandir(self.cache_dir) as it:
            for entry in it:
                if entry.name.endswith(".npy"):
                    try:
                        st = entry.stat()
                    except FileNotFoundError:
                        continue
                    found.append((st.st_mtime, st.st_size, Path(entry.path)))
        return found

    def evict(self) -> int:
        """Delete least recently used entries until the folder holds <= 80 % of max_bytes.

        Returns:
            The number of bytes the remaining entries take.
        """
        entries = sorted(self._entries())
        used = sum(size for _, size, _ in entries)
        goal = int(self.max_bytes * 0.8)
        for _, size, path in entries:
            if used <= goal:
                break
            try:
                path.unlink()
            except FileNotFoundError:
                pass  # another worker evicted it
            except OSError as e:
                self._warn_once(path, e)
                break
            used -= size
        return used

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
                img = np.load(entry, allow_pickle=False, mmap_mode="r")
                img = np.array(img) if _is_cached_image(img, self.target_size) else None
            except (OSError, ValueError):
                img = None  # unreadable entry (e.g. disk trouble): decode again, overwrite it
            if img is not None:
                try:
                    os.utime(entry)  # mark as recently used for the LRU eviction
                except OSError:
                    pass  # a read-only cache still serves hits
                return img
        img = read_image(path, self.target_size, self.max_pixels)
        if self.target_size:
            img = resize_short_side(img, self.target_size)
        if not self._write_failed:
            self._store(entry, img)
        return img

    def _store(self, entry: Path, img: np.ndarray) -> None:
        try:
            with atomic_path(entry) as tmp, open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(img), allow_pickle=False)
            size = entry.stat().st_size
            self._used += size
            self._written += size
            # other workers write too: measure the folder itself now and then
            if self._used > self.max_bytes or self._written > self.max_bytes // 50:
                self._written = 0
                self._used = sum(size for _, size, _ in self._entries())
                if self._used > self.max_bytes:
                    self._used = self.evict()
        except OSError as e:
            self._warn_once(entry, e)
