"""Evaluate policy checkpoints under perturbations: ``python eval.py checkpoint=PATH [overrides]``.

Examples::

    python eval.py checkpoint=outputs/train/lift_cube-diffusion_small-ddpm-none-seed0
    python eval.py checkpoint=PATH perturbation=light_color episodes=25
    python eval.py checkpoint='[runs/org,runs/stemob]' names='[org,stemob]' benchmark=colosseum

Writes results.json, results.md, a bar plot and rollout videos in output_dir (configs/eval.yaml).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering unless the user chose a backend

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf, open_dict  # noqa: E402

from stemob.errors import StemobError  # noqa: E402


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from stemob.evaluation.suite import evaluate_from_config

    choice = HydraConfig.get().runtime.choices.get("perturbation")
    if choice:  # by name: the file is read by stemob (Colosseum's `${env.seed}` is file-relative)
        with open_dict(cfg):
            cfg.perturbation = choice
    config = OmegaConf.to_container(cfg, resolve=True)
    config["perturbation_name"] = choice
    try:
        out = evaluate_from_config(config)
    except StemobError as error:
        print(f"eval.py: error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"report: {out / 'results.md'}")


if __name__ == "__main__":
    main()
