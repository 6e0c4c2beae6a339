"""Rollouts of a policy in the tabletop suite: lockstep batches of envs, batched policy calls,
test-time Stem-OB inversion, per-episode error capture and videos."""

from __future__ import annotations

import contextlib
import time
import traceback
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stemob.deploy import (
    ObservationHistory,
    check_test_draws,
    draw_episodes,
    invert_pending,
    mean_over_draws,
    next_actions,
    policy_cameras,
    to_batch,
)
from stemob.errors import StemobError
from stemob.evaluation.results import EpisodeRecord, FactorResult

EnvFactory = Callable[[Mapping[str, Any], Any], Any]
"""``(env_args, perturbation) -> env``; the default builds with ``envs.record.make_env_from_args``."""


def default_env_factory(env_args: Mapping[str, Any], perturbation: Any) -> Any:
    """The env of ``env_args``; ``perturbation`` (a YAML path or dict) replaces its own when given."""
    from envs.record import make_env_from_args

    overrides = {} if perturbation is None else {"perturbation": perturbation}
    return make_env_from_args(dict(env_args), **overrides)


@dataclass
class _Slot:
    """One sub-env's episode in a lockstep batch."""

    record: EpisodeRecord
    histories: list[ObservationHistory]  # one per test-time noise draw (one without test_draws)
    done: bool = False
    frames: list[np.ndarray] = field(default_factory=list)
    windows: list[dict[str, np.ndarray]] | None = None


def _message(error: BaseException) -> str:
    last = traceback.extract_tb(error.__traceback__)[-1:] if error.__traceback__ else []
    where = f" (at {last[0].filename}:{last[0].lineno})" if last else ""
    return f"{type(error).__name__}: {error}{where}"


