"""Running a trained policy outside gymnasium (a real robot), and the observation bookkeeping
that the simulation runner (:mod:`stemob.evaluation.rollout`) shares with it.

    runner = PolicyRunner.from_checkpoint("runs/lift/checkpoints/last", device="cpu")
    runner.reset()
    while True:
        chunk = runner.act(images={"front_image": rgb}, state={"joint_positions": q, ...})
        for action in chunk:          # (n_action_steps, A); ACT with temporal ensembling: (1, A)
            robot.apply(action)
            ...                       # between planning calls, feed the frames you see:
            # runner.observe(images=..., state=...)  (keeps the history consecutive)

The runner keeps the observation history (the last ``n_obs_steps`` frames, the first repeated
at the start), applies the checkpoint's Stem-OB settings to every camera (frame ids
``(episode, step, camera_key)``, all cameras of a step in one ``Inverter.invert`` call) and the
policy's own normalisation, and times each call (``runner.latency``).

Shared pieces (one implementation for the simulated and the real loop): :class:`ObservationHistory`
(history and lazy inversion state of one episode), :func:`invert_pending` (inverts the frames that
the next windows need, across episodes, in one call per frame size), :func:`to_batch` (windows into
the batch contract) and :func:`next_actions` (chunk or temporally ensembled action).
"""

from __future__ import annotations

import collections
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from stemob.errors import StemobError
from stemob.inversion.inverter import invert_grouped

# ---------------------------------------------------------------------- shared bookkeeping


@dataclass
class Frame:
    """One observation of an episode: its env step, its arrays, and whether it was inverted."""

    step: int
    obs: dict[str, np.ndarray]
    inverted: bool = False


class ObservationHistory:
    """The last ``n_obs_steps`` observations of one episode (oldest first).

    :meth:`window` repeats the first observation while fewer than ``n_obs_steps`` were pushed.
    Frames are stored as pushed; :func:`invert_pending` replaces the camera images of the frames
    in the current window once (lazily: frames that drop out of the window before the next
    planning call are never inverted).
    """

    def __init__(self, n_obs_steps: int, keys: Sequence[str]) -> None:
        if n_obs_steps < 1:
            raise StemobError(f"n_obs_steps must be >= 1, got {n_obs_steps}")
        self.n_obs_steps = n_obs_steps
        self.keys = list(keys)
        self.frames: collections.deque[Frame] = collections.deque(maxlen=n_obs_steps)
        self.count = 0

    def reset(self) -> None:
        """Forget every frame (new episode)."""
        self.frames.clear()
        self.count = 0

    def push(self, obs: Mapping[str, Any], step: int | None = None) -> Frame:
        """Add an observation (``step`` defaults to the number pushed since reset)."""
        missing = [k for k in self.keys if k not in obs]
        if missing:
            raise StemobError(f"observation lacks {missing} (has {sorted(obs)})")
        frame = Frame(
            self.count if step is None else int(step), {k: np.asarray(obs[k]) for k in self.keys}
        )
        self.frames.append(frame)
        self.count += 1
        return frame

    def pending(self) -> list[Frame]:
        """Frames of the current window whose images are not inverted yet."""
        return [f for f in self.frames if not f.inverted]

    def window(self) -> dict[str, np.ndarray]:
        """``{key: (n_obs_steps, ...)}``: the last frames, the first repeated at the start."""
        if not self.frames:
            raise StemobError("the observation history is empty: push an observation first")
        frames = list(self.frames)
        frames = [frames[0]] * (self.n_obs_steps - len(frames)) + frames
        return {k: np.stack([f.obs[k] for f in frames]) for k in self.keys}


def policy_cameras(policy: Any) -> tuple[list[str], list[str]]:
    """The policy's cameras: ``(image_keys, latent_keys)``, the second fed as inverted latents
    (which needs the policy's stored Stem-OB settings)."""
    cfg = policy.config
    if cfg.latent_keys and getattr(policy, "stemob", None) is None:
        raise StemobError(
            f"the policy reads Stem-OB latents {cfg.latent_keys} but stores no Stem-OB settings"
        )
    return list(cfg.image_keys), list(cfg.latent_keys)


