"""Record scripted-expert demonstrations as robomimic-layout HDF5 (and re-render them).

    python -m envs.record task=lift_cube episodes=100 out=demos.hdf5 [perturbation=PATH]
        [seed=0] [image_size=96] [cameras=front,wrist] [action_mode=ee_delta]
        [keep_failed=false] [max_attempts=N] [valid_fraction=0.1] [next_obs=true]
        [steps_after_success=0]

Episode ``i`` of the attempts uses ``reset(seed=seed + i)``; each demo keeps its reset seed in
``stemob_attrs`` (and the ``seed`` attribute), so ``envs.rerender`` can rebuild the same scene.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from envs.cli_args import parse_kv
from stemob.errors import StemobError

ENV_TYPE = "stemob_tabletop"
"""robomimic ``env_args['type']`` of the tabletop suite."""


def env_args_of(env: Any) -> dict[str, Any]:
    """robomimic's ``{env_name, type, env_kwargs}`` of an env (each backend's env reports its own:
    ``TabletopEnv.env_args``, ``RobosuiteEnv.env_args``)."""
    return dict(env.unwrapped.env_args)


def make_env_from_args(env_args: dict[str, Any], **overrides: Any) -> Any:
    """An env from robomimic ``env_args`` (with keyword overrides), by ``env_args['type']``.

    ``stemob_tabletop`` -> :class:`envs.tabletop.env.TabletopEnv`; robomimic's
    ``ROBOSUITE_TYPE`` (1) -> :func:`envs.robosuite.make_env_from_args`; ``stemob_rlbench`` ->
    :func:`envs.rlbench.make_env_from_args`. The other backends are imported only here, so
    their optional dependencies are needed only when such a dataset is evaluated.
    """
    if not isinstance(env_args, dict):
        raise StemobError(f"env_args: expected a mapping, got {type(env_args).__name__}")
    env_type = env_args.get("type")
    if env_type == ENV_TYPE:
        from envs.tabletop.env import TabletopEnv

        kwargs = {**(env_args.get("env_kwargs") or {}), **overrides}
        return TabletopEnv(**kwargs)
    from envs.rlbench.env import ENV_TYPE as RLBENCH_TYPE
    from envs.robosuite.types import ROBOSUITE_TYPE

    if env_type == ROBOSUITE_TYPE:
        from envs.robosuite import make_env_from_args as make_robosuite

        return make_robosuite(env_args, **overrides)
    if env_type == RLBENCH_TYPE:
        from envs.rlbench import make_env_from_args as make_rlbench

        return make_rlbench(env_args, **overrides)
    raise StemobError(
        f"env_args type {env_type!r}: expected {ENV_TYPE!r} (tabletop), {ROBOSUITE_TYPE} "
        f"(robosuite, robomimic's EnvType.ROBOSUITE_TYPE) or {RLBENCH_TYPE!r} (RLBench)"
    )


def needs_own_process(env_args: Mapping[str, Any]) -> bool:
    """Whether the backend of ``env_args`` allows one simulator per process, so that every
    env must run in its own (RLBench: PyRep's single CoppeliaSim instance, envs/subprocess_env.py)."""
    from envs.rlbench.env import ENV_TYPE as RLBENCH_TYPE

    return isinstance(env_args, Mapping) and env_args.get("type") == RLBENCH_TYPE


def _extras(env: Any, info: dict[str, Any]) -> dict[str, np.ndarray]:
    out = {
        k: np.asarray(info[k])
        for k in ("joint_world_pos", "joint_world_quat", "gripper_world_pos", "gripper_world_quat")
    }
    for cam, params in info["cameras"].items():
        out[f"{cam}_intrinsics"] = params["intrinsics"]
        out[f"{cam}_extrinsics"] = params["extrinsics"]
    return out


def run_episode(env: Any, seed: int, steps_after_success: int = 0) -> tuple[Any, bool]:
    """One expert episode from ``reset(seed)``; returns (Episode, success).

    With ``steps_after_success`` the expert goes on for that many steps once the task is done
    (e.g. holding the cube up), within the task's step limit; the demo is then a success only if
    the task is still done at its last step.
    """
    from stemob.data.episodes import Episode

    expert = env.task.make_expert(env)
    obs, info = env.reset(seed=seed)
    frames: dict[str, list] = {k: [] for k in obs}
    extras: dict[str, list] = {}
    actions, rewards, states = [], [], []
    success, done_at = False, None
    for t in range(env.task.max_episode_steps):
        for k, v in obs.items():
            frames[k].append(v)
        for k, v in _extras(env, info).items():
            extras.setdefault(k, []).append(v)
        states.append(env.get_state())
        action = expert.act()
        if env.action_mode == "joint_position":
            action = env.ee_to_joint_action(action)
        obs, reward, terminated, truncated, info = env.step(action)
        actions.append(action)
        rewards.append(reward)
        success = bool(info["is_success"])
        if success and done_at is None:
            done_at = t
        if truncated or (done_at is not None and t - done_at >= steps_after_success):
            break
        if terminated and done_at is None:
            break
    dones = np.zeros(len(actions), np.int64)
    dones[-1] = 1  # robomimic: the last step ends the demo
    episode = Episode(
        obs={k: np.stack(v) for k, v in frames.items()},
        actions=np.asarray(actions, np.float32),
        rewards=np.asarray(rewards, np.float64),
        dones=dones,
        states=np.stack(states),
        extras={k: np.stack(v) for k, v in extras.items()},
        attrs={
            "model_file": env.xml,
            "seed": int(seed),
            "success": success,
            "task": env.task_name,
            "steps_after_success": int(steps_after_success),
        },
    )
    return episode, success


def record(
    task: str,
    episodes: int,
    out: str | Path,
    perturbation: str | None = None,
    seed: int = 0,
    image_size: int = 96,
    cameras: Sequence[str] = ("front", "wrist"),
    action_mode: str = "ee_delta",
    keep_failed: bool = False,
    max_attempts: int | None = None,
    valid_fraction: float = 0.1,
    next_obs: bool = True,
    progress: bool = True,
    steps_after_success: int = 0,
) -> dict[str, Any]:
    """Run the expert until ``episodes`` demos are kept; write them atomically to ``out``.

    ``steps_after_success`` extends every demo past the task's success (see :func:`run_episode`):
    chunked policies such as ACT then learn whole chunks instead of padded tails.
    """
    from tqdm import tqdm

    from envs.tabletop.env import TabletopEnv
    from stemob.data.robomimic import write_robomimic

    if episodes < 1:
        raise StemobError(f"option episodes: expected >= 1, got {episodes}")
    if steps_after_success < 0:
        raise StemobError(f"option steps_after_success: expected >= 0, got {steps_after_success}")
    if not 0 <= valid_fraction < 1:
        raise StemobError(f"option valid_fraction: expected in [0, 1), got {valid_fraction}")
    max_attempts = max_attempts or 2 * episodes + 10
    env = TabletopEnv(
        task,
        perturbation=perturbation,
        image_size=image_size,
        cameras=cameras,
        action_mode=action_mode,
        terminate_on_success=True,
    )
    report: dict[str, Any] = {"attempts": 0, "kept": 0, "failed_seeds": []}

    def generate() -> Iterator[Any]:
        bar = tqdm(total=episodes, desc=f"recording {task}", unit="demo", disable=not progress)
        attempt = 0
        while report["kept"] < episodes:
            if attempt >= max_attempts:
                raise StemobError(
                    f"expert for {task} kept {report['kept']} of {episodes} demos in "
                    f"{attempt} attempts; failed seeds: {report['failed_seeds'][:20]}"
                )
            episode, success = run_episode(env, seed + attempt, steps_after_success)
            attempt += 1
            report["attempts"] = attempt
            if not success:
                report["failed_seeds"].append(seed + attempt - 1)
                if not keep_failed:
                    bar.set_postfix(success=f"{report['kept']}/{attempt}")
                    continue
            report["kept"] += 1
            bar.update(1)
            bar.set_postfix(success=f"{attempt - len(report['failed_seeds'])}/{attempt}")
            yield episode
        bar.close()

    names = [f"demo_{i}" for i in range(episodes)]
    n_valid = int(round(valid_fraction * episodes))
    masks = {"train": names[: episodes - n_valid], "valid": names[episodes - n_valid :]}
    try:
        write_robomimic(
            out,
            generate(),
            env_args=env_args_of(env),
            next_obs=next_obs,
            masks=masks,
            compression="lzf",
            total=episodes,
        )
    finally:
        env.close()
    report["success_rate"] = (report["attempts"] - len(report["failed_seeds"])) / max(
        report["attempts"], 1
    )
    if report["failed_seeds"]:
        print(
            f"expert failures ({len(report['failed_seeds'])} of {report['attempts']}): seeds "
            f"{report['failed_seeds'][:20]}",
            file=sys.stderr,
        )
    return report


SPEC: dict[str, tuple[type, Any]] = {
    "task": (str, ...), "episodes": (int, ...), "out": (str, ...), "perturbation": (str, ""),
    "seed": (int, 0), "image_size": (int, 96), "cameras": (str, "front,wrist"),
    "action_mode": (str, "ee_delta"), "keep_failed": (bool, False), "max_attempts": (int, 0),
    "valid_fraction": (float, 0.1), "next_obs": (bool, True), "steps_after_success": (int, 0),
}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; bad input prints one line and exits with status 2."""
    try:
        a = parse_kv(sys.argv[1:] if argv is None else argv, SPEC)
        report = record(
            a["task"],
            a["episodes"],
            a["out"],
            perturbation=a["perturbation"] or None,
            seed=a["seed"],
            image_size=a["image_size"],
            cameras=tuple(c for c in a["cameras"].split(",") if c),
            action_mode=a["action_mode"],
            keep_failed=a["keep_failed"],
            max_attempts=a["max_attempts"] or None,
            valid_fraction=a["valid_fraction"],
            next_obs=a["next_obs"],
            steps_after_success=a["steps_after_success"],
        )
    except StemobError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"out": a["out"], **report}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
