"""Validation of the options every backend's environment shares (cameras, action mode)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stemob.errors import StemobError


def camera_names(cameras: str | Sequence[str], known: Sequence[str]) -> tuple[str, ...]:
    """Camera names from a list or a comma-separated string; unknown or no cameras are an error."""
    if isinstance(cameras, str):
        cameras = [c for c in cameras.split(",") if c]
    bad = [c for c in cameras if c not in known]
    if bad or not cameras:
        raise StemobError(f"unknown camera(s) {bad} (option 'cameras'): expected {tuple(known)}")
    return tuple(cameras)


def check_choice(option: str, value: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``, else an error naming the option."""
    if value not in choices:
        raise StemobError(f"unknown {option} {value!r}: expected one of {tuple(choices)}")
    return value


def max_episode_steps(env: Any) -> int | None:
    """The env's steps per episode, or None: ``unwrapped.task.max_episode_steps`` (tabletop),
    ``unwrapped.max_episode_steps`` (robosuite, RLBench backends, subprocess envs) or
    ``spec.max_episode_steps`` (gymnasium registrations)."""
    unwrapped = getattr(env, "unwrapped", env)
    for value in (
        getattr(getattr(unwrapped, "task", None), "max_episode_steps", None),
        getattr(unwrapped, "max_episode_steps", None),
        getattr(getattr(env, "spec", None), "max_episode_steps", None),
    ):
        if isinstance(value, int) and value > 0:
            return value
    return None
