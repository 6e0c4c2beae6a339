"""Checkpoints of a training run: the deployable policy and the resumable training state.

Layout of ``<run_dir>/checkpoints``::

    step_0002000/policy/       deployable policy (safetensors + JSON; the EMA weights if any)
    step_0002000/train_state.pt  optimiser, scheduler, raw weights, EMA, RNG states, data position
    best/                      copy of the step with the best evaluation success rate (+ best.json)
    last -> step_...           (``last.json`` names the newest complete step)

Every checkpoint is written under a temporary name and renamed, so a kill leaves either the old
or the new one, never a half-written one. The training state is loaded with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policies.base import RUN_CHECKPOINTS, STEP_DIR
from stemob.errors import StemobError

STATE_FILE = "train_state.pt"


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states in a ``weights_only``-loadable form."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [list(random.getstate()[1]), random.getstate()[0], random.getstate()[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    internal, version, gauss = state["python"]
    random.setstate((version, tuple(int(v) for v in internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointManager:
    """Writes, lists, prunes and loads the checkpoints of one run directory."""

    def __init__(self, run_dir: str | os.PathLike, keep_last: int = 2) -> None:
        self.root = Path(run_dir) / RUN_CHECKPOINTS
        self.keep_last = keep_last

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = [STEP_DIR.match(p.name) for p in self.root.iterdir() if p.is_dir()]
        return sorted(int(m.group(1)) for m in found if m)

    def step_dir(self, step: int) -> Path:
        return self.root / f"step_{step:07d}"

    def save(self, step: int, policy: Any, state: dict[str, Any]) -> Path:
        """Write checkpoint ``step`` atomically (policy folder + training state), then prune."""
        final = self.step_dir(step)
        tmp = self.root / f".tmp_step_{step:07d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        policy.save(tmp / "policy")
        torch.save(state, tmp / STATE_FILE)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _write_json(self.root / "last.json", {"step": step, "path": final.name})
        self._prune()
        return final

    def _prune(self) -> None:
        for step in self.steps()[: -self.keep_last]:
            shutil.rmtree(self.step_dir(step), ignore_errors=True)

    def latest(self) -> Path | None:
        """The newest complete checkpoint folder, or None."""
        steps = self.steps()
        return self.step_dir(steps[-1]) if steps else None

    def load_state(self, folder: Path) -> dict[str, Any]:
        """The training state of a checkpoint folder (tensors and plain values only)."""
        path = folder / STATE_FILE
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError) as error:
            raise StemobError(f"{path}: cannot read the training state ({error})") from error

    def update_best(self, step: int, success_rate: float) -> bool:
        """Copy checkpoint ``step``'s policy to ``best/`` unless an earlier one did better (a tie goes
        to the later, longer-trained step)."""
        record_file = self.root / "best.json"
        if record_file.is_file():
            best = json.loads(record_file.read_text())
            if success_rate < best["success_rate"]:
                return False
        tmp = self.root / ".tmp_best"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(self.step_dir(step) / "policy", tmp)
        shutil.rmtree(self.root / "best", ignore_errors=True)
        os.replace(tmp, self.root / "best")
        _write_json(record_file, {"step": step, "success_rate": success_rate})
        return True


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def resolve_policy_dir(path: str | os.PathLike) -> Path:
    """A policy folder from a policy folder, a checkpoint step folder or a run directory (its
    ``checkpoints/best`` when it exists, else the newest step): :func:`policies.base.
    resolve_checkpoint`."""
    from policies.base import resolve_checkpoint

    return resolve_checkpoint(path)
