"""robosuite / robomimic backend: rebuild a dataset's robosuite env from its ``env_args``.

Importing this package does not import robosuite (an optional extra: ``pip install -e
'.[robosuite]'``); building a :class:`RobosuiteEnv` does. See ``envs/robosuite/README.md``.
"""

from __future__ import annotations

from typing import Any

from envs.robosuite.types import CAMERA_ALIASES, ROBOSUITE_TYPE, ROLE_OBJECTS, UNSUPPORTED


def make_env_from_args(env_args: dict[str, Any], **overrides: Any) -> Any:
    """A :class:`envs.robosuite.env.RobosuiteEnv` from robomimic ``env_args`` (type 1)."""
    from envs.robosuite.env import make_env_from_args as _make

    return _make(env_args, **overrides)


def __getattr__(name: str) -> Any:
    if name == "RobosuiteEnv":
        from envs.robosuite.env import RobosuiteEnv

        return RobosuiteEnv
    raise AttributeError(name)


__all__ = [
    "CAMERA_ALIASES",
    "ROBOSUITE_TYPE",
    "ROLE_OBJECTS",
    "UNSUPPORTED",
    "RobosuiteEnv",
    "make_env_from_args",
]
