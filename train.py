"""Train a policy on (Stem-OB inverted) demonstrations: ``python train.py [overrides]``.

Examples::

    python train.py                                   # the README's main command (CPU, ~25 min)
    python train.py policy=act_small stemob=none training.steps=2000 logger=none
    python train.py run_dir=outputs/train/my-run resume=true
    accelerate launch --cpu --num_processes 2 train.py training=smoke

The composed config is saved as <run_dir>/config.yaml; see configs/train.yaml for every group.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering unless the user chose a backend

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from stemob.errors import StemobError  # noqa: E402


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> None:
    from stemob.evaluation.suite import after_training, make_evaluator
    from stemob.training.augment import make_augment
    from stemob.training.run import train

    config = OmegaConf.to_container(cfg, resolve=True)
    try:
        run_dir = train(config, evaluator_factory=make_evaluator, augment_factory=make_augment)
        after_training(config, run_dir)
    except StemobError as error:
        print(f"train.py: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