def invert_pending(
    inverter: Any,
    histories: Sequence[ObservationHistory],
    episodes: Sequence[int],
    image_keys: Sequence[str],
    latent_keys: Sequence[str] = (),
) -> int:
    """Invert the not-yet-inverted frames in the windows of ``histories``, in place.

    Frame ids are ``(episodes[i], frame.step, key)``; all frames of one size go through one
    ``inverter.invert`` call. ``image_keys`` become inverted images, ``latent_keys`` the float32
    inverted latents ``(C, h, w)``. Returns the number of images inverted.
    """
    todo = [
        (frame, int(episode))
        for h, episode in zip(histories, episodes, strict=True)
        for frame in h.pending()
    ]
    members = [
        (frame, key, episode) for frame, episode in todo for key in [*image_keys, *latent_keys]
    ]
    inverted = invert_grouped(
        inverter,
        [frame.obs[key] for frame, key, _ in members],
        [(episode, frame.step, key) for frame, key, episode in members],
        ["latent" if key in latent_keys else "rgb" for _, key, _ in members],
    )
    for (frame, key, _), image in zip(members, inverted, strict=True):
        frame.obs[key] = image
    for frame, _ in todo:
        frame.inverted = True
    return len(members)


DRAW_STRIDE = 1_000_000_000
"""Test-time noise draw ``m`` of episode ``e`` inverts its frames as episode ``e + m * DRAW_STRIDE``
(draw 0 is the episode itself), so each draw has its own per-frame noise."""


def draw_episodes(episodes: Sequence[int], draws: int) -> list[int]:
    """Frame-id episodes of ``draws`` test-time noise draws per episode, episode-major
    (``e0 m0, e0 m1, ..., e1 m0, ...``), the order :func:`mean_over_draws` expects."""
    return [int(e) + m * DRAW_STRIDE for e in episodes for m in range(draws)]


def mean_over_draws(actions: torch.Tensor, draws: int) -> torch.Tensor:
    """``(B * draws, k, A)`` actions, episode-major, to ``(B, k, A)``: each episode's actions
    averaged over its noise draws (Stem-OB's test-time ensemble, ``test_draws``)."""
    if draws == 1:
        return actions
    return actions.reshape(-1, draws, *actions.shape[1:]).mean(1)


def positive_draws(draws: Any) -> int:
    """``test_draws`` as a positive integer, or one clear error."""
    if not isinstance(draws, int) or isinstance(draws, bool) or draws < 1:
        raise StemobError(f"test_draws must be a positive integer, got {draws!r}")
    return draws


def draws_refusal(stemob: Any) -> str | None:
    """Why a policy with Stem-OB settings ``stemob`` (a dict, settings or ``None``) cannot take
    more than one test-time noise draw, or None when it can."""
    from stemob.inversion.settings import InversionSettings

    if stemob is None:
        return "the policy has no Stem-OB settings (stemob: null)"
    settings = (
        stemob if isinstance(stemob, InversionSettings) else InversionSettings.from_dict(stemob)
    )
    if not settings.noisy:
        return (f"the policy's {settings.mode} inversion with k = {settings.inversion_steps} draws "
                "no noise (every draw is the same)")  # fmt: skip
    return None


def check_test_draws(draws: Any, stemob: Any) -> int:
    """:func:`positive_draws` for a policy with Stem-OB settings ``stemob``: more than one draw
    needs an inversion that draws noise (:func:`draws_refusal`)."""
    draws = positive_draws(draws)
    reason = draws_refusal(stemob) if draws > 1 else None
    if reason:
        raise StemobError(f"test_draws > 1 averages over Stem-OB noise draws: {reason}")
    return draws


def to_batch(
    windows: Sequence[Mapping[str, np.ndarray]],
    image_keys: Sequence[str],
    device: str | torch.device = "cpu",
) -> dict[str, torch.Tensor]:
    """Stack windows ``{key: (T, ...)}`` into the batch contract: uint8 ``(B, T, 3, H, W)``
    images (from ``(T, H, W, 3)``), float32 ``(B, T, D)`` low-dim keys and ``(B, T, C, h, w)``
    latents."""
    if not windows:
        raise StemobError("to_batch needs at least one window")
    out: dict[str, torch.Tensor] = {}
    for key in windows[0]:
        stacked = np.stack([w[key] for w in windows])
        if key in image_keys:
            tensor = torch.from_numpy(np.ascontiguousarray(stacked.transpose(0, 1, 4, 2, 3)))
        else:
            tensor = torch.from_numpy(stacked.astype(np.float32, copy=False))
        out[key] = tensor.to(device)
    return out


def uses_temporal_ensembling(policy: Any) -> bool:
    """Whether the policy averages overlapping chunks itself (ACT): call it every step."""
    return getattr(policy, "ensembler", None) is not None


