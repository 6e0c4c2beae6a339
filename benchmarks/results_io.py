"""Shared ending of the benchmark scripts: stamp a result with the machine, print it, save it."""

from __future__ import annotations

import json
import platform
from datetime import date
from pathlib import Path
from typing import Any


def publish(result: dict[str, Any], threads: int, out: str | None) -> dict[str, Any]:
    """``result`` plus ``threads``, ``machine`` and ``date``, printed as JSON and written to
    ``out`` (its folder created) when given."""
    import torch

    result = {**result, "threads": threads,
              "machine": f"{platform.machine()}, torch {torch.__version__}",
              "date": date.today().isoformat()}  # fmt: skip
    print(json.dumps(result, indent=1))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1) + "\n")
    return result
