"""RLBench episode folders, read and written without rlbench or pyrep.

Layouts (checked in the generators' sources)::

    # RLBench (rlbench/dataset_generator.py at 8fc31bfa; tools/dataset_generator.py at 7c3f425)
    # and Colosseum's numbered settings other than 13 and 15 (its variation is always 0)
    <root>/<task>/variation<V>/variation_descriptions.pkl          list[str], one per variation
    <root>/<task>/variation<V>/episodes/episode<N>/low_dim_obs.pkl  pickled rlbench.demo.Demo
                                                  /<cam>_{rgb,depth,mask}/<i>.png
    # Colosseum settings 13 and 15 (colosseum/tools/dataset_generator.py:158-233 at 098a910):
    # no variation folder, a variation drawn per episode
    <root>/<task>_<setting>/episodes/episode<N>/{low_dim_obs.pkl, variation_number.pkl,
                                                variation_descriptions.pkl, <cam>_rgb/<i>.png}

An episode's language comes from its own ``variation_descriptions.pkl`` when it has one, else from
its variation folder's; its variation from ``misc['variation_index']``, else
``variation_number.pkl``.

A pickle is untrusted input: :func:`safe_load` maps ``rlbench.demo.Demo`` and
``rlbench.backend.observation.Observation`` to plain classes, allows the handful of numpy and
builtin names that arrays, dtypes and scalars need (numpy 1.x ``numpy.core`` and numpy 2
``numpy._core`` spellings) and refuses every other class.

Actions (``action_mode``). ``joint_position`` (default): the joint targets RLBench recorded while
it made the demo, in one of the two layouts its commits write (checked in stepjam/RLBench):

- ``misc['joint_position_action']``: 8 values, 7 joint targets + the gripper's open state, on
  every frame but the first (``rlbench/backend/scene.py:374,556-558`` at 8fc31bfa and 02720bba;
  added by 790a90ed);
- ``misc['executed_demo_joint_position_action']``: 7 joint targets, no gripper, only on the frames
  recorded right after a path step, not on frame 0, the gripper-actuation frames or the settling
  frames (``scene.py:366-371,548-551`` at 7c3f425, Colosseum's pin). The gripper then comes from
  the next frame's ``gripper_open``.

The value on frame ``t + 1`` is the target commanded during the step that led to it, so it is
the action at step ``t`` (GENIMA reads it the same way). ``actions="auto"`` uses the recorded
targets where they exist and the next frame's ``joint_positions`` + ``gripper_open`` elsewhere;
``"recorded"`` refuses an episode where a step has no recorded target or the layout does not
fit; ``"observed"`` always uses the next observed joints. Which source each episode's actions
came from is in ``episode.attrs['action_source']`` (never silent). ``gripper_pose``: the next
frame's ``gripper_pose`` + ``gripper_open``. The last step holds the last state.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import re
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stemob.data.episodes import Episode, ReaderBase
from stemob.data.folder import natural_key
from stemob.errors import StemobError

try:  # numpy 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]

ACTION_MODES = ("joint_position", "gripper_pose")
LOW_DIM = ("joint_positions", "gripper_open", "gripper_pose")
OBSERVATION_FIELDS = (
    "joint_velocities", "joint_positions", "joint_forces", "gripper_open", "gripper_pose",
    "gripper_matrix", "gripper_joint_positions", "gripper_touch_forces", "task_low_dim_state",
    "ignore_collisions", "misc",
)  # fmt: skip
JOINT_ACTION_KEY = "joint_position_action"
"""8 values (7 joints + gripper): RLBench from 790a90ed (8fc31bfa, 02720bba)."""
LEGACY_JOINT_ACTION_KEY = "executed_demo_joint_position_action"
"""7 joint values: RLBench e5261853 .. 7c3f425 (Colosseum's pin)."""
_ACTION_NAMES = (JOINT_ACTION_KEY, LEGACY_JOINT_ACTION_KEY)
ACTION_SOURCES = ("auto", "recorded", "observed")
_EPISODE = re.compile(r"episode(\d+)$")


class RLBenchDemo:
    """Stand-in for ``rlbench.demo.Demo``: keeps whatever attributes the pickle holds."""

    def __setstate__(self, state: Any) -> None:
        _set_state(self, state)

    @property
    def observations(self) -> list[Any]:
        return list(getattr(self, "_observations", None) or [])


class RLBenchObservation:
    """Stand-in for ``rlbench.backend.observation.Observation`` (extra or missing fields are fine)."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def __setstate__(self, state: Any) -> None:
        _set_state(self, state)


def _set_state(obj: Any, state: Any) -> None:
    if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
        for part in state:
            if isinstance(part, dict):
                obj.__dict__.update(part)
    elif isinstance(state, dict):
        obj.__dict__.update(state)
    else:
        raise pickle.UnpicklingError(f"unexpected state of {type(obj).__name__}: {type(state)}")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("rlbench.demo", "Demo"): RLBenchDemo,
    ("rlbench.backend.observation", "Observation"): RLBenchObservation,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("copyreg", "_reconstructor"): copyreg._reconstructor,
    ("copy_reg", "_reconstructor"): copyreg._reconstructor,
    ("_codecs", "encode"): __import__("codecs").encode,
    ("collections", "OrderedDict"): OrderedDict,
}
for _module in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_module}.multiarray", "_reconstruct")] = _multiarray._reconstruct
    _ALLOWED[(f"{_module}.multiarray", "scalar")] = _multiarray.scalar
    _ALLOWED[(f"{_module}.numeric", "_frombuffer")] = _numeric._frombuffer
for _builtins in ("builtins", "__builtin__"):
    for _name in ("object", "set", "frozenset", "complex", "bytearray", "slice", "range"):
        _ALLOWED[(_builtins, _name)] = getattr(__import__("builtins"), _name)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def safe_load(path: str | Path, episode: str = "", key: str = "low_dim_obs.pkl") -> Any:
    """Unpickle an RLBench file with the restricted unpickler (a clear error otherwise)."""
    path = Path(path)
    where = f"{path}: episode {episode!r}, key {key!r}" if episode else str(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise StemobError(f"{where}: cannot read: {error}") from error
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as error:
        raise StemobError(f"{where}: unsafe or invalid pickle: {error}") from error
    except (EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise StemobError(f"{where}: truncated or corrupt pickle: {error}") from error


class RLBenchReader(ReaderBase):
    """RLBench episodes under a root, a task, a variation or an ``episodes`` folder.

    Args:
        path: any level of the layout (down to a single ``episode<N>`` folder).
        cameras: camera names (``front``, ``wrist``, ...); default every ``<cam>_rgb`` folder
            but the black placeholders :func:`write_rlbench` adds for RLBench's loader.
        action_mode: ``joint_position`` or ``gripper_pose`` (see the module docstring).
        extra_obs: other Observation fields to use as observations (e.g. ``joint_velocities``).
        actions: ``auto``, ``recorded`` or ``observed``: where ``joint_position`` actions come
            from (module docstring).
    """

    format = "rlbench"

    def __init__(
        self,
        path: str | Path,
        cameras: Sequence[str] | None = None,
        action_mode: str = "joint_position",
        extra_obs: Sequence[str] = (),
        actions: str = "auto",
    ) -> None:
        self.path = Path(path)
        if action_mode not in ACTION_MODES:
            raise StemobError(f"action_mode must be one of {ACTION_MODES}, got {action_mode!r}")
        if actions not in ACTION_SOURCES:
            raise StemobError(f"actions must be one of {ACTION_SOURCES}, got {actions!r}")
        if actions == "recorded" and action_mode != "joint_position":
            raise StemobError(
                "actions='recorded' needs action_mode='joint_position' (RLBench records joint "
                "targets only)"
            )
        self.actions = actions
        self.cameras = list(cameras) if cameras is not None else None
        self.action_mode = action_mode
        self.extra_obs = list(extra_obs)
        if (self.path / "low_dim_obs.pkl").is_file():
            self._folders = [self.path]
        else:
            found = {p.parent for p in self.path.rglob("low_dim_obs.pkl")}
            self._folders = sorted(
                (f for f in found if _EPISODE.search(f.name)),
                key=lambda f: natural_key(str(f.relative_to(self.path))),
            )
        if not self._folders:
            raise StemobError(f"{self.path} holds no RLBench episodes (episode<N>/low_dim_obs.pkl)")
        self._lengths: dict[int, int] = {}

    @property
    def names(self) -> list[str]:
        return [
            str(f.relative_to(self.path)).replace("/episodes/", "/") if f != self.path else f.name
            for f in self._folders
        ]

    def _demo(self, index: int) -> list[Any]:
        folder, name = self._folders[index], self.names[index]
        demo = safe_load(folder / "low_dim_obs.pkl", name)
        observations = demo.observations if isinstance(demo, RLBenchDemo) else demo
        if not isinstance(observations, list) or not all(
            isinstance(o, RLBenchObservation) for o in observations
        ):
            raise StemobError(
                f"{folder / 'low_dim_obs.pkl'}: episode {name!r}: not an RLBench Demo"
            )
        if not observations:
            raise StemobError(f"{folder / 'low_dim_obs.pkl'}: episode {name!r} has no observations")
        self._lengths[index] = len(observations)
        return observations

    def lengths(self) -> list[int]:
        return [self._lengths.get(i) or len(self._demo(i)) for i in range(len(self))]

    def read(self, index: int) -> Episode:
        folder, name = self._folders[index], self.names[index]
        observations = self._demo(index)
        pkl = folder / "low_dim_obs.pkl"

        def field(key: str) -> np.ndarray:
            values = [getattr(o, key, None) for o in observations]
            if any(v is None for v in values):
                step = next(i for i, v in enumerate(values) if v is None)
                raise StemobError(f"{pkl}: episode {name!r}, key {key!r} is missing (step {step})")
            try:
                array = np.asarray(values, dtype=np.float64)
            except ValueError as error:
                raise StemobError(
                    f"{pkl}: episode {name!r}, key {key!r}: ragged ({error})"
                ) from error
            return array.reshape(len(values), -1)

        obs = {key: field(key).astype(np.float32) for key in (*LOW_DIM, *self.extra_obs)}
        misc = [getattr(o, "misc", None) or {} for o in observations]
        actions, action_source = self._actions(obs, misc, f"{pkl}: episode {name!r}")
        cameras = self.cameras
        if cameras is None:
            skip = (
                (folder / PLACEHOLDERS).read_text().split()
                if (folder / PLACEHOLDERS).is_file()
                else []
            )
            cameras = sorted(
                d.name[:-4] for d in folder.glob("*_rgb") if d.is_dir() and d.name[:-4] not in skip
            )
        for camera in cameras:
            obs[f"{camera}_rgb"] = _read_pngs(folder / f"{camera}_rgb", len(observations), name)
        extras = {}
        for key in misc[0] if misc else {}:
            if key in _ACTION_NAMES or not all(key in m for m in misc):
                continue
            try:
                value = np.asarray([np.asarray(m[key], dtype=np.float64) for m in misc])
            except (TypeError, ValueError):
                continue
            extras[key] = value
        attrs: dict[str, Any] = {"action_source": action_source}
        number = folder / "variation_number.pkl"
        if "variation_index" in misc[0]:
            attrs["variation_index"] = int(misc[0]["variation_index"])
        elif number.is_file():
            attrs["variation_index"] = int(safe_load(number, name, number.name))
        for descriptions in (
            folder / "variation_descriptions.pkl",
            folder.parent.parent / "variation_descriptions.pkl",
        ):
            if descriptions.is_file():
                loaded = safe_load(descriptions, name, descriptions.name)
                attrs["language"] = [str(s) for s in loaded]
                break
        episode = Episode(
            obs=obs, actions=actions, name=name, source=str(pkl), extras=extras, attrs=attrs
        )
        return episode.validate()

    def _actions(
        self, obs: dict[str, np.ndarray], misc: list[dict[str, Any]], where: str
    ) -> tuple[np.ndarray, str]:
        """The episode's actions and a sentence naming where they came from."""
        state = (
            obs["joint_positions"] if self.action_mode == "joint_position" else obs["gripper_pose"]
        )
        held = np.concatenate([state, obs["gripper_open"]], axis=1)
        actions = np.concatenate([held[1:], held[-1:]]).astype(np.float64)
        if self.action_mode == "gripper_pose":
            return actions.astype(np.float32), "next gripper_pose + gripper_open"
        if self.actions == "observed":
            return actions.astype(np.float32), "next joint_positions + gripper_open (observed)"
        steps = len(misc) - 1
        keys = {k for m in misc[1:] for k in _ACTION_NAMES if k in m}
        if len(keys) > 1:
            raise StemobError(
                f"{where}: both {sorted(keys)} are recorded: which RLBench wrote this?"
            )
        key = next(iter(keys), None)
        recorded = [m.get(key) if key else None for m in misc[1:]]
        missing = [t for t, a in enumerate(recorded) if a is None]
        if self.actions == "recorded" and (key is None or missing):
            what = (
                f"no frame has {' or '.join(map(repr, _ACTION_NAMES))}"
                if key is None
                else f"steps {missing[:8]}{'...' if len(missing) > 8 else ''} have no {key!r}"
                " (RLBench 7c3f425 records it only on path steps, scene.py:366-371)"
            )
            raise StemobError(
                f"{where}: actions='recorded' but {what}; use actions='auto' to fill them from "
                "the next observed joints, or actions='observed'"
            )
        width = 8 if key == JOINT_ACTION_KEY else 7
        for t, value in enumerate(recorded):
            if value is None:
                continue
            value = np.asarray(value, dtype=np.float64).reshape(-1)
            if value.shape != (width,):
                raise StemobError(
                    f"{where}: key {key!r} at frame {t + 1} has {value.size} values, expected "
                    f"{width} ({'7 joints + gripper' if width == 8 else '7 joints'}, as RLBench "
                    "writes it)"
                )
            actions[t, :width] = value
        if key is None:
            source = "next joint_positions + gripper_open (no recorded joint targets in the file)"
        elif key == JOINT_ACTION_KEY:
            source = f"recorded {key} (7 joints + gripper)"
        else:
            source = f"recorded {key} (7 joints) + next gripper_open"
        if key is not None and missing:
            source += f"; {len(missing)} of {steps} steps from the next observed joints"
        return actions.astype(np.float32), source


def pyrep_camera_to_opencv(
    intrinsics: np.ndarray, extrinsics: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """PyRep camera matrices (one ``(3, 3)``/``(4, 4)`` pair or stacks of them) -> OpenCV's.

    PyRep gives a camera-to-world ``extrinsics`` and ``intrinsics`` with negative fx, fy
    (projection ``K @ inv(E)[:3]``). ``K @ X == K' @ diag(-1, -1, 1) @ X`` with ``K'`` the
    positive-focal matrix, so the OpenCV camera frame is PyRep's with x and y flipped. Returns
    the intrinsics with positive focal lengths and the world-to-camera extrinsics (x right,
    y down, z forward).
    """
    k = np.array(intrinsics, np.float64)
    k[..., :, 0] *= -1.0
    k[..., :, 1] *= -1.0
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return k, flip @ np.linalg.inv(np.asarray(extrinsics, np.float64))


def _read_pngs(folder: Path, count: int, episode: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    key = folder.name
    frames = []
    for i in range(count):
        file = folder / f"{i}.png"
        if not file.is_file():
            raise StemobError(f"{file}: episode {episode!r}, key {key!r}: frame {i} is missing")
        try:
            with Image.open(file) as image:
                frames.append(np.asarray(image.convert("RGB")))
        except (OSError, UnidentifiedImageError) as error:
            raise StemobError(
                f"{file}: episode {episode!r}, key {key!r}: cannot decode: {error}"
            ) from error
    if len({f.shape for f in frames}) > 1:
        raise StemobError(f"{folder}: episode {episode!r}, key {key!r}: frame sizes differ")
    return np.stack(frames)


# ------------------------------------------------------------------ writing
_EXPORT_NAMES: dict[int, tuple[str, str]] = {
    id(RLBenchDemo): ("rlbench.demo", "Demo"),
    id(RLBenchObservation): ("rlbench.backend.observation", "Observation"),
    id(_multiarray._reconstruct): ("numpy.core.multiarray", "_reconstruct"),
    id(_multiarray.scalar): ("numpy.core.multiarray", "scalar"),
}


class _RLBenchPickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes our stand-ins under RLBench's class names and numpy under the numpy 1.x names
    (numpy 2 reads those), so files load in RLBench with either numpy."""

    def save_global(self, obj: Any, name: str | None = None) -> None:
        target = _EXPORT_NAMES.get(id(obj))
        if target is None:
            return super().save_global(obj, name)
        self.write(pickle.GLOBAL + f"{target[0]}\n{target[1]}\n".encode())
        self.memoize(obj)


def dump_demo(
    observations: list[RLBenchObservation],
    path: Path,
    random_seed: Any = None,
    num_reset_attempts: int | None = None,
) -> None:
    """Pickle a Demo of ``observations`` as RLBench does (protocol 2).

    ``random_seed`` (numpy's ``get_state()`` before the demo's reset) and ``num_reset_attempts``
    are what ``TaskEnvironment.reset_to_demo`` replays; ``None`` for episodes that did not come
    from RLBench (``reset(demo)`` then places objects afresh instead of replaying:
    ``rlbench/task_environment.py:78-81`` at 8fc31bfa).
    """
    demo = RLBenchDemo()
    demo.__dict__.update(
        {
            "_observations": observations,
            "random_seed": random_seed,
            "num_reset_attempts": num_reset_attempts,
        }
    )
    buffer = io.BytesIO()
    _RLBenchPickler(buffer, protocol=2).dump(demo)
    path.write_bytes(buffer.getvalue())


PLACEHOLDERS = "placeholder_cameras.txt"
"""Names the black cameras :func:`write_rlbench` added for RLBench's loader (skipped on read)."""
RLBENCH_CAMERAS = ("left_shoulder", "right_shoulder", "overhead", "wrist", "front")
"""The cameras whose ``rgb`` and ``depth`` folders RLBench's ``get_stored_demos`` requires, each
with one PNG per frame (``rlbench/utils.py:94-100``, the same at 7c3f425 and 8fc31bfa)."""
DEPTH_SCALE = 2**24 - 1
"""RLBench's depth PNG scale (``rlbench/backend/const.py``): R high byte, G, B low byte."""


def depth_to_png(depth: np.ndarray) -> np.ndarray:
    """A normalised depth map in [0, 1] (H, W) as RLBench's 24-bit RGB PNG array."""
    value = np.round(np.clip(np.asarray(depth, np.float64), 0.0, 1.0) * DEPTH_SCALE).astype(
        np.uint32
    )
    return np.stack([(value >> 16) & 255, (value >> 8) & 255, value & 255], -1).astype(np.uint8)


def png_to_depth(image: np.ndarray) -> np.ndarray:
    """RLBench's 24-bit depth PNG array back to the normalised depth in [0, 1]."""
    rgb = np.asarray(image, np.uint32)
    return (rgb[..., 0] * 65536 + rgb[..., 1] * 256 + rgb[..., 2]) / DEPTH_SCALE


def write_rlbench(
    root: str | Path,
    episodes: Iterable[Episode],
    *,
    task: str = "task",
    variation: int = 0,
    descriptions: Sequence[str] | None = None,
    start_index: int = 0,
) -> Path:
    """Write episodes as ``<root>/<task>/variation<V>/episodes/episode<N>``, the layout RLBench's
    ``get_stored_demos`` and GENIMA's loaders read.

    Each episode needs ``joint_positions``, ``gripper_open`` and ``gripper_pose`` observations;
    image keys ``<cam>_rgb`` (or ``<cam>``) become ``<cam>_rgb/<i>.png``, float ``<cam>_depth``
    keys (normalised to [0, 1] between the camera's near and far) ``<cam>_depth/<i>.png``.
    RLBench's loader requires the rgb and depth folders of all five cameras
    (:data:`RLBENCH_CAMERAS`), so the cameras an episode lacks get black frames and zero depth
    (a policy must not be trained on those). ``extras`` go to ``misc`` per frame (camera
    matrices, ``joint_poses``); 8-dimensional actions are stored as the next frame's
    ``misc['joint_position_action']`` (RLBench's layout from 790a90ed); ``random_seed`` and
    ``num_reset_attempts`` are ``None``, as the episodes were not generated by RLBench.
    """
    from PIL import Image

    base = Path(root) / task / f"variation{variation}"
    (base / "episodes").mkdir(parents=True, exist_ok=True)
    descriptions = list(descriptions or [task.replace("_", " ")])
    (base / "variation_descriptions.pkl").write_bytes(pickle.dumps(descriptions, protocol=2))
    for offset, episode in enumerate(episodes):
        episode.validate()
        missing = [k for k in LOW_DIM if k not in episode.obs]
        if missing:
            raise StemobError(f"{episode.where(missing[0])}: needed to write an RLBench episode")
        folder = base / "episodes" / f"episode{start_index + offset}"
        tmp = folder.with_name(f".{folder.name}.tmp")
        tmp.mkdir(parents=True, exist_ok=False)
        observations = []
        for step in range(len(episode)):
            misc: dict[str, Any] = {k: np.asarray(v[step]) for k, v in episode.extras.items()}
            misc["variation_index"] = variation
            if step > 0 and episode.actions.shape[1] == 8:
                misc[JOINT_ACTION_KEY] = episode.actions[step - 1].astype(np.float64)
            fields: dict[str, Any] = dict.fromkeys(OBSERVATION_FIELDS)
            fields["joint_positions"] = episode.obs["joint_positions"][step].astype(np.float64)
            fields["gripper_open"] = float(episode.obs["gripper_open"][step].reshape(-1)[0])
            fields["gripper_pose"] = episode.obs["gripper_pose"][step].astype(np.float64)
            fields["misc"] = misc
            for key in episode.lowdim_keys:
                if key.endswith("_depth"):
                    continue
                if key not in fields or fields[key] is None:
                    fields[key] = np.asarray(episode.obs[key][step], dtype=np.float64)
            observations.append(RLBenchObservation(**fields))
        rgb = {
            (key if key.endswith("_rgb") else f"{key}_rgb"): episode.obs[key]
            for key in episode.image_keys
        }
        size = next(iter(rgb.values())).shape[1:3] if rgb else (128, 128)
        placeholders = [c for c in RLBENCH_CAMERAS if f"{c}_rgb" not in rgb]
        for camera in placeholders:
            rgb[f"{camera}_rgb"] = np.zeros((len(episode), *size, 3), np.uint8)
        if placeholders:  # our reader leaves these out by default
            (tmp / PLACEHOLDERS).write_text("\n".join(placeholders) + "\n")
        for name, frames in rgb.items():
            (tmp / name).mkdir()
            for step, frame in enumerate(frames):
                Image.fromarray(frame).save(tmp / name / f"{step}.png")
        for camera in RLBENCH_CAMERAS:
            depth = episode.obs.get(f"{camera}_depth")
            (tmp / f"{camera}_depth").mkdir()
            for step in range(len(episode)):
                value = np.zeros(size) if depth is None else np.squeeze(depth[step])
                Image.fromarray(depth_to_png(value)).save(tmp / f"{camera}_depth" / f"{step}.png")
        dump_demo(observations, tmp / "low_dim_obs.pkl")
        tmp.rename(folder)
    return Path(root)