def next_actions(policy: Any, batch: Mapping[str, torch.Tensor], **kwargs: Any) -> torch.Tensor:
    """The actions to execute next, ``(B, k, A)``: the chunk of ``predict_action``
    (k = ``n_action_steps``), or one temporally ensembled action of ``select_action`` (k = 1)."""
    if uses_temporal_ensembling(policy):
        return policy.select_action(batch, **kwargs)[:, None]
    return policy.predict_action(batch, **kwargs)


# ---------------------------------------------------------------------- the deploy API


class LatencyStats:
    """Per-call latencies (ms) of the inversion, GENIMA's drawing, the policy and their total
    (last ``window`` calls)."""

    PARTS = ("inversion", "drawing", "policy", "total")

    def __init__(self, window: int = 1000) -> None:
        self.calls: collections.deque[tuple[float, ...]] = collections.deque(maxlen=window)

    def add(self, inversion_ms: float, policy_ms: float, drawing_ms: float = 0.0) -> None:
        self.calls.append(
            (inversion_ms, drawing_ms, policy_ms, inversion_ms + drawing_ms + policy_ms)
        )

    def summary(self) -> dict[str, float]:
        """``{last,median}_{inversion,drawing,policy,total}_ms`` (zeros before the first call)."""
        out: dict[str, float] = {}
        for i, part in enumerate(self.PARTS):
            values = [c[i] for c in self.calls]
            out[f"last_{part}_ms"] = values[-1] if values else 0.0
            out[f"median_{part}_ms"] = statistics.median(values) if values else 0.0
        out["calls"] = float(len(self.calls))
        return out


