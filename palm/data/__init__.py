"""Data sets and transforms: PALM as it ships, generic CSV / folder layouts, fast decoding."""

from palm.data.datasets import (
    PALM_CLASSES,
    CsvImageSet,
    FolderImageSet,
    ImageSet,
    PalmLayout,
    PalmTrainSet,
    PalmValSet,
    find_palm_layout,
    open_image_set,
    read_table,
)
from palm.data.image_io import (
    IMAGE_EXTENSIONS,
    CachedImageReader,
    ImageReadError,
    default_cache_dir,
    is_image_file,
    read_image,
    resize_short_side,
    resolve_cache_dir,
)
from palm.data.loader import CheckedLoader, LoaderError, SeededBatchSampler, build_loader
from palm.data.transforms import DEFAULT_AUGMENT, Transform, build_transform, crop_fundus

__all__ = [
    "CachedImageReader",
    "CheckedLoader",
    "CsvImageSet",
    "DEFAULT_AUGMENT",
    "FolderImageSet",
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "ImageSet",
    "LoaderError",
    "PALM_CLASSES",
    "PalmLayout",
    "PalmTrainSet",
    "PalmValSet",
    "SeededBatchSampler",
    "Transform",
    "build_loader",
    "build_transform",
    "crop_fundus",
    "default_cache_dir",
    "find_palm_layout",
    "is_image_file",
    "open_image_set",
    "read_image",
    "read_table",
    "resize_short_side",
    "resolve_cache_dir",
]
