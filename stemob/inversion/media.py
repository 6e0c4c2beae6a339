"""Reading and writing images, folders of images and videos as uint8 RGB arrays."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from stemob.errors import StemobError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def natural_key(path: Path) -> list[object]:
    """Sort key so that ``frame_2.png`` comes before ``frame_10.png``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def list_images(folder: str | Path) -> list[Path]:
    """Image files of a folder (not recursive), in natural order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise StemobError(f"{folder} is not a folder")
    files = sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=natural_key
    )
    if not files:
        raise StemobError(f"{folder} holds no images (looked for {', '.join(IMAGE_SUFFIXES)})")
    return files


def read_image(path: str | Path) -> np.ndarray:
    """An image file as uint8 (H, W, 3) RGB (grey and alpha are converted)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise StemobError(f"image {path} does not exist")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise StemobError(f"cannot read image {path}: {error}") from error


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Write a uint8 (H, W, 3) image; the format follows the suffix. Written atomically."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    Image.fromarray(image).save(tmp)
    os.replace(tmp, path)


def read_video(path: str | Path) -> tuple[Iterator[np.ndarray], float, int | None]:
    """(frames, fps, frame count or None) of a video; frames are uint8 (H, W, 3)."""
    import imageio.v2 as imageio

    path = Path(path)
    if not path.is_file():
        raise StemobError(f"video {path} does not exist")
    try:
        reader = imageio.get_reader(path)
        meta = reader.get_meta_data()
    except Exception as error:  # noqa: BLE001 - imageio raises many kinds
        raise StemobError(f"cannot read video {path}: {error}") from error
    fps = float(meta.get("fps") or 30.0)
    try:
        count = reader.count_frames()
    except Exception:  # noqa: BLE001 - not every format can count
        count = None

    def frames() -> Iterator[np.ndarray]:
        try:
            for frame in reader:
                yield np.asarray(frame)[..., :3].astype(np.uint8, copy=False)
        finally:
            reader.close()

    return frames(), fps, count


class VideoWriter:
    """Writes uint8 frames to an mp4 (H.264) through a temp file renamed on close."""

    def __init__(self, path: str | Path, fps: float) -> None:
        import imageio.v2 as imageio

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp{self.path.suffix}")
        self._writer = imageio.get_writer(self._tmp, fps=fps, macro_block_size=1)

    def write(self, frame: np.ndarray) -> None:
        self._writer.append_data(frame)

    def close(self) -> None:
        self._writer.close()
        os.replace(self._tmp, self.path)
