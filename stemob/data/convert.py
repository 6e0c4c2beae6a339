"""Convert any reader's episodes to a robomimic HDF5 file."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from stemob.data.detect import open_reader
from stemob.data.episodes import Episode, rename_keys
from stemob.data.robomimic import write_robomimic
from stemob.errors import StemobError


def convert_to_robomimic(
    source: str | Path,
    target: str | Path,
    *,
    reader: str = "auto",
    key_map: Mapping[str, str] | None = None,
    env_args: dict[str, Any] | None = None,
    next_obs: bool = True,
    compression: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    reader_kwargs: Mapping[str, Any] | None = None,
) -> Path:
    """Read ``source`` (any supported format) and write ``target`` as robomimic HDF5.

    The output is written to a temp file and renamed when complete; the source is only read.
    """
    source, target = Path(source), Path(target)
    if target.exists() and not overwrite:
        raise StemobError(f"{target} already exists (pass overwrite=True / --overwrite)")
    if target.resolve() == source.resolve():
        raise StemobError(f"the output {target} is the input")
    episodes = open_reader(source, reader, **dict(reader_kwargs or {}))

    def renamed() -> Iterator[Episode]:
        for episode in episodes:
            yield rename_keys(episode, key_map or {})

    return write_robomimic(
        target,
        renamed(),
        env_args=env_args or getattr(episodes, "env_args", None),
        next_obs=next_obs,
        compression=compression,
        total=len(episodes),
        progress=progress,
    )
