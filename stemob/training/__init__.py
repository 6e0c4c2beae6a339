"""Training: the run orchestration (``run.train``), the resumable trainer loop, checkpoints, loggers
(JSON + wandb), observation augmentations and the ``training`` config section.

``train.py`` is the hydra entry point; see the README's "Training and evaluation".
"""
