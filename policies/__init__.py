"""Policies trained on (inverted) observations: Diffusion Policy and ACT.

Policies consume batches of tensors; they import neither ``envs`` nor ``stemob.training``, and
not ``stemob.data`` either: normalisation statistics arrive as plain data (see
:mod:`policies.normalize`). ``make_policy('diffusion' | 'act', config)`` builds one,
``load_policy(folder)`` loads a checkpoint.
"""

from policies.base import Policy, PolicyConfig, load_policy, make_policy, register_policy

__all__ = ["Policy", "PolicyConfig", "load_policy", "make_policy", "register_policy"]