class PolicyRunner:
    """A policy checkpoint as a plain ``act(images, state) -> actions`` loop.

    Args:
        policy: a loaded :class:`policies.base.Policy` (its ``stemob`` settings are applied).
        inverter: a prebuilt Inverter (default: one built from ``policy.stemob``, if any).
        inversion_device: where a new Inverter runs (default: the policy's device).
        policy_kwargs: extra keyword arguments of the policy's prediction call.
        painter: GENIMA's diffusion agent (:class:`stemob.genima.agent.TargetPainter`): each
            :meth:`act` draws the ``<cam>_target`` images the controller reads on the cameras'
            ``<cam>_image`` frames; :meth:`observe` keeps the last drawing. ``from_checkpoint``
            loads it from a GENIMA run (``train.py policy=genima``) by itself.
        test_draws: Stem-OB's test-time ensemble, as eval.py's ``test_draws``: each frame inverted
            with this many noise draws, the policy run on each, its actions averaged.

    ``act`` returns ``(n_action_steps, A)`` (execute all, feeding intermediate frames with
    :meth:`observe`, then call ``act`` again), or ``(1, A)`` when the policy ensembles chunks
    itself (ACT's temporal ensembling: call ``act`` at every control step).
    """

    def __init__(
        self,
        policy: Any,
        *,
        inverter: Any = None,
        inversion_device: str | torch.device | None = None,
        policy_kwargs: Mapping[str, Any] | None = None,
        painter: Any = None,
        test_draws: int = 1,
    ) -> None:
        self.policy = policy.eval()
        self.painter = painter
        self._targets: dict[str, np.ndarray] = {}
        self._drawings = 0
        cfg = policy.config
        # latent keys: cameras the policy sees as inverted latents
        self.image_keys, self.latent_keys = policy_cameras(policy)
        self.state_keys = list(cfg.lowdim_keys)
        parameter = next(iter(policy.parameters()), None)
        self.device = parameter.device if parameter is not None else torch.device("cpu")
        self.inverter = inverter
        if self.inverter is None and policy.stemob is not None:
            from stemob.inversion.inverter import Inverter
            from stemob.inversion.settings import InversionSettings

            self.inverter = Inverter(
                InversionSettings.from_dict(policy.stemob),
                device=inversion_device or self.device,
            )
        self.policy_kwargs = dict(policy_kwargs or {})
        self.test_draws = check_test_draws(test_draws, policy.stemob)
        self.histories = [
            ObservationHistory(
                cfg.n_obs_steps, [*self.image_keys, *self.latent_keys, *self.state_keys]
            )
            for _ in range(self.test_draws)
        ]
        self.stats = LatencyStats()
        self.episode = 0

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        device: str | torch.device = "cpu",
        inversion_device: str | torch.device | None = None,
        **kwargs: Any,
    ) -> PolicyRunner:
        """Load a policy checkpoint (a policy folder, a checkpoint step folder or a training run
        directory, as eval.py accepts) and wrap it."""
        from policies import load_policy
        from stemob.genima.agent import TargetPainter, run_drawer

        drawer = run_drawer(path)
        if drawer is not None and "painter" not in kwargs:
            kwargs["painter"] = TargetPainter.load(drawer)
        return cls(load_policy(path, device), inversion_device=inversion_device, **kwargs)

    @property
    def actions_per_call(self) -> int:
        """Rows of the array that :meth:`act` returns."""
        return 1 if uses_temporal_ensembling(self.policy) else self.policy.config.n_action_steps

    def reset(self, episode: int = 0) -> None:
        """Start an episode: clear the history and the policy's queues; ``episode`` seeds the
        Stem-OB noise of its frames (with the step counter and the camera key)."""
        self.policy.reset()
        for history in self.histories:
            history.reset()
        self.episode = int(episode)
        self._targets, self._drawings = {}, 0

    def _push(self, obs: Mapping[str, np.ndarray]) -> None:
        for history in self.histories:  # one per test-time noise draw
            history.push(obs)

    def _with_targets(
        self, images: Mapping[str, np.ndarray], draw: bool
    ) -> Mapping[str, np.ndarray]:
        """``images`` plus the painter's ``<cam>_target`` (drawn now when ``draw`` or none yet)."""
        if self.painter is None:
            return images
        if draw or not self._targets:  # the same noise per (episode, drawing), as in eval.py
            from stemob.genima.agent import drawing_seed

            seed = drawing_seed(self.episode, self._drawings)
            self._targets = self.painter.paint(images, seed=seed)
            self._drawings += 1
        return {**images, **self._targets}

    def _validate(
        self, images: Mapping[str, np.ndarray], state: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        cfg = self.policy.config
        obs: dict[str, np.ndarray] = {}
        for key in [*self.image_keys, *self.latent_keys]:
            if key not in images:
                raise StemobError(f"images lack camera {key!r} (got {sorted(images)})")
            image = np.asarray(images[key])
            h, w = cfg.obs_shapes[key][1:] if key in self.image_keys else image.shape[:2]
            if image.shape != (h, w, 3) or image.dtype != np.uint8:
                raise StemobError(
                    f"camera {key!r}: expected a uint8 ({h}, {w}, 3) RGB image, got "
                    f"{image.dtype} {image.shape}"
                )
            obs[key] = image
        for key in self.state_keys:
            if key not in state:
                raise StemobError(f"state lacks {key!r} (got {sorted(state)})")
            value = np.asarray(state[key], np.float32).reshape(-1)
            if value.shape != (cfg.obs_shapes[key][0],):
                raise StemobError(
                    f"state {key!r}: expected {cfg.obs_shapes[key][0]} values, got {value.shape}"
                )
            obs[key] = value
        return obs

    def observe(
        self, images: Mapping[str, np.ndarray], state: Mapping[str, np.ndarray] | None = None
    ) -> None:
        """Record an observation without planning (frames seen while a chunk executes)."""
        self._push(self._validate(self._with_targets(images, False), state or {}))

    def act(
        self, images: Mapping[str, np.ndarray], state: Mapping[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """Record the newest observation and return the actions to execute ``(k, A)``."""
        drawing_ms = 0.0
        if self.painter is not None:
            started = time.perf_counter()
            images = self._with_targets(images, True)
            drawing_ms = (time.perf_counter() - started) * 1e3
        self._push(self._validate(images, state or {}))
        inversion_ms = 0.0
        if self.inverter is not None:
            start = time.perf_counter()
            invert_pending(
                self.inverter, self.histories, draw_episodes([self.episode], self.test_draws),
                self.image_keys, self.latent_keys,
            )  # fmt: skip
            inversion_ms = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        batch = to_batch([h.window() for h in self.histories], self.image_keys, self.device)
        with torch.inference_mode():
            actions = mean_over_draws(next_actions(self.policy, batch, **self.policy_kwargs),
                                      self.test_draws)  # fmt: skip
        out = actions[0].float().cpu().numpy()
        self.stats.add(inversion_ms, (time.perf_counter() - start) * 1e3, drawing_ms)
        return out

    @property
    def latency(self) -> dict[str, float]:
        """Last and median milliseconds per :meth:`act` call: inversion, GENIMA drawing, policy, total."""
        return self.stats.summary()