def policy_device(policy: Any) -> torch.device:
    """The device of the policy's parameters (CPU for a policy without any)."""
    parameter = next(iter(policy.parameters()), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def episode_limit(env: Any) -> int:
    """The env's steps per episode (:func:`envs.options.max_episode_steps`); an error naming
    ``max_steps`` when the env does not tell."""
    from envs.options import max_episode_steps

    steps = max_episode_steps(env)
    if steps is None:
        name = type(getattr(env, "unwrapped", env)).__name__
        raise StemobError(f"cannot tell the episode length of {name}: pass max_steps")
    return steps


def _check_env(env: Any, policy: Any) -> None:
    """The env's observation space must hold the policy's keys with the policy's shapes."""
    space = env.observation_space.spaces
    cfg = policy.config
    for key, shape in cfg.obs_shapes.items():
        if key not in space:
            raise StemobError(
                f"the env has no observation {key!r} that the policy needs (has {sorted(space)})"
            )
        got = tuple(space[key].shape)
        want = (shape[1], shape[2], shape[0]) if key in cfg.image_keys else tuple(shape)
        if key in cfg.latent_keys:  # a camera of any size: the policy sees its inverted latent
            want = (*got[:2], 3) if len(got) == 3 else ("H", "W", 3)
        if got != want:
            raise StemobError(f"env observation {key!r} has shape {got}, the policy expects {want}")


def video_frame(obs: Mapping[str, Any], key: str) -> np.ndarray:
    """The video frame of ``key``; a GENIMA target (``<cam>_target``) is shown beside its camera
    image (observation | drawn target)."""
    frame = np.asarray(obs[key])
    raw = key[: -len("_target")] + "_image" if key.endswith("_target") else None
    if raw in obs and np.asarray(obs[raw]).shape == frame.shape:
        return np.concatenate([np.asarray(obs[raw]), frame], axis=1)
    return frame.copy()


def evaluate(
    policy: Any,
    env_args: Mapping[str, Any] | None = None,
    perturbation: str | Path | Mapping[str, Any] | None = None,
    episodes: int = 50,
    *,
    base_seed: int = 100000,
    n_envs: int = 1,
    video_dir: str | Path | None = None,
    videos: int = 2,
    video_key: str | None = None,
    progress: bool = True,
    max_steps: int | None = None,
    name: str = "eval",
    inverter: Any = None,
    inversion_device: str | None = None,
    env_factory: EnvFactory | None = None,
    policy_kwargs: Mapping[str, Any] | None = None,
    blind: bool = False,
    env_processes: bool | None = None,
    shard: tuple[int, int] | None = None,
    test_draws: int = 1,
) -> FactorResult:
    """Run ``episodes`` episodes of ``policy`` and return their outcomes.

    Args:
        policy: a :class:`policies.base.Policy` (any object with its interface).
        env_args: robomimic ``{env_name, type, env_kwargs}`` (default: ``policy.env_args``).
        perturbation: a perturbation YAML path or dict that replaces the env's own; ``None`` keeps
            the env of ``env_args`` as it is (the training setting).
        episodes: how many episodes; episode ``i`` uses ``reset(seed=base_seed + i)``.
        n_envs: envs run in lockstep; the policy is called once per step for the whole batch
            (``policy.reset()`` at each batch start; finished envs are masked until it ends).
        video_dir: write mp4s of the first ``videos`` episodes there (camera ``video_key``,
            default the policy's first camera; raw frames, before inversion; GENIMA's targets
            beside their camera images).
        max_steps: steps per episode (default: :func:`episode_limit`, the task's own).
        name: the setting's name in the result (and in video file names).
        inverter: a prebuilt Inverter for the policy's Stem-OB settings (shares one model).
        env_factory: ``(env_args, perturbation) -> env`` (default: ``make_env_from_args``).
        policy_kwargs: extra keyword arguments of the policy's prediction calls.
        blind: feed the policy all-zero camera images (the check that a task needs vision).
        env_processes: run each env in its own process (:class:`envs.subprocess_env.
            SubprocessEnv`; the factory must then be picklable) and step them in parallel;
            ``None``: only for backends that allow one simulator per process (RLBench).
        shard: ``(rank, world)``: run only the lockstep batches ``b`` with ``b % world == rank``
            (the batches and their seeds are those of the whole run, so the ranks' records
            together are exactly a single process's; :func:`run_benchmark` merges them).
        test_draws: Stem-OB's test-time ensemble: each frame inverted with this many noise draws
            (draw m as episode ``seed + m * DRAW_STRIDE``), the policy run on every draw and its
            actions averaged (``stemob.deploy.mean_over_draws``); 1: one draw, as the reference.

    When ``policy.stemob`` is set, every camera image is inverted with exactly those settings,
    frame ids ``(seed, step, camera_key)`` (those of the dataset cache for ``demo_<seed>``).
    A policy with an active temporal ensembler (ACT) is called through ``select_action`` at every
    step, any other through ``predict_action`` once per chunk. An episode that raises is recorded
    with its error message; the others go on. Torch's global RNG is seeded at each batch start
    with the batch's first seed (reproducible sampling policies).
    """
    from tqdm import tqdm

    if not isinstance(episodes, int) or episodes < 1:
        raise StemobError(f"episodes must be a positive integer, got {episodes!r}")
    if not isinstance(n_envs, int) or n_envs < 1:
        raise StemobError(f"n_envs must be a positive integer, got {n_envs!r}")
    if max_steps is not None and max_steps < 1:
        raise StemobError(f"max_steps must be >= 1, got {max_steps}")
    env_args = env_args if env_args is not None else getattr(policy, "env_args", None)
    if env_args is None:
        raise StemobError("no env_args: pass env_args, or use a policy checkpoint that stores them")
    cfg = policy.config
    image_keys, latent_keys = policy_cameras(policy)
    keys = [*image_keys, *latent_keys, *cfg.lowdim_keys]
    if getattr(policy, "stemob", None) is not None:
        from envs.wrappers import make_inverter

        device = inversion_device or str(policy_device(policy))
        inverter = make_inverter(policy.stemob, inverter, device)
    else:
        inverter = None
    test_draws = check_test_draws(test_draws, getattr(policy, "stemob", None))
    starts = list(range(0, episodes, n_envs))
    if shard is not None:
        rank, world = shard
        if not 0 <= rank < world:
            raise StemobError(f"shard {shard}: expected (rank, world) with 0 <= rank < world")
        starts = [s for b, s in enumerate(starts) if b % world == rank]
    if not starts:
        return FactorResult(name, [], _perturbation_label(perturbation), 0.0)
    factory = env_factory or default_env_factory
    if env_processes is None:
        from envs.record import needs_own_process

        env_processes = needs_own_process(env_args)

    def build() -> Any:
        if not env_processes:
            return factory(env_args, perturbation)
        from envs.subprocess_env import SubprocessEnv

        return SubprocessEnv(factory, dict(env_args), perturbation)

    envs: list[Any] = []
    try:
        for _ in range(min(n_envs, episodes)):
            envs.append(build())
        _check_env(envs[0], policy)
        if max_steps is None:
            max_steps = episode_limit(envs[0])
    except BaseException:
        for env in envs:
            with contextlib.suppress(Exception):
                env.close()
        raise
    cameras = [*image_keys, *latent_keys]
    video_key = video_key or (cameras[0] if cameras else None)
    fps = int(getattr(envs[0], "metadata", {}).get("render_fps", 20))
    records: list[EpisodeRecord] = []
    device = policy_device(policy)
    started = time.perf_counter()
    total = sum(min(n_envs, episodes - s) for s in starts)
    bar = tqdm(total=total, desc=f"eval {name}", unit="ep", disable=not progress, leave=False)
    was_training = policy.training
    policy.eval()
    try:
        with torch.inference_mode():
            for start in starts:
                count = min(n_envs, episodes - start)
                slots = [
                    _Slot(
                        EpisodeRecord(index=start + j, seed=base_seed + start + j),
                        [ObservationHistory(cfg.n_obs_steps, keys) for _ in range(test_draws)],
                    )
                    for j in range(count)
                ]
                _run_batch(
                    policy,
                    envs,
                    slots,
                    inverter=inverter,
                    image_keys=image_keys,
                    latent_keys=latent_keys,
                    max_steps=max_steps,
                    device=device,
                    record_video=video_dir is not None,
                    videos=videos,
                    video_key=video_key,
                    rebuild=build,
                    policy_kwargs=dict(policy_kwargs or {}),
                    blind=blind,
                )
                for slot in slots:
                    if video_dir is not None and slot.frames:
                        record = slot.record
                        path = (
                            Path(video_dir) / f"{name}_ep{record.index:03d}_seed{record.seed}.mp4"
                        )
                        try:
                            from envs.wrappers import write_mp4

                            record.video = str(write_mp4(path, slot.frames, fps))
                        except Exception as error:  # a video must never cost the benchmark
                            warnings.warn(f"could not write {path}: {error}", stacklevel=2)
                    records.append(slot.record)
                bar.update(count)
                done = [r for r in records if r.error is None]
                bar.set_postfix(success=f"{sum(r.success for r in done)}/{len(done)}")
    finally:
        bar.close()
        policy.train(was_training)
        for env in envs:  # closing a broken env must not hide the results
            with contextlib.suppress(Exception):
                env.close()
    return FactorResult(
        name, records, _perturbation_label(perturbation), time.perf_counter() - started
    )


def _perturbation_label(perturbation: Any) -> str | None:
    """How a result names its perturbation: the file, ``<dict>`` or None (the env's own)."""
    if isinstance(perturbation, Mapping):
        return "<dict>"
    return str(perturbation) if isinstance(perturbation, (str, Path)) else None


def _run_batch(
    policy: Any,
    envs: list[Any],
    slots: list[_Slot],
    *,
    inverter: Any,
    image_keys: list[str],
    latent_keys: list[str],
    max_steps: int,
    device: torch.device,
    record_video: bool,
    videos: int,
    video_key: str | None,
    rebuild: Callable[[], Any],
    policy_kwargs: dict[str, Any],
    blind: bool = False,
) -> None:
    """Run one lockstep batch: ``slots[j]`` on ``envs[j]`` (replaced by ``rebuild()`` on error)."""
    policy.reset()
    torch.manual_seed(slots[0].record.seed)

    def fail(j: int, error: BaseException, env_broken: bool) -> None:
        slots[j].record.error = _message(error)
        slots[j].done = True
        if env_broken:
            with contextlib.suppress(Exception):
                envs[j].close()
            envs[j] = rebuild()

    def observe(j: int, obs: Mapping[str, Any], info: Mapping[str, Any]) -> None:
        slot = slots[j]
        for history in slot.histories:
            history.push(obs, step=slot.record.length)
        if bool(info.get("is_success", False)):
            slot.record.success = True
        if record_video and slot.record.index < videos and video_key is not None:
            slot.frames.append(video_frame(obs, video_key))

    from envs.subprocess_env import parallel_calls

    resets = [(j, "reset", (), {"seed": slot.record.seed}) for j, slot in enumerate(slots)]
    for j, (ok, answer) in sorted(parallel_calls(envs, resets).items()):
        if ok:
            observe(j, *answer)
        else:
            fail(j, answer, env_broken=True)

    while True:
        active = [j for j, s in enumerate(slots) if not s.done]
        if not active:
            return
        try:
            draws = len(slots[0].histories)
            if inverter is not None:
                invert_pending(
                    inverter,
                    [h for j in active for h in slots[j].histories],
                    draw_episodes([slots[j].record.seed for j in active], draws),
                    image_keys,
                    latent_keys,
                )
            for j in active:
                slots[j].windows = [h.window() for h in slots[j].histories]
            fallback = slots[active[0]].windows
            # finished envs keep their last window (their actions are ignored), so the batch
            # size, and with it a temporal ensembler's state, stays fixed until the batch ends
            windows = [w for s in slots for w in (s.windows or fallback)]
            batch = to_batch(windows, image_keys, device)
            if blind:
                cameras = {*image_keys, *latent_keys}
                batch = {k: v.zero_() if k in cameras else v for k, v in batch.items()}
            actions = mean_over_draws(next_actions(policy, batch, **policy_kwargs), draws)
            actions = actions.float().cpu().numpy()
        except Exception as error:
            for j in active:
                fail(j, error, env_broken=False)
            return
        for k in range(actions.shape[1]):
            stepping = [j for j in active if not slots[j].done]
            calls = [(j, "step", (actions[j, k],), {}) for j in stepping]
            for j, (ok, answer) in sorted(parallel_calls(envs, calls).items()):
                slot = slots[j]
                if not ok:
                    fail(j, answer, env_broken=True)
                    continue
                obs, reward, terminated, truncated, info = answer
                slot.record.length += 1
                slot.record.reward += float(reward)
                observe(j, obs, info)
                if terminated or truncated or slot.record.length >= max_steps:
                    slot.done = True
            if all(slots[j].done for j in active):
                break
