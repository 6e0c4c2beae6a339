"""RLBench (+ Colosseum) backend: a gymnasium adapter over RLBench's ``TaskEnvironment``.

Importing this package imports neither rlbench, pyrep nor colosseum; building an
:class:`RLBenchEnv` does (a clear :class:`stemob.errors.StemobError` with the install steps when
they are missing). See ``envs/rlbench/README.md``.
"""

from __future__ import annotations

from envs.rlbench.env import (
    ACTION_MODES,
    CAMERAS,
    ENV_TYPE,
    INSTALL_HELP,
    RLBenchEnv,
    camera_params_opencv,
    load_backend,
    make_env_from_args,
)
from envs.rlbench.targets import (
    CAMERA_NAMES,
    TASK_TARGETS,
    resolve_colosseum_config,
    role_names,
)

__all__ = [
    "ACTION_MODES",
    "CAMERAS",
    "CAMERA_NAMES",
    "ENV_TYPE",
    "INSTALL_HELP",
    "TASK_TARGETS",
    "RLBenchEnv",
    "camera_params_opencv",
    "load_backend",
    "make_env_from_args",
    "resolve_colosseum_config",
    "role_names",
]
