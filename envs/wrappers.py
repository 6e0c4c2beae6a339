"""Gymnasium wrappers for evaluation: Stem-OB test-time inversion, multi-step chunks, videos.

* :class:`StemobObservation` inverts the camera images of every observation with a policy's stored
  Stem-OB settings. Frame ids are ``(episode, step, camera_key)`` with ``episode`` = the reset seed
  and ``step`` = env steps since reset, the ids :mod:`stemob.inversion.dataset_cache` uses for
  ``demo_<seed>``; so the wrapper reproduces a demo's cached frames exactly. With
  ``output="latent"`` the cameras become the float32 inverted latents ``(C, h, w)`` instead (for
  policies trained with ``dataset.stemob_latents``).
* :class:`VectorStemobObservation` does the same for a gymnasium vector env, inverting the frames
  of all sub-envs (and all cameras) in one ``Inverter.invert`` call.
* :class:`MultiStepWrapper` stacks the last ``n_obs_steps`` observations and executes action
  chunks (summed reward, last info, early stop at termination).
* :class:`VideoRecorder` writes mp4 files (imageio-ffmpeg) of one camera for the first k episodes;
  :func:`write_mp4` writes one clip atomically.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from stemob.errors import StemobError
from stemob.inversion.inverter import Inverter, invert_grouped
from stemob.inversion.settings import InversionSettings

ObsDict = dict[str, np.ndarray]


def camera_keys(space_or_obs: gym.spaces.Dict | Mapping[str, Any]) -> list[str]:
    """The ``*_image`` keys of a Dict observation space (or of an observation dict), in order."""
    keys = space_or_obs.spaces if isinstance(space_or_obs, gym.spaces.Dict) else space_or_obs
    return [k for k in keys if k.endswith("_image")]


def as_settings(settings: InversionSettings | Mapping[str, Any] | None) -> InversionSettings:
    """InversionSettings from a settings object or a checkpoint's ``policy.stemob`` dict."""
    if settings is None:
        return InversionSettings()
    if isinstance(settings, InversionSettings):
        return settings
    if isinstance(settings, Mapping):
        return InversionSettings.from_dict(dict(settings))
    raise StemobError(f"Stem-OB settings must be InversionSettings or a dict, got {settings!r}")


OUTPUTS = ("rgb", "latent")


def _inverted_space(
    space: gym.spaces.Dict, keys: Sequence[str], inverter: Inverter, output: str
) -> gym.spaces.Dict:
    """``space`` with the ``keys`` as the wrapper emits them: unchanged for ``rgb``; for ``latent``
    float32 boxes of the latent shape (found by inverting one black frame of each camera)."""
    if output not in OUTPUTS:
        raise StemobError(f"output must be one of {OUTPUTS}, got {output!r}")
    if output == "rgb":
        return space
    spaces = dict(space.spaces)
    for key in keys:
        blank = np.zeros(space[key].shape, np.uint8)
        shape = tuple(inverter.invert(blank[None], [(0, 0, key)], output="latent").shape[1:])
        spaces[key] = gym.spaces.Box(-np.inf, np.inf, shape, np.float32)
    return gym.spaces.Dict(spaces)


def make_inverter(
    settings: InversionSettings | Mapping[str, Any] | None = None,
    inverter: Inverter | None = None,
    device: str = "cpu",
) -> Inverter:
    """``inverter`` (checked against ``settings``) or a new Inverter with exactly ``settings``."""
    if inverter is None:
        return Inverter(as_settings(settings), device=device)
    if settings is not None and inverter.settings != as_settings(settings):
        raise StemobError(
            f"the given Inverter has settings {inverter.settings.to_dict()}, but "
            f"{as_settings(settings).to_dict()} were requested"
        )
    return inverter


def invert_observations(
    inverter: Inverter,
    observations: Sequence[Mapping[str, np.ndarray]],
    heads: Sequence[tuple[int, int]],
    keys: Sequence[str],
    output: str = "rgb",
) -> list[ObsDict]:
    """Invert the ``keys`` images of several observations; ``heads[i]`` = (episode, step) of obs i.

    All frames of one size go through one ``Inverter.invert`` call (one call in total when the
    cameras share a size); the other keys are passed through. ``output="latent"`` gives the
    float32 inverted latents ``(C, h, w)`` instead of images. Returns new dicts.
    """
    if len(observations) != len(heads):
        raise StemobError(f"got {len(heads)} frame heads for {len(observations)} observations")
    out = [dict(obs) for obs in observations]
    members: list[tuple[int, str]] = []
    for i, obs in enumerate(observations):
        for key in keys:
            if key not in obs:
                raise StemobError(f"observation lacks camera key {key!r} (has {sorted(obs)})")
            image = np.asarray(obs[key])
            if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
                raise StemobError(
                    f"camera {key!r} must be uint8 (H, W, 3), got {image.dtype} {image.shape}"
                )
            members.append((i, key))
    inverted = invert_grouped(
        inverter,
        [observations[i][k] for i, k in members],
        [(int(heads[i][0]), int(heads[i][1]), k) for i, k in members],
        [output] * len(members),
    )
    for (i, key), image in zip(members, inverted, strict=True):
        out[i][key] = image
    return out


