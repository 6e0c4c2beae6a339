"""Record scripted-expert demonstrations as robomimic-layout HDF5 (and re-render them).

    python -m envs.record task=lift_cube episodes=100 out=demos.hdf5 [perturbation=PATH]
        [seed=0] [image_size=96] [cameras=front,wrist] [action_mode=ee_delta]
        [keep_failed=false] [max_attempts=N] [valid_fraction=0.1] [next_obs=true]
        [steps_after_success=0]
    python -m envs.record task=robosuite/Lift episodes=200 out=lift.hdf5 image_size=84 \
        cameras=agentview,robot0_eye_in_hand

Tabletop tasks use their own experts; ``robosuite/<Env>`` (``Lift``, ``Stack``) records
robosuite's env with the scripted experts of :mod:`envs.robosuite.experts` through its own OSC
controller, with robosuite's ``env_args`` in the file as robomimic writes them
(:func:`record_env_args` records any such ``env_args``, e.g. a task config's).
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


def run_episode(
    env: Any, seed: int, steps_after_success: int = 0, action_noise: float = 0.0
) -> tuple[Any, bool]:
    """One expert episode from ``reset(seed)``; returns (Episode, success).

    With ``steps_after_success`` the expert goes on for that many steps once the task is done
    (e.g. holding the cube up), within the task's step limit; the demo is then a success only if
    the task is still done at its last step.

    With ``action_noise`` (DART-style noise injection) the env executes the expert's action plus
    Gaussian noise on every dimension but the gripper (the last), its standard deviation that
    fraction of the dimension's half-range (robosuite's OSC: of 1; the tabletop's: of 5 cm and
    0.5 rad), clipped to the action space, while the demo records the expert's own action: the
    states then cover small deviations from the expert's path, each labelled with the expert's
    correction. The noise is seeded by ``seed``. The actions the env executed go to
    ``extras/executed_actions``: replayed from ``states[0]`` they retrace the demo (the recorded
    ``actions``, the expert's labels, do not).
    """
    from stemob.data.episodes import Episode

    obs, info = env.reset(seed=seed)
    expert = env.make_expert()
    noise = np.random.default_rng([int(seed), 0xDA127]) if action_noise > 0 else None
    space = env.action_space
    noise_scale = action_noise * (space.high[:-1] - space.low[:-1]) / 2  # per arm dimension
    frames: dict[str, list] = {k: [] for k in obs}
    extras: dict[str, list] = {}
    actions, executed_actions, rewards, states = [], [], [], []
    success, done_at = False, None
    for t in range(env.max_episode_steps):
        for k, v in obs.items():
            frames[k].append(v)
        for k, v in _extras(env, info).items():
            extras.setdefault(k, []).append(v)
        states.append(env.get_state())
        action = expert.act()
        if env.action_mode == "joint_position":
            action = env.ee_to_joint_action(action)
        executed = action
        if noise is not None:
            executed = np.array(action, np.float64)
            executed[:-1] += noise.normal(0.0, 1.0, executed.shape[0] - 1) * noise_scale
            executed = np.clip(executed, space.low, space.high).astype(np.asarray(action).dtype)
        obs, reward, terminated, truncated, info = env.step(executed)
        actions.append(action)
        executed_actions.append(executed)
        rewards.append(reward)
        success = bool(info["is_success"])
        if success and done_at is None:
            done_at = t
        if truncated or (done_at is not None and t - done_at >= steps_after_success):
            break
        if terminated and done_at is None:
            break
    if noise is not None:
        extras["executed_actions"] = executed_actions
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
            "action_noise": float(action_noise),
        },
    )
    return episode, success


def record(
    task: str,
    episodes: int,
    out: str | Path,
    perturbation: str | None = None,
    seed: int = 0,
    image_size: int | None = None,
    cameras: Sequence[str] | None = None,
    action_mode: str = "ee_delta",
    **options: Any,
) -> dict[str, Any]:
    """Record ``episodes`` expert demos of a tabletop task or ``robosuite/<Env>`` to ``out``
    (``options``: those of :func:`record_with`). ``image_size`` and ``cameras`` default to the
    backend's: 96 px front + wrist (tabletop), robomimic's 84 px agentview + eye-in-hand."""
    if task.startswith("robosuite/"):
        from envs.robosuite.experts import default_env_args

        if action_mode != "ee_delta":
            raise StemobError(
                f"option action_mode: robosuite tasks act through robosuite's OSC controller "
                f"(ee_delta), got {action_mode!r}"
            )
        args = default_env_args(task[len("robosuite/") :])
        overrides: dict[str, Any] = {}
        if cameras:
            overrides["cameras"] = list(cameras)
        if image_size:
            overrides["image_size"] = image_size
        if perturbation:
            overrides["perturbation"] = perturbation
        return record_env_args(args, episodes, out, seed=seed, overrides=overrides, **options)
    from envs.tabletop.env import TabletopEnv

    env = TabletopEnv(
        task,
        perturbation=perturbation,
        image_size=image_size or 96,
        cameras=cameras or ("front", "wrist"),
        action_mode=action_mode,
        terminate_on_success=True,
    )
    return record_with(env, episodes, out, seed=seed, **options)


def record_env_args(
    env_args: Mapping[str, Any],
    episodes: int,
    out: str | Path,
    seed: int = 0,
    overrides: Mapping[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Record expert demos in the env of robomimic ``env_args`` (any backend with experts)."""
    env = make_env_from_args(dict(env_args), **{"terminate_on_success": True, **(overrides or {})})
    return record_with(env, episodes, out, seed=seed, **options)


def record_with(
    env: Any,
    episodes: int,
    out: str | Path,
    seed: int = 0,
    keep_failed: bool = False,
    max_attempts: int | None = None,
    valid_fraction: float = 0.1,
    next_obs: bool = True,
    progress: bool = True,
    steps_after_success: int = 0,
    action_noise: float = 0.0,
) -> dict[str, Any]:
    """Run ``env``'s expert until ``episodes`` demos are kept; write them atomically to ``out``
    (closes ``env``).

    ``steps_after_success`` extends every demo past the task's success (see :func:`run_episode`):
    chunked policies such as ACT then learn whole chunks instead of padded tails.
    ``action_noise`` executes noisy expert actions and records the clean ones (see
    :func:`run_episode`).
    """
    from tqdm import tqdm

    from stemob.data.robomimic import write_robomimic

    task = env.task_name
    try:
        if episodes < 1:
            raise StemobError(f"option episodes: expected >= 1, got {episodes}")
        if steps_after_success < 0:
            raise StemobError(
                f"option steps_after_success: expected >= 0, got {steps_after_success}"
            )
        if not action_noise >= 0:
            raise StemobError(f"option action_noise: expected >= 0, got {action_noise}")
        if not 0 <= valid_fraction < 1:
            raise StemobError(f"option valid_fraction: expected in [0, 1), got {valid_fraction}")
    except StemobError:
        env.close()
        raise
    max_attempts = max_attempts or 2 * episodes + 10
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
            episode, success = run_episode(env, seed + attempt, steps_after_success, action_noise)
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
    "seed": (int, 0), "image_size": (int, 0), "cameras": (str, ""),
    "action_mode": (str, "ee_delta"), "keep_failed": (bool, False), "max_attempts": (int, 0),
    "valid_fraction": (float, 0.1), "next_obs": (bool, True), "steps_after_success": (int, 0),
    "action_noise": (float, 0.0),
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
            image_size=a["image_size"] or None,
            cameras=tuple(c for c in a["cameras"].split(",") if c) or None,
            action_mode=a["action_mode"],
            keep_failed=a["keep_failed"],
            max_attempts=a["max_attempts"] or None,
            valid_fraction=a["valid_fraction"],
            next_obs=a["next_obs"],
            steps_after_success=a["steps_after_success"],
            action_noise=a["action_noise"],
        )
    except StemobError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"out": a["out"], **report}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
