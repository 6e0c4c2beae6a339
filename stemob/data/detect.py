"""Format detection and a single entry point to open any reader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stemob.errors import StemobError

FORMATS = ("robomimic", "rlbench", "lerobot", "folder")
_HDF5_SUFFIXES = (".hdf5", ".h5", ".he5")


def detect_format(path: str | Path) -> str:
    """``robomimic`` (an HDF5 file), ``lerobot`` (meta/info.json), ``rlbench``
    (``.../episodes/episode<N>/low_dim_obs.pkl``) or ``folder`` (the plain real-robot format)."""
    path = Path(path)
    if not path.exists():
        raise StemobError(f"{path} does not exist")
    if path.is_file():
        if path.suffix.lower() in _HDF5_SUFFIXES:
            return "robomimic"
        with path.open("rb") as handle:
            if handle.read(8) == b"\x89HDF\r\n\x1a\n":
                return "robomimic"
        raise StemobError(
            f"{path}: a file that is not HDF5; expected a robomimic .hdf5 or a folder"
        )
    if (path / "meta" / "info.json").is_file():
        return "lerobot"
    if path.name.startswith("episode") and (path / "low_dim_obs.pkl").is_file():
        return "rlbench"
    for pattern in (
        "episode*/low_dim_obs.pkl",
        "*/episode*/low_dim_obs.pkl",
        "*/*/episode*/low_dim_obs.pkl",
        "*/*/*/episode*/low_dim_obs.pkl",
    ):
        if next(path.glob(pattern), None) is not None:
            return "rlbench"
    from stemob.data.folder import looks_like_folder_dataset

    if looks_like_folder_dataset(path):
        return "folder"
    raise StemobError(
        f"cannot tell the format of {path}: expected a robomimic .hdf5 file, a LeRobot dataset "
        "(meta/info.json), RLBench episodes (episode<N>/low_dim_obs.pkl) or episode folders "
        "(see stemob/data/README.md)"
    )


def open_reader(path: str | Path, reader: str = "auto", **kwargs: Any) -> Any:
    """Open ``path`` with the named reader (``auto`` detects it); ``kwargs`` go to the reader."""
    if reader == "auto":
        reader = detect_format(path)
    if reader == "robomimic":
        from stemob.data.robomimic import RobomimicReader

        return RobomimicReader(path, **kwargs)
    if reader == "rlbench":
        from stemob.data.rlbench import RLBenchReader

        return RLBenchReader(path, **kwargs)
    if reader == "lerobot":
        from stemob.data.lerobot import LeRobotReader

        return LeRobotReader(path, **kwargs)
    if reader == "folder":
        from stemob.data.folder import FolderReader

        return FolderReader(path, **kwargs)
    raise StemobError(f"unknown reader {reader!r}: expected 'auto' or one of {', '.join(FORMATS)}")
