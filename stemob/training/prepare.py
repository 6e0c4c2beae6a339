"""Everything a run needs before its first step: demonstrations, the Stem-OB cache, the dataset
and the policy, built from the composed run config (plain dicts from hydra)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stemob.errors import StemobError

TABLETOP_TYPE = "stemob_tabletop"


def inversion_settings(section: Mapping[str, Any] | None) -> Any:
    """``InversionSettings`` from a ``stemob`` config section; None for ``mode: none``."""
    from stemob.inversion.settings import InversionSettings

    if not section or section.get("mode") in (None, "none"):
        return None
    return InversionSettings.from_dict({k: v for k, v in section.items() if k != "name"})


def policy_window(policy_section: Mapping[str, Any]) -> tuple[int, int]:
    """``(n_obs_steps, horizon)`` of a ``policy`` section (config values or the class defaults)."""
    from policies.base import policy_class

    cls = policy_class(policy_section["name"]).config_class
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = dict(policy_section.get("config") or {})
    return (
        int(values.get("n_obs_steps", fields["n_obs_steps"].default)),
        int(values.get("horizon", fields["horizon"].default)),
    )


@contextmanager
def one_builder(path: Path, what: str) -> Iterator[None]:
    """Hold the lock file ``.<name>.lock`` beside ``path`` while this process builds ``what``
    there: a second run building the same file (two study lanes on a fresh machine) waits here,
    says so once, and then finds the file built. Without a writable folder (a read-only dataset,
    which is then never built) or ``fcntl`` (not POSIX) nothing is locked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    lock = path.parent / f".{path.name}.lock"
    if not os.access(path.parent, os.W_OK):
        yield
        return
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process building {what} ({path})", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_demonstrations(dataset: Mapping[str, Any], task: Mapping[str, Any]) -> Path:
    """The dataset file; recorded with the task's scripted expert if it is missing and the task
    is from the tabletop suite or robosuite (otherwise a missing file is an error). Concurrent
    runs record it once (:func:`one_builder`)."""
    from envs.robosuite.types import ROBOSUITE_TYPE

    path = Path(dataset["path"])
    if path.exists():
        return _recorded(path, task)
    recordable = (task.get("env_args") or {}).get("type") in (TABLETOP_TYPE, ROBOSUITE_TYPE)
    if not recordable or not dataset.get("record_missing", True):
        raise StemobError(
            f"dataset {path} does not exist (option dataset.path); only tabletop and robosuite "
            "tasks with scripted experts record their demonstrations automatically"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    with one_builder(path, "its demonstrations"):
        if path.exists():  # another run recorded it while this one waited
            return _recorded(path, task)
        _record(path, task)
    return path


def _recording_options(task: Mapping[str, Any]) -> dict[str, Any]:
    demos = task.get("demos") or {}
    return {"steps_after_success": int(demos.get("steps_after_success") or 0),
            "action_noise": float(demos.get("action_noise") or 0.0)}  # fmt: skip


def _recorded(path: Path, task: Mapping[str, Any]) -> Path:
    """``path`` after checking its recording options against ``task.demos``."""
    _check_recording(path, _recording_options(task))
    return path


def _record(path: Path, task: Mapping[str, Any]) -> None:
    """Record ``task.demos.episodes`` demonstrations of the task's scripted expert to ``path``."""
    from envs.record import record, record_env_args
    from envs.robosuite.types import ROBOSUITE_TYPE

    env_args = task["env_args"]
    demos = task.get("demos") or {}
    episodes, seed = int(demos.get("episodes", 100)), int(demos.get("seed", 0))
    options = _recording_options(task)
    if env_args["type"] == ROBOSUITE_TYPE:
        print(f"recording {episodes} {env_args['env_name']} demonstrations to {path}")
        record_env_args(env_args, episodes, path, seed=seed, **options)
        return
    kwargs = env_args["env_kwargs"]
    print(f"recording {episodes} {kwargs['task']} demonstrations to {path}")
    record(
        kwargs["task"], episodes, path, perturbation=kwargs.get("perturbation"), seed=seed,
        image_size=int(kwargs.get("image_size", 96)),
        cameras=tuple(kwargs.get("cameras", ("front", "wrist"))),
        action_mode=kwargs.get("action_mode", "ee_delta"), **options,
    )  # fmt: skip


def ensure_genima_dataset(dataset: Mapping[str, Any], progress: bool = True) -> dict[str, Any]:
    """The ``dataset`` section pointing at its GENIMA dataset (built from ``dataset.path`` when
    missing, :mod:`stemob.genima.dataset`) when it has a ``genima`` section; else unchanged."""
    section = dataset.get("genima")
    if not section:
        return dict(dataset)
    from stemob.genima.dataset import GenimaDatasetConfig, build_dataset, output_path

    known = {f.name for f in dataclasses.fields(GenimaDatasetConfig)} - {"style"}
    unknown = sorted(set(section) - known)
    if unknown:
        raise StemobError(f"dataset.genima: unknown option(s) {unknown} (known: {sorted(known)})")
    values = dict(section)
    if values.get("grid") is not None:
        values["grid"] = tuple(values["grid"])
    config = GenimaDatasetConfig(**values)
    source = Path(dataset["path"])
    with one_builder(output_path(source, config), "this GENIMA dataset"):
        path = build_dataset(
            source, config, reader=dataset.get("reader", "auto"), progress=progress
        )
    # the horizon stays known: the training evaluator draws the controller's oracle targets with it
    return {**dataset, "path": str(path), "reader": "robomimic", "genima": None,
            "genima_horizon": config.horizon}  # fmt: skip


def _check_recording(path: Path, wanted: Mapping[str, float]) -> None:
    """A file our experts recorded must match the ``task.demos`` options in ``wanted``
    (``steps_after_success``, ``action_noise``; files recorded before an option existed count
    as 0). Files without our recording attributes (other sources) are not checked."""
    import h5py

    from stemob.data.robomimic import stemob_attrs

    try:
        with h5py.File(path, "r") as f:
            demos = sorted(f.get("data", {}).keys())
            if not demos:
                return
            attrs = stemob_attrs(f["data"][demos[0]])
    except (OSError, ValueError):
        return  # an unreadable file is reported by the dataset reader, with its own message
    if "seed" not in attrs:
        return
    for key, value in wanted.items():
        recorded = type(value)(attrs.get(key, 0))
        if recorded != value:
            raise StemobError(
                f"{path} was recorded with {key}={recorded}, but task.demos.{key}={value}: "
                "point dataset.path at another file (it is recorded when missing)"
            )


def build_dataset(
    dataset: Mapping[str, Any], policy_section: Mapping[str, Any], settings: Any
) -> Any:
    """The training ``DemoDataset`` (the Stem-OB cache must exist when ``settings`` is given)."""
    from stemob.data.dataset import DatasetConfig, DemoDataset

    n_obs_steps, horizon = policy_window(policy_section)
    config = DatasetConfig(
        path=str(dataset["path"]),
        reader=dataset.get("reader", "auto"),
        reader_kwargs=dict(dataset.get("reader_kwargs") or {}),
        key_map=dict(dataset.get("key_map") or {}),
        obs_keys=list(dataset["obs_keys"]) if dataset.get("obs_keys") else None,
        n_obs_steps=n_obs_steps,
        horizon=horizon,
        val_ratio=float(dataset.get("val_ratio", 0.0)),
        seed=int(dataset.get("split_seed", 0)),
        stemob=settings,
        stemob_keys=dataset.get("stemob_keys"),
        stemob_latents=bool(dataset.get("stemob_latents", False)),
        stemob_draws=dataset.get("stemob_draws", 1),
        cache_dir=dataset.get("cache_dir"),
    )
    return DemoDataset(config)


def build_policy(
    policy_section: Mapping[str, Any],
    data: Any,
    settings: Any,
    env_args: Mapping[str, Any] | None = None,
) -> Any:
    """The policy named by the ``policy`` section, shaped by the dataset's keys and statistics.

    The checkpoint's ``env_args`` are the dataset's (robomimic files store them), else
    ``env_args`` (the task config's: RLBench episode folders and plain folders store none).
    """
    from policies.base import make_policy

    meta = data.shape_meta
    config = {
        **dict(policy_section.get("config") or {}),
        "obs_shapes": {k: v["shape"] for k, v in meta["obs"].items()},
        "latent_keys": [k for k, v in meta["obs"].items() if v["type"] == "latent"],
        "action_dim": int(meta["action"]["shape"][0]),
    }
    return make_policy(
        policy_section["name"],
        config,
        stats=data.stats,
        stemob=settings,
        env_args=data.env_args or (dict(env_args) if env_args else None),
    )


def check_before_long_work(cfg: Mapping[str, Any]) -> None:
    """Validate the policy, augmentation and dataset keys before anything is recorded or inverted,
    so that a bad option fails in seconds with one clear error."""
    from policies.base import policy_class
    from stemob.training.augment import make_augment

    section = cfg["policy"]
    cls = policy_class(section["name"]).config_class
    env_kwargs = ((cfg.get("task") or {}).get("env_args") or {}).get("env_kwargs", {})
    size = int(env_kwargs.get("image_size", env_kwargs.get("camera_heights", 96)))
    action_dim = 8 if env_kwargs.get("action_mode") == "joint_position" else 7
    keys = (cfg.get("dataset") or {}).get("obs_keys") or ["front_image"]
    probe = {k: ([3, size, size] if k.endswith(("_image", "_target")) else [1]) for k in keys}
    if not any(len(v) == 3 for v in probe.values()):
        probe["front_image"] = [3, size, size]
    try:
        cls.from_dict(
            {**dict(section.get("config") or {}), "obs_shapes": probe, "action_dim": action_dim}
        )
    except TypeError as error:
        raise StemobError(f"policy.config: {error}") from error
    make_augment(cfg)
    if section.get("drawer"):
        if not (cfg.get("dataset") or {}).get("genima"):
            raise StemobError(
                "policy=genima trains its controller and drawer on a GENIMA dataset: add "
                "dataset=genima and a joint-position task (e.g. task=lift_cube_joint)"
            )
        from stemob.training.genima_drawer import drawer_args

        drawer_args(
            section["drawer"], "dataset.hdf5", "run"
        )  # its options fail now, not after stage 1
    draws = (cfg.get("dataset") or {}).get("stemob_draws", 1)
    if draws != 1:  # before any cache is built
        from stemob.data.dataset import DatasetConfig

        DatasetConfig(path="-", stemob=inversion_settings(cfg.get("stemob")), stemob_draws=draws,
                      stemob_latents=bool(cfg["dataset"].get("stemob_latents", False)))  # fmt: skip
    path = Path(cfg["dataset"]["path"])
    if path.exists() and not cfg["dataset"].get("genima"):  # GENIMA keys exist once it is built
        from stemob.data.detect import open_reader
        from stemob.data.episodes import rename_keys

        dataset = cfg["dataset"]
        reader = open_reader(
            path, dataset.get("reader", "auto"), **dict(dataset.get("reader_kwargs") or {})
        )
        first = rename_keys(reader.read(0), dict(dataset.get("key_map") or {}))
        missing = [k for k in dataset.get("obs_keys") or [] if k not in first.obs]
        if missing:
            raise StemobError(
                f"{path}: observation key(s) {missing} of dataset.obs_keys are missing (the "
                f"episodes have {sorted(first.obs)} after key_map)"
            )
