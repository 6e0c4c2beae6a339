"""RLBench episode folders, read and written without rlbench or pyrep.

Layout (as RLBench's dataset generator writes it)::

    <root>/<task>/variation<V>/variation_descriptions.pkl          list[str]
    <root>/<task>/variation<V>/episodes/episode<N>/low_dim_obs.pkl  pickled rlbench.demo.Demo
                                                  /<cam>_rgb/<i>.png

A pickle is untrusted input: :func:`safe_load` maps ``rlbench.demo.Demo`` and
``rlbench.backend.observation.Observation`` to plain classes, allows the handful of numpy and
builtin names that arrays, dtypes and scalars need (numpy 1.x ``numpy.core`` and numpy 2
``numpy._core`` spellings) and refuses every other class.

Actions (``action_mode``): ``joint_position`` (default) uses ``misc['joint_position_action']`` of the
next frame (7 joints + gripper; older name ``executed_demo_joint_position_action``), falling back
to the next frame's ``joint_positions`` + ``gripper_open``; ``gripper_pose`` uses the next frame's
``gripper_pose`` + ``gripper_open``. The last step holds the last state.
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
_ACTION_NAMES = ("joint_position_action", "executed_demo_joint_position_action")
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
        cameras: camera names (``front``, ``wrist``, ...); default every ``<cam>_rgb`` folder.
        action_mode: ``joint_position`` or ``gripper_pose`` (see the module docstring).
        extra_obs: other Observation fields to use as observations (e.g. ``joint_velocities``).
    """

    format = "rlbench"

    def __init__(
        self,
        path: str | Path,
        cameras: Sequence[str] | None = None,
        action_mode: str = "joint_position",
        extra_obs: Sequence[str] = (),
    ) -> None:
        self.path = Path(path)
        if action_mode not in ACTION_MODES:
            raise StemobError(f"action_mode must be one of {ACTION_MODES}, got {action_mode!r}")
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
        actions = self._actions(obs, misc)
        cameras = self.cameras
        if cameras is None:
            cameras = sorted(d.name[:-4] for d in folder.glob("*_rgb") if d.is_dir())
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
        attrs: dict[str, Any] = {}
        if "variation_index" in misc[0]:
            attrs["variation_index"] = int(misc[0]["variation_index"])
        descriptions = folder.parent.parent / "variation_descriptions.pkl"
        if descriptions.is_file():
            attrs["language"] = [str(s) for s in safe_load(descriptions, name, descriptions.name)]
        episode = Episode(
            obs=obs, actions=actions, name=name, source=str(pkl), extras=extras, attrs=attrs
        )
        return episode.validate()

    def _actions(self, obs: dict[str, np.ndarray], misc: list[dict[str, Any]]) -> np.ndarray:
        state = (
            obs["joint_positions"] if self.action_mode == "joint_position" else obs["gripper_pose"]
        )
        held = np.concatenate([state, obs["gripper_open"]], axis=1)
        actions = np.concatenate([held[1:], held[-1:]])
        if self.action_mode == "joint_position":
            for step in range(1, len(misc)):
                recorded = next((misc[step][k] for k in _ACTION_NAMES if k in misc[step]), None)
                if recorded is not None:
                    recorded = np.asarray(recorded, dtype=np.float64).reshape(-1)
                    if recorded.shape == actions.shape[1:]:
                        actions[step - 1] = recorded
        return actions.astype(np.float32)


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


def dump_demo(observations: list[RLBenchObservation], path: Path, random_seed: Any = None) -> None:
    """Pickle a Demo of ``observations`` as RLBench does (protocol 2)."""
    demo = RLBenchDemo()
    demo.__dict__.update(
        {"_observations": observations, "random_seed": random_seed, "num_reset_attempts": 0}
    )
    buffer = io.BytesIO()
    _RLBenchPickler(buffer, protocol=2).dump(demo)
    path.write_bytes(buffer.getvalue())


def write_rlbench(
    root: str | Path,
    episodes: Iterable[Episode],
    *,
    task: str = "task",
    variation: int = 0,
    descriptions: Sequence[str] | None = None,
    start_index: int = 0,
) -> Path:
    """Write episodes as ``<root>/<task>/variation<V>/episodes/episode<N>``.

    Each episode needs ``joint_positions``, ``gripper_open`` and ``gripper_pose`` observations;
    image keys ``<cam>_rgb`` become ``<cam>_rgb/<i>.png``; ``extras`` go to ``misc`` per frame;
    8-dimensional actions are stored as the next frame's ``misc['joint_position_action']``.
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
                misc["joint_position_action"] = episode.actions[step - 1].astype(np.float64)
            fields: dict[str, Any] = dict.fromkeys(OBSERVATION_FIELDS)
            fields["joint_positions"] = episode.obs["joint_positions"][step].astype(np.float64)
            fields["gripper_open"] = float(episode.obs["gripper_open"][step].reshape(-1)[0])
            fields["gripper_pose"] = episode.obs["gripper_pose"][step].astype(np.float64)
            fields["misc"] = misc
            for key in episode.lowdim_keys:
                if key not in fields or fields[key] is None:
                    fields[key] = np.asarray(episode.obs[key][step], dtype=np.float64)
            observations.append(RLBenchObservation(**fields))
        for key in episode.image_keys:
            camera = key if key.endswith("_rgb") else f"{key}_rgb"
            (tmp / camera).mkdir()
            for step, frame in enumerate(episode.obs[key]):
                Image.fromarray(frame).save(tmp / camera / f"{step}.png")
        dump_demo(observations, tmp / "low_dim_obs.pkl")
        tmp.rename(folder)
    return Path(root)
