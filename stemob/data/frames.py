"""The frames of any dataset stemob reads, for the Stem-OB cache (``stemob.inversion.dataset_cache``).

robomimic HDF5 files are read by the cache itself (:class:`~stemob.inversion.dataset_cache.
HDF5Frames`); LeRobot datasets, RLBench episode folders and real-robot folders go through their
reader: episode ``i`` is ``demo_<i>`` (its Stem-OB noise is seeded by ``i``, the step and the
camera key, as for ``data/demo_<i>`` of an HDF5 file) and the keys are the reader's own names
(before any ``key_map``). One episode is decoded at a time and kept while its frames are served.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stemob.data.detect import detect_format, open_reader
from stemob.data.episodes import is_image
from stemob.errors import StemobError
from stemob.inversion.dataset_cache import FrameSource, HDF5Frames, SourceLayout


class ReaderFrames:
    """A :class:`~stemob.inversion.dataset_cache.FrameSource` over a stemob reader."""

    def __init__(self, path: str | Path, reader: str = "auto", **reader_kwargs: Any) -> None:
        self.path = Path(path)
        self.reader = open_reader(self.path, reader, **reader_kwargs)
        self._index: int | None = None
        self._episode: Any = None
        self._shapes: dict[tuple[str, str], tuple[int, ...]] = {}

    def _read(self, index: int) -> Any:
        if self._index != index:
            self._episode, self._index = self.reader.read(index), index
        return self._episode

    def layout(self, keys: list[str] | None = None) -> SourceLayout:
        if not len(self.reader):
            raise StemobError(f"{self.path}: the dataset holds no episodes")
        first = self._read(0)
        found = sorted(k for k, v in first.obs.items() if is_image(v))
        if keys is None:
            keys = found
            if not keys:
                raise StemobError(
                    f"{self.path}: no image keys to invert (uint8 (T, H, W, 3)); the episodes "
                    f"have {sorted(first.obs)}"
                )
        missing = [k for k in keys if k not in found]
        if missing:
            raise StemobError(f"{self.path}: image key(s) {missing} not found (have {found})")
        demos = tuple(f"demo_{i}" for i in range(len(self.reader)))
        lengths = self.reader.lengths()
        shapes = {
            (demo, key): (int(lengths[i]), *first.obs[key].shape[1:])
            for i, demo in enumerate(demos)
            for key in keys
        }
        self._shapes = shapes
        return SourceLayout(
            demos, tuple(keys), shapes, dict(zip(demos, map(int, lengths), strict=True))
        )

    def frames(self, demo: str, key: str, start: int, stop: int) -> np.ndarray:
        episode = self._read(int(demo.removeprefix("demo_")))
        images = episode.obs[key]
        expected = self._shapes.get((demo, key))
        if expected is not None and tuple(images.shape) != expected:
            raise StemobError(
                f"{episode.where(key)}: frames {tuple(images.shape)}, expected {expected} (the "
                "length the reader reports and episode 0's image size)"
            )
        return np.ascontiguousarray(images[start:stop])

    def close(self) -> None:
        self._episode, self._index = None, None


def frame_source(path: str | Path, reader: str = "auto", **reader_kwargs: Any) -> FrameSource:
    """The cache's frame source for ``path`` in any format stemob reads."""
    fmt = detect_format(path) if reader == "auto" else reader
    if fmt == "robomimic":
        return HDF5Frames(path)
    return ReaderFrames(path, fmt, **reader_kwargs)
