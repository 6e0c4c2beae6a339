"""Environments: the embedded MuJoCo tabletop suite, perturbations and wrappers (to come, see the issues).

``envs`` may use ``stemob.inversion`` (the test-time observation wrapper) and ``stemob.data``.
"""