class StemobObservation(gym.ObservationWrapper):
    """Inverts the camera images of every observation with exactly the given Stem-OB settings.

    Args:
        env: a Dict-observation env.
        settings: the settings (e.g. ``policy.stemob``); ignored when only ``inverter`` is given.
        keys: image keys to invert (default: every ``*_image`` key of the observation space).
        inverter: a prebuilt Inverter to share one model across wrappers.
        device: where a new Inverter runs.
        output: ``rgb`` (inverted images) or ``latent`` (float32 inverted latents ``(C, h, w)``;
            the observation space says their shape).

    Frame ids are ``(episode, step, key)``: ``episode`` is the reset seed (or
    ``reset(options={"episode": e})``; without either, the env's own ``reset_seed`` when it has
    one, else a counter) and ``step`` counts env steps since reset.
    """

    def __init__(
        self,
        env: gym.Env,
        settings: InversionSettings | Mapping[str, Any] | None = None,
        *,
        keys: Sequence[str] | None = None,
        inverter: Inverter | None = None,
        device: str = "cpu",
        output: str = "rgb",
    ) -> None:
        super().__init__(env)
        if not isinstance(env.observation_space, gym.spaces.Dict):
            raise StemobError("StemobObservation needs a Dict observation space")
        self.keys = list(keys) if keys is not None else camera_keys(env.observation_space)
        missing = [k for k in self.keys if k not in env.observation_space.spaces]
        if missing or not self.keys:
            raise StemobError(
                f"image keys {missing or self.keys} are not in the observation space "
                f"(has {sorted(env.observation_space.spaces)})"
            )
        self.inverter = make_inverter(settings, inverter, device)
        self.output = output
        self.observation_space = _inverted_space(
            env.observation_space, self.keys, self.inverter, output
        )
        self.episode = 0
        self.step_count = 0
        self._resets = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsDict, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        if options and "episode" in options:
            self.episode = int(options["episode"])
        elif seed is not None:
            self.episode = int(seed)
        else:
            self.episode = int(getattr(self.env.unwrapped, "reset_seed", self._resets))
        self._resets += 1
        self.step_count = 0
        return self.observation(obs), info

    def step(self, action: Any) -> tuple[ObsDict, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.step_count += 1
        return self.observation(obs), reward, terminated, truncated, info

    def observation(self, observation: ObsDict) -> ObsDict:
        """The observation with its camera images inverted (frame ids of the current step)."""
        return invert_observations(
            self.inverter, [observation], [(self.episode, self.step_count)], self.keys, self.output
        )[0]


class VectorStemobObservation(gym.vector.VectorObservationWrapper):
    """:class:`StemobObservation` for a vector env: one ``Inverter.invert`` call per step for the
    frames of all sub-envs; the same frame ids per sub-env as the single-env wrapper.

    ``reset(seed=s)`` seeds sub-env i with ``s + i`` (gymnasium's convention) or with ``s[i]``
    for a list. Autoreset modes ``NextStep`` (gymnasium's default) and ``Disabled`` (reset
    with ``options={"reset_mask": mask}``) are supported; after an autoreset the episode id is the
    sub-env's ``reset_seed`` when it has one, else a running counter.
    """

    def __init__(
        self,
        env: gym.vector.VectorEnv,
        settings: InversionSettings | Mapping[str, Any] | None = None,
        *,
        keys: Sequence[str] | None = None,
        inverter: Inverter | None = None,
        device: str = "cpu",
        output: str = "rgb",
    ) -> None:
        super().__init__(env)
        space = env.single_observation_space
        if not isinstance(space, gym.spaces.Dict):
            raise StemobError("VectorStemobObservation needs a Dict observation space")
        mode = env.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
        if str(getattr(mode, "value", mode)) == "SameStep":
            raise StemobError(
                "VectorStemobObservation supports autoreset_mode NextStep or Disabled, not SameStep"
            )
        self.keys = list(keys) if keys is not None else camera_keys(space)
        missing = [k for k in self.keys if k not in space.spaces]
        if missing or not self.keys:
            raise StemobError(f"image keys {missing or self.keys} are not in the observation space")
        self.inverter = make_inverter(settings, inverter, device)
        self.output = output
        self.single_observation_space = _inverted_space(space, self.keys, self.inverter, output)
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, env.num_envs
        )
        n = env.num_envs
        self.episodes = np.zeros(n, np.int64)
        self.steps = np.zeros(n, np.int64)
        self._done = np.zeros(n, bool)
        self._counter = 0

    def _reset_seeds(self, fallback: Sequence[int]) -> list[int]:
        try:
            seeds = self.env.get_attr("reset_seed")
            return [int(s) for s in seeds]
        except (AttributeError, NotImplementedError):
            return [int(s) for s in fallback]

    def _next_ids(self, count: int) -> list[int]:
        ids = list(range(self._counter, self._counter + count))
        self._counter += count
        return ids

    def reset(
        self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsDict, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        n = self.num_envs
        mask = np.ones(n, bool)
        if options and "reset_mask" in options:
            mask = np.asarray(options["reset_mask"], bool)
        if seed is None:
            seeds = self._reset_seeds(self._next_ids(n))
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(n)]
        else:
            seeds = [int(s) if s is not None else -1 for s in seed]
            if -1 in seeds:
                seeds = [
                    s if s != -1 else r
                    for s, r in zip(seeds, self._reset_seeds(self._next_ids(n)), strict=True)
                ]
        self.episodes[mask] = np.asarray(seeds)[mask]
        self.steps[mask] = 0
        self._done[mask] = False
        return self.observations(obs), info

    def step(self, actions: Any) -> tuple[ObsDict, Any, Any, Any, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        restarted = self._done.copy()
        self.steps += 1
        if restarted.any():  # NextStep autoreset: these sub-envs now show their reset obs
            seeds = self._reset_seeds(self._next_ids(self.num_envs))
            self.episodes[restarted] = np.asarray(seeds)[restarted]
            self.steps[restarted] = 0
        self._done = np.asarray(terminated, bool) | np.asarray(truncated, bool)
        return self.observations(obs), reward, terminated, truncated, info

    def observations(self, observations: ObsDict) -> ObsDict:
        """The batched observation dict with every sub-env's camera images inverted."""
        n = self.num_envs
        per_env = [{k: observations[k][i] for k in self.keys} for i in range(n)]
        heads = [(int(self.episodes[i]), int(self.steps[i])) for i in range(n)]
        inverted = invert_observations(self.inverter, per_env, heads, self.keys, self.output)
        out = dict(observations)
        for key in self.keys:
            out[key] = np.stack([obs[key] for obs in inverted])
        return out


class MultiStepWrapper(gym.Wrapper):
    """Stacks observations and executes action chunks.

    Observations become ``{key: (n_obs_steps, ...)}``: the last ``n_obs_steps`` observations,
    oldest first, the first one repeated at the episode start. ``step(chunk)`` takes a chunk
    ``(k, A)`` (or one action ``(A,)``), executes its first ``n_action_steps`` actions (all of
    them when ``n_action_steps`` is None) and stops early at termination, truncation or
    ``max_episode_steps``; it returns the summed reward, the termination flags and the last info
    (with ``info["executed_steps"]``, the actions actually run).
    """

    def __init__(
        self,
        env: gym.Env,
        n_obs_steps: int,
        n_action_steps: int | None = None,
        max_episode_steps: int | None = None,
    ) -> None:
        super().__init__(env)
        if n_obs_steps < 1:
            raise StemobError(f"n_obs_steps must be >= 1, got {n_obs_steps}")
        if n_action_steps is not None and n_action_steps < 1:
            raise StemobError(f"n_action_steps must be >= 1 or None, got {n_action_steps}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise StemobError(f"max_episode_steps must be >= 1 or None, got {max_episode_steps}")
        if not isinstance(env.observation_space, gym.spaces.Dict):
            raise StemobError("MultiStepWrapper needs a Dict observation space")
        self.n_obs_steps = n_obs_steps
        self.n_action_steps = n_action_steps
        self.max_episode_steps = max_episode_steps
        self.observation_space = gym.spaces.Dict(
            {k: _stack_space(s, n_obs_steps) for k, s in env.observation_space.spaces.items()}
        )
        self._history: collections.deque[ObsDict] = collections.deque(maxlen=n_obs_steps)
        self.elapsed_steps = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsDict, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._history.clear()
        self._history.extend([obs] * self.n_obs_steps)
        self.elapsed_steps = 0
        return self._stacked(), info

    def step(self, action: Any) -> tuple[ObsDict, float, bool, bool, dict[str, Any]]:
        if not self._history:
            raise StemobError("MultiStepWrapper.step called before reset")
        chunk = np.asarray(action)
        if chunk.ndim == 1:
            chunk = chunk[None]
        if chunk.ndim != 2 or len(chunk) == 0:
            raise StemobError(f"action chunk must be (k, A) or (A,), got shape {chunk.shape}")
        if self.n_action_steps is not None:
            chunk = chunk[: self.n_action_steps]
        total, terminated, truncated, info, executed = 0.0, False, False, {}, 0
        for act in chunk:
            obs, reward, terminated, truncated, info = self.env.step(act)
            self._history.append(obs)
            total += float(reward)
            executed += 1
            self.elapsed_steps += 1
            if self.max_episode_steps is not None and self.elapsed_steps >= self.max_episode_steps:
                truncated = True
            if terminated or truncated:
                break
        info = dict(info)
        info["executed_steps"] = executed
        return self._stacked(), total, bool(terminated), bool(truncated), info

    def _stacked(self) -> ObsDict:
        return {k: np.stack([o[k] for o in self._history]) for k in self._history[0]}


def _stack_space(space: gym.Space, n: int) -> gym.Space:
    if isinstance(space, gym.spaces.Box):
        low = np.repeat(space.low[None], n, 0)
        high = np.repeat(space.high[None], n, 0)
        return gym.spaces.Box(low, high, dtype=space.dtype)
    raise StemobError(f"MultiStepWrapper can stack Box spaces only, got {space}")


# ---------------------------------------------------------------------- videos
def write_mp4(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: int = 20) -> Path:
    """Write uint8 (H, W, 3) frames to an mp4 (H.264 via imageio-ffmpeg), atomically.

    Odd frame sizes are padded by one edge row/column (H.264 needs even sizes).
    """
    import imageio.v2 as imageio

    path = Path(path)
    if not frames:
        raise StemobError(f"no frames to write to {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix or '.mp4'}")
    with imageio.get_writer(
        tmp, fps=fps, codec="libx264", macro_block_size=1, ffmpeg_log_level="error"
    ) as writer:
        for frame in frames:
            image = np.asarray(frame)
            if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
                raise StemobError(
                    f"video frames must be uint8 (H, W, 3), got {image.dtype} {image.shape}"
                )
            pad_h, pad_w = image.shape[0] % 2, image.shape[1] % 2
            if pad_h or pad_w:
                image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            writer.append_data(image)
    os.replace(tmp, path)
    return path


class VideoRecorder(gym.Wrapper):
    """Records camera ``key`` of the first ``episodes`` episodes to ``folder/<prefix>_<n>.mp4``.

    Wrap it directly around the env (raw frames) or around :class:`StemobObservation`
    (inverted frames), inside :class:`MultiStepWrapper` so that every env step is a frame.

    A clip is written when its episode ends (termination or truncation), at the next reset, or
    at ``close``; ``paths`` lists the files written.
    """

    def __init__(
        self,
        env: gym.Env,
        folder: str | os.PathLike,
        key: str | None = None,
        episodes: int = 2,
        fps: int | None = None,
        prefix: str = "episode",
    ) -> None:
        super().__init__(env)
        space = env.observation_space
        if isinstance(space, gym.spaces.Dict):
            keys = camera_keys(space)
            key = key or (keys[0] if keys else None)
            if key not in space.spaces:
                raise StemobError(f"video key {key!r} is not an observation key ({sorted(space)})")
            if len(space[key].shape) != 3:
                raise StemobError(
                    f"video key {key!r} has shape {space[key].shape}, expected (H, W, 3) frames: "
                    "wrap VideoRecorder inside MultiStepWrapper, not around it"
                )
        self.folder = Path(folder)
        self.key = key
        self.max_episodes = episodes
        self.fps = int(fps or env.metadata.get("render_fps", 20))
        self.prefix = prefix
        self.paths: list[Path] = []
        self._frames: list[np.ndarray] = []
        self._episode = -1

    def _frame(self, obs: Any) -> np.ndarray:
        return np.asarray(obs[self.key] if self.key is not None else obs)

    def _flush(self) -> None:
        if self._frames and 0 <= self._episode < self.max_episodes:
            path = self.folder / f"{self.prefix}_{self._episode:03d}.mp4"
            self.paths.append(write_mp4(path, self._frames, self.fps))
        self._frames = []

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self._flush()
        obs, info = self.env.reset(**kwargs)
        self._episode += 1
        if self._episode < self.max_episodes:
            self._frames = [self._frame(obs)]
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self._episode < self.max_episodes and self._frames:
            self._frames.append(self._frame(obs))
            if terminated or truncated:
                self._flush()
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        self._flush()
        super().close()
