"""envs.record.make_env_from_args sends robomimic's ROBOSUITE_TYPE (1) to envs.robosuite, and
without the robosuite extra the user gets one clear error (runs with or without the extra)."""

from __future__ import annotations

import importlib.util

import pytest

from envs.record import make_env_from_args
from envs.robosuite import ROBOSUITE_TYPE
from stemob.errors import StemobError

HAS_ROBOSUITE = importlib.util.find_spec("robosuite") is not None


def test_robomimic_type_is_one():
    assert ROBOSUITE_TYPE == 1  # robomimic.envs.env_base.EnvType.ROBOSUITE_TYPE


@pytest.mark.skipif(HAS_ROBOSUITE, reason="the robosuite extra is installed")
def test_missing_extra_is_explained():
    args = {"env_name": "Lift", "type": 1, "env_kwargs": {"robots": ["Panda"]}}
    with pytest.raises(StemobError, match=r"\.\[robosuite\]"):
        make_env_from_args(args)


@pytest.mark.skipif(not HAS_ROBOSUITE, reason="needs the robosuite extra")
def test_dispatches_to_the_robosuite_backend():
    from envs.robosuite.env import RobosuiteEnv

    env = make_env_from_args(
        {"env_name": "Lift", "type": 1, "env_kwargs": {"robots": "Panda"}}, cameras=[]
    )
    try:
        assert isinstance(env, RobosuiteEnv) and env.env_args["type"] == 1
    finally:
        env.close()


def test_unknown_types_and_missing_names_are_refused():
    with pytest.raises(StemobError, match="env_args type"):
        make_env_from_args({"env_name": "Lift", "type": 2, "env_kwargs": {}})
    with pytest.raises(StemobError, match="mapping"):
        make_env_from_args(["Lift"])
