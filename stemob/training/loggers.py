"""Run logging: a local JSON-lines log that is always written, and wandb (offline by default)."""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stemob.errors import StemobError

LOGGERS = ("wandb", "none")


class RunLogger:
    """Logs scalars, images and videos of a run to ``<run_dir>/log.jsonl`` and optionally wandb.

    Args:
        run_dir: the run directory (owned by the main process).
        config: the composed run config (saved with the wandb run).
        name: ``wandb`` or ``none`` (local JSON log only).
        project, entity, tags, mode, group: wandb settings; ``mode`` defaults to ``offline`` so
            a run works without network (``wandb sync <run_dir>/wandb/offline-run-*`` later).
        enabled: False on non-main processes of a distributed run (nothing is written).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        config: Mapping[str, Any],
        name: str = "wandb",
        project: str = "stemob",
        entity: str | None = None,
        tags: list[str] | None = None,
        mode: str = "offline",
        group: str | None = None,
        enabled: bool = True,
    ) -> None:
        if name not in LOGGERS:
            raise StemobError(f"logger {name!r}: expected one of {LOGGERS}")
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "log.jsonl"
        self.wandb: Any = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if name == "wandb":
            import wandb

            id_file = self.run_dir / "wandb_id.txt"
            run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)
            id_file.write_text(run_id)
            self.wandb = wandb.init(
                project=project,
                entity=entity,
                tags=list(tags or []),
                group=group,
                mode=mode,
                dir=str(self.run_dir),
                id=run_id,
                resume="allow",
                config=dict(config),
                settings=wandb.Settings(silent=True, console="off"),
            )

    @classmethod
    def from_config(
        cls,
        run_dir: str | os.PathLike,
        config: Mapping[str, Any],
        section: Mapping[str, Any] | None,
        enabled: bool = True,
    ) -> RunLogger:
        """A logger from a ``logger`` config section (``name`` plus wandb settings)."""
        options = dict(section or {"name": "none"})
        name = options.pop("name", "none")
        keys = ("project", "entity", "tags", "mode", "group")
        wandb_options = {k: v for k, v in options.items() if k in keys}
        return cls(run_dir, config, name=name, enabled=enabled, **wandb_options)

    def log(self, values: Mapping[str, Any], step: int) -> None:
        """Log scalar values at ``step`` (non-finite numbers are written as null in the JSON)."""
        if not self.enabled:
            return
        clean = {k: _json_value(v) for k, v in values.items()}
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **clean}) + "\n")
        if self.wandb is not None:
            self.wandb.log(dict(values), step=step)

    def log_image(self, key: str, path: str | os.PathLike, step: int) -> None:
        """Log a PNG written to ``path`` (the JSON log records its path)."""
        self._log_media(key, path, step, "Image")

    def log_video(self, key: str, path: str | os.PathLike, step: int) -> None:
        """Log an mp4 written to ``path`` (the JSON log records its path)."""
        self._log_media(key, path, step, "Video")

    def _log_media(self, key: str, path: str | os.PathLike, step: int, kind: str) -> None:
        if not self.enabled:
            return
        rel = os.path.relpath(path, self.run_dir)
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, key: rel}) + "\n")
        if self.wandb is not None:
            import wandb

            media = (
                wandb.Video(str(path), format="mp4") if kind == "Video" else wandb.Image(str(path))
            )
            self.wandb.log({key: media}, step=step)

    def summary(self, values: Mapping[str, Any]) -> None:
        """Final values of the run (wandb summary; also a JSON line with ``"summary": true``)."""
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(
                json.dumps({"summary": True, **{k: _json_value(v) for k, v in values.items()}})
                + "\n"
            )
        if self.wandb is not None:
            self.wandb.summary.update(dict(values))

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


def _json_value(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_log(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The JSON-lines log of a run as a list of records."""
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
