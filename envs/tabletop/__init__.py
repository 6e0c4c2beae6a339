"""The embedded MuJoCo tabletop suite: scene, arm and controller, tasks with scripted experts."""

from envs.tabletop.env import TabletopEnv

__all__ = ["TabletopEnv"]
