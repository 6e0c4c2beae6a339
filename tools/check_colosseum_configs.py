"""Load every Colosseum-style YAML under the given folders with stemob's parser.

    python tools/check_colosseum_configs.py ~/robot-colosseum/colosseum/assets/configs \
        ~/genima/controller/cfgs/colosseum

Prints one line per file (factors, enabled ones, seeds) and exits with status 1 if any file is
refused, naming the file and key. Files without ``env.scene.factors`` are skipped.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from envs.perturbations.config import load_config  # noqa: E402
from stemob.errors import StemobError  # noqa: E402


def check(paths: list[str]) -> int:
    """The number of refused files (each one reported)."""
    refused = 0
    files = sorted(
        f for p in paths for f in ([Path(p)] if Path(p).is_file() else Path(p).rglob("*.yaml"))
    )
    for file in files:
        raw = yaml.safe_load(file.read_text()) or {}
        if not isinstance(raw, dict) or "scene" not in (raw.get("env") or {}):
            continue
        try:
            _, factors = load_config(file)
        except StemobError as error:
            refused += 1
            print(f"REFUSED {error}")
            continue
        enabled = [f.name for f in factors if f.enabled]
        seeds = sorted({f.seed for f in factors})
        print(f"ok {file}: {len(factors)} factors, enabled {enabled}, seeds {seeds}")
    return refused


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(1 if check(sys.argv[1:]) else 0)
