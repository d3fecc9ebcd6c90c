"""Unlabelled image files to predict: a folder searched recursively (or one file), and a data
set over them that turns a bad file into an error field instead of an exception."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import paddle

from palm.data.image_io import ImageReadError, is_image_file, read_image


def list_images(input_path: str | Path) -> list[str]:
    """`input_path` itself when it is a file (whatever its extension), else every image file
    below it (recursive, sorted; hidden files and non-image extensions are left out)."""
    path = Path(input_path)
    if path.is_file():
        return [str(path)]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    return sorted(str(p) for p in path.rglob("*") if p.is_file() and is_image_file(p))


class FileImageSet(paddle.io.Dataset):
    """(CHW float32, index, error) per path; a bad file gives zeros and its error message."""

    def __init__(self, paths: Sequence[str], transform: Callable[[np.ndarray], np.ndarray],
                 image_size: int):
        super().__init__()
        self.paths = list(paths)
        self.transform = transform
        self.decode_size = getattr(transform, "decode_size", image_size)
        self.blank = np.zeros((3, image_size, image_size), np.float32)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.int64, str]:
        try:
            image = self.transform(read_image(self.paths[index], target_size=self.decode_size))
            return image, np.int64(index), ""
        except ImageReadError as e:
            return self.blank, np.int64(index), e.problem
        except (cv2.error, ValueError) as e:  # odd geometry the transform cannot handle
            return self.blank, np.int64(index), " ".join(f"{type(e).__name__}: {e}".split())
