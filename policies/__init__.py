"""Policies trained on (inverted) observations: Diffusion Policy and ACT (to come, see the issues).

Policies consume batches of tensors; they import neither ``envs`` nor ``stemob.training``.
"""
