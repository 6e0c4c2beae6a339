"""GENIMA datasets: every frame's tiled observation, tiled target and the controller's inputs.

    stemob-genima-dataset --dataset data/lift_cube_joint/demos_200.hdf5 [--horizon 20]
        [--cameras front wrist] [--grid 1 2] [--textures DIR] [--seed 0] [--out PATH]
        [--figure look.png] [--video episode.mp4]

The output is a robomimic HDF5 file beside the source (``<stem>.genima-<digest>.hdf5``), so
``train.py dataset.path=<it>`` trains on it like on any demonstrations. Per ``data/demo_N``:

- ``obs/tiled_rgb``: the cameras' frames tiled (the diffusion agent's input);
- ``obs/tiled_target``: the same with the target spheres drawn (its training target);
- ``obs/<cam>_target``: each camera's view with the spheres on a random background (the
  controller's inputs, :func:`stemob.genima.random_background`); with ``camera_jitter`` the
  spheres of the named cameras are projected from a randomly moved camera, per frame, so the
  controller learns targets seen from cameras that are not where the demos had them
  (Colosseum's ``camera_pose``); then ``joint_positions`` and
  ``gripper_open`` (its proprioception), and the source's ``actions`` (the joint-action chunk is
  cut from them by the dataset's horizon);
- ``extras/target_index``: the frame whose pose is drawn, ``min(t + horizon, T - 2)`` as GENIMA's
  ``render_data.py`` does (the last two frames draw the second-to-last pose).

Sources: any format stemob reads whose episodes carry camera matrices and joint world poses: the
tabletop suite's recordings (``extras/<cam>_intrinsics``, ``<cam>_extrinsics``,
``joint_world_pos``, ``gripper_world_pos``) and RLBench episodes (``misc`` ``<cam>_camera_
{intrinsics,extrinsics}`` with PyRep's conventions, converted by ``pyrep_camera_to_opencv``, ``joint_poses`` from
RLBench 8fc31bfa on, the gripper from ``gripper_pose``). A missing key is refused naming the
file, the key and what needs it. A killed build resumes: finished demos are kept in
``<out>.partial`` and the file is renamed when complete; the source is only read.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stemob.data.rlbench import pyrep_camera_to_opencv
from stemob.errors import StemobError, run_cli
from stemob.genima.targets import TargetStyle, draw_spheres, random_background, target_spheres, tile

FORMAT_VERSION = 1


@dataclass
class CameraJitter:
    """Random camera moves for the controller's inputs: uniform in +-``position`` metres and
    +-``euler`` radians about the camera's own axes (Colosseum's ``camera_pose`` factor, which
    moves the fixed cameras by +-0.1 m and +-0.05 rad in configs/perturbation/camera_pose.yaml).
    ``probability``: the share of frames drawn from a moved camera (the others from the real one)."""

    cameras: list[str] = field(default_factory=lambda: ["front"])
    position: float = 0.1
    euler: float = 0.05
    probability: float = 1.0

    def __post_init__(self) -> None:
        if self.position < 0 or self.euler < 0:
            raise StemobError(
                f"camera_jitter: position and euler must be >= 0, got {self.position}, {self.euler}"
            )
        if not 0.0 < self.probability <= 1.0:
            raise StemobError(
                f"camera_jitter: probability must be in (0, 1], got {self.probability}"
            )

    def moves_frame(self, rng: np.random.Generator) -> bool:
        """Whether this frame is drawn from a moved camera (no draw at probability 1, so datasets
        built before the option are rebuilt identically)."""
        return self.probability == 1.0 or bool(rng.random() < self.probability)

    def move(self, extrinsics: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """World -> camera extrinsics of the camera moved by one random draw."""
        rotation, translation = extrinsics[:3, :3], extrinsics[:3, 3]
        centre = -rotation.T @ translation + rng.uniform(-self.position, self.position, 3)
        turned = euler_rotation(rng.uniform(-self.euler, self.euler, 3)).T @ rotation
        moved = np.eye(4)
        moved[:3, :3], moved[:3, 3] = turned, -turned @ centre
        return moved


def euler_rotation(angles: np.ndarray) -> np.ndarray:
    """The rotation ``Rx(a) @ Ry(b) @ Rz(c)`` of Euler angles ``(a, b, c)``."""
    out = np.eye(3)
    for axis, angle in enumerate(angles):
        c, s = np.cos(angle), np.sin(angle)
        i, j = [k for k in range(3) if k != axis]
        turn = np.eye(3)
        turn[i, i], turn[i, j], turn[j, i], turn[j, j] = c, -s, s, c
        if axis == 1:  # the y rotation's sine sits on the other side
            turn[i, j], turn[j, i] = s, -s
        out = out @ turn
    return out


@dataclass
class GenimaDatasetConfig:
    """What a GENIMA dataset is built with (recorded in the output's ``data`` attrs).

    Attributes:
        cameras: views to draw, in tile order (default: every camera with matrices).
        grid: tile layout (rows, columns); default one row of all cameras.
        horizon: steps ahead of the drawn pose (GENIMA's ``action_horizon``: 20).
        seed: seeds the random backgrounds and blends (per demo and frame).
        textures: a folder of background images (GENIMA's ``textures_path``); default procedural.
        alpha_min: the lowest sphere/texture blend (GENIMA: 0.7).
        style: sphere radii, camera scales and joints.
        camera_jitter: move these cameras at random for the controller's inputs (default off).
    """

    cameras: list[str] | None = None
    grid: tuple[int, int] | None = None
    horizon: int = 20
    seed: int = 0
    textures: str | None = None
    alpha_min: float = 0.7
    style: TargetStyle = field(default_factory=TargetStyle)
    camera_jitter: CameraJitter | None = None

    def __post_init__(self) -> None:
        if isinstance(self.camera_jitter, dict):
            known = {"cameras", "position", "euler", "probability"}
            unknown = sorted(set(self.camera_jitter) - known)
            if unknown:
                raise StemobError(
                    f"camera_jitter: unknown option(s) {unknown} (known: {', '.join(sorted(known))})"
                )
            self.camera_jitter = CameraJitter(**self.camera_jitter)
        if self.horizon < 1:
            raise StemobError(f"horizon must be >= 1, got {self.horizon}")
        if not 0.0 <= self.alpha_min <= 1.0:
            raise StemobError(f"alpha_min must be in [0, 1], got {self.alpha_min}")

    def record(self) -> dict[str, Any]:
        out = asdict(self)
        out["grid"] = list(self.grid) if self.grid else None
        if self.camera_jitter is None:
            del out["camera_jitter"]  # datasets built before the option keep their digest
        elif self.camera_jitter.probability == 1.0:
            del out["camera_jitter"]["probability"]  # likewise
        return out


@dataclass
class PoseTrack:
    """What the targets of one episode are drawn from."""

    images: dict[str, np.ndarray]  # camera -> (T, H, W, 3) uint8
    cameras: dict[str, tuple[np.ndarray, np.ndarray]]  # camera -> (T, 3, 3), (T, 4, 4) OpenCV
    joint_pos: np.ndarray  # (T, 7, 3)
    gripper_pos: np.ndarray  # (T, 3)
    gripper_open: np.ndarray  # (T,)


def pose_track(episode: Any, cameras: Sequence[str] | None, where: str) -> PoseTrack:
    """Camera matrices, joint poses and images of one episode (tabletop or RLBench keys)."""
    obs, extras = episode.obs, episode.extras

    def need(table: dict, key: str, why: str) -> np.ndarray:
        if key not in table:
            raise StemobError(f"{where}: key {key!r} is missing; {why}")
        return np.asarray(table[key])

    rlbench = "joint_poses" in extras or any(k.endswith("_camera_extrinsics") for k in extras)
    if rlbench:
        found = sorted(
            k[: -len("_camera_extrinsics")] for k in extras if k.endswith("_camera_extrinsics")
        )
    else:
        found = sorted(k[: -len("_extrinsics")] for k in extras if k.endswith("_extrinsics"))
    cams = (
        list(cameras) if cameras else [c for c in found if f"{c}_image" in obs or f"{c}_rgb" in obs]
    )
    if not cams:
        raise StemobError(
            f"{where}: no camera has both images and camera matrices (extras "
            f"'<cam>_intrinsics'/'<cam>_extrinsics'); GENIMA's targets are drawn with them"
        )
    images, matrices = {}, {}
    for cam in cams:
        image_key = next((k for k in (f"{cam}_image", f"{cam}_rgb") if k in obs), None)
        if image_key is None:
            raise StemobError(
                f"{where}: camera {cam!r} has no images (key '{cam}_image' or '{cam}_rgb'); "
                f"the episode has {sorted(obs)}"
            )
        images[cam] = np.asarray(obs[image_key])
        if rlbench:
            k = need(extras, f"{cam}_camera_intrinsics", "the targets are drawn with the camera's")
            e = need(extras, f"{cam}_camera_extrinsics", "the targets are drawn with the camera's")
            matrices[cam] = pyrep_camera_to_opencv(k, e)
        else:
            k = need(extras, f"{cam}_intrinsics", f"camera {cam!r}'s intrinsics draw the targets")
            e = need(extras, f"{cam}_extrinsics", f"camera {cam!r}'s extrinsics draw the targets")
            matrices[cam] = (k.astype(np.float64), e.astype(np.float64))
    if rlbench:
        poses = need(extras, "joint_poses", "RLBench writes it from 8fc31bfa on (joint spheres)")
        joint_pos = poses.reshape(len(episode), -1, 7)[..., :3]
        gripper_pos = need(obs, "gripper_pose", "the gripper sphere sits at it")[:, :3]
    else:
        joint_pos = need(extras, "joint_world_pos", "the joint spheres sit at the joints")
        gripper_pos = need(extras, "gripper_world_pos", "the gripper sphere sits at it")
    gripper_open = need(obs, "gripper_open", "it colours the gripper sphere").reshape(len(episode))
    return PoseTrack(images, matrices, np.asarray(joint_pos, float), np.asarray(gripper_pos, float),
                     np.asarray(gripper_open, float))  # fmt: skip


@functools.lru_cache(maxsize=8)
def _pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:height, 0:width]
    ys.flags.writeable = xs.flags.writeable = False
    return ys, xs


def procedural_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random background: smooth colour noise, stripes or checks in random colours."""
    kind = int(rng.integers(3))
    if kind == 0:
        coarse = rng.uniform(0, 255, (int(rng.integers(2, 9)), int(rng.integers(2, 9)), 3))
        ys = np.linspace(0, coarse.shape[0] - 1, height)
        xs = np.linspace(0, coarse.shape[1] - 1, width)
        y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
        y1, x1 = np.minimum(y0 + 1, coarse.shape[0] - 1), np.minimum(x0 + 1, coarse.shape[1] - 1)
        fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
        across = coarse[:, x0] * (1 - fx) + coarse[:, x1] * fx  # each coarse row, x interpolated
        top, bottom = across[y0], across[y1]
        return (top * (1 - fy) + bottom * fy).astype(np.uint8)
    a, b = rng.integers(0, 256, 3).astype(np.uint8), rng.integers(0, 256, 3).astype(np.uint8)
    period = int(rng.integers(4, 24))
    ys, xs = _pixel_grid(height, width)
    if kind == 1:
        angle = rng.uniform(0, np.pi)
        band = ((xs * np.cos(angle) + ys * np.sin(angle)) // period).astype(int) % 2
    else:
        band = (ys // period + xs // period) % 2
    return np.where(band[..., None] == 1, a, b).astype(np.uint8)


BACKGROUNDS = ("scene", "texture")
"""What a GENIMA controller sees behind the spheres at test time: the scene as drawn (GENIMA)
or a random texture, as in its training inputs (:func:`on_random_texture`)."""


def check_background(value: Any, option: str) -> str:
    """``value`` if it is one of :data:`BACKGROUNDS`, else one error naming ``option``."""
    if value not in BACKGROUNDS:
        raise StemobError(f"{option}: expected one of {list(BACKGROUNDS)}, got {value!r}")
    return str(value)


def on_random_texture(
    drawn: np.ndarray, mask: np.ndarray, seed: int, view: int = 0, alpha_min: float = 0.7
) -> np.ndarray:
    """The spheres of ``drawn`` (pixels ``mask``) on a procedural texture, blended as in the
    controller's training inputs: the scene behind them is gone (``background=texture``). The
    texture is seeded by the drawing's ``seed`` and the ``view``'s index (up to 16 views)."""
    rng = np.random.default_rng(seed * 16 + view)
    texture = procedural_texture(rng, drawn.shape[0], drawn.shape[1])
    return random_background(drawn, mask, texture, rng, alpha_min)


class _Textures:
    """Backgrounds from a folder of images (resized), or procedural ones."""

    def __init__(self, folder: str | None) -> None:
        self.files: list[Path] = []
        if folder:
            self.files = sorted(
                p for p in Path(folder).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")
            )
            if not self.files:
                raise StemobError(f"textures folder {folder}: no .png or .jpg images")

    def draw(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        if not self.files:
            return procedural_texture(rng, height, width)
        from PIL import Image

        with Image.open(self.files[int(rng.integers(len(self.files)))]) as image:
            return np.asarray(image.convert("RGB").resize((width, height), Image.BILINEAR))


def target_index(t: int, length: int, horizon: int) -> int:
    """The frame whose pose is drawn at frame ``t``: ``min(t + horizon, length - 2)``."""
    return max(0, min(t + horizon, length - 2))


def build_episode(
    episode: Any,
    config: GenimaDatasetConfig,
    textures: _Textures | None,
    demo_seed: int,
    where: str,
) -> dict[str, np.ndarray]:
    """The new observation arrays of one episode (see the module docstring); ``textures`` default
    to the config's."""
    textures = _Textures(config.textures) if textures is None else textures
    length = len(episode)
    if config.horizon >= length:
        raise StemobError(
            f"{where}: horizon {config.horizon} is not shorter than the episode ({length} steps)"
        )
    track = pose_track(episode, config.cameras, where)
    cams = list(track.images)
    jitter = config.camera_jitter
    if jitter is not None and set(jitter.cameras) - set(cams):
        raise StemobError(
            f"{where}: camera_jitter names camera(s) {sorted(set(jitter.cameras) - set(cams))} "
            f"that are not drawn (drawn: {cams})"
        )
    grid = config.grid or (1, len(cams))
    rng = np.random.default_rng([config.seed, demo_seed])
    moves = np.random.default_rng([config.seed, demo_seed, 1])  # backgrounds stay as without
    out: dict[str, list[np.ndarray]] = {"tiled_rgb": [], "tiled_target": []}
    out.update({f"{c}_target": [] for c in cams})
    targets = np.array([target_index(t, length, config.horizon) for t in range(length)])
    for t in range(length):
        j = targets[t]
        frames, drawn = [], []
        for cam in cams:
            k, e = track.cameras[cam][0][t], track.cameras[cam][1][t]
            spheres = target_spheres(
                track.gripper_pos[j], track.gripper_open[j], track.joint_pos[j], cam, config.style
            )
            frame = track.images[cam][t]
            image, mask = draw_spheres(frame, spheres, k, e)
            seen, seen_mask = image, mask  # what the controller's input is drawn from
            if jitter is not None and cam in jitter.cameras and jitter.moves_frame(moves):
                seen, seen_mask = draw_spheres(frame, spheres, k, jitter.move(e, moves))
            texture = textures.draw(rng, *frame.shape[:2])
            out[f"{cam}_target"].append(
                random_background(seen, seen_mask, texture, rng, config.alpha_min)
            )
            frames.append(frame)
            drawn.append(image)
        out["tiled_rgb"].append(tile(frames, grid))
        out["tiled_target"].append(tile(drawn, grid))
    arrays = {k: np.stack(v) for k, v in out.items()}
    arrays["target_index"] = targets
    return arrays


def output_path(source: str | Path, config: GenimaDatasetConfig) -> Path:
    """``<source stem>.genima-<digest of the config>.hdf5`` beside the source."""
    source = Path(source)
    digest = hashlib.sha256(json.dumps(config.record(), sort_keys=True).encode()).hexdigest()[:12]
    stem = source.stem if source.is_file() else source.name
    parent = source.parent
    return parent / f"{stem}.genima-{digest}.hdf5"


def build_dataset(
    source: str | Path,
    config: GenimaDatasetConfig | None = None,
    out: str | Path | None = None,
    reader: str = "auto",
    progress: bool = True,
) -> Path:
    """Build (or resume, or reuse) the GENIMA dataset of ``source``; returns its path."""
    import h5py
    from tqdm import tqdm

    from stemob.data.detect import open_reader
    from stemob.data.robomimic import write_demo_group

    config = config or GenimaDatasetConfig()
    source = Path(source)
    if not source.exists():
        raise StemobError(f"{source}: no such dataset")
    episodes = open_reader(source, reader)
    target = Path(out) if out else output_path(source, config)
    record = json.dumps(
        {"version": FORMAT_VERSION, "config": config.record(), "source": str(source)}
    )
    if target.exists():
        with h5py.File(target, "r") as h5:
            if h5["data"].attrs.get("genima") != record:
                raise StemobError(
                    f"{target} exists and was built with other settings or another source; "
                    "remove it or pass --out"
                )
        return target
    partial = target.with_name(target.name + ".partial")
    textures = _Textures(config.textures)
    env_args = getattr(episodes, "env_args", None) or {"env_name": "", "type": 0, "env_kwargs": {}}
    started, frames = time.perf_counter(), 0
    if partial.exists():
        with h5py.File(partial, "r") as h5:
            data = h5.get("data")
            other = data is not None and data.attrs.get("genima", record) != record
            done = data is not None and any(g.attrs.get("genima_complete") for g in data.values())
        if other and done:
            raise StemobError(f"{partial}: a partial build with other settings; remove it")
        if other:  # our own scratch, nothing finished in it (e.g. a refused build)
            partial.unlink()
    with h5py.File(partial, "a") as h5:
        data = h5.require_group("data")
        data.attrs["genima"] = record
        bar = tqdm(range(len(episodes)), desc=f"GENIMA targets {source.name}", unit="demo",
                   disable=not progress)  # fmt: skip
        for index in bar:
            name = f"demo_{index}"
            if name in data and data[name].attrs.get("genima_complete", False):
                continue
            if name in data:
                del data[name]  # half written by a killed run
            episode = episodes.read(index)
            where = f"{source}: episode {episodes.names[index]!r}"
            arrays = build_episode(episode, config, textures, index, where)
            episode.extras = {"target_index": arrays.pop("target_index")}
            keep = {
                k: v for k, v in episode.obs.items() if k in ("joint_positions", "gripper_open")
            }
            episode.obs = {**arrays, **keep}
            group = data.create_group(name)
            write_demo_group(group, episode, next_obs=False)
            group.attrs["genima_complete"] = True
            frames += len(episode)
            bar.set_postfix(fps=f"{frames / (time.perf_counter() - started):.0f}")
        data.attrs["total"] = int(sum(data[n].attrs["num_samples"] for n in data))
        data.attrs["env_args"] = json.dumps(env_args)
    os.replace(partial, target)
    return target


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stemob-genima-dataset", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--dataset", required=True, help="demonstrations (any stemob format)")
    parser.add_argument("--out", default=None, help="output file (default: beside the source)")
    parser.add_argument("--reader", default="auto")
    parser.add_argument("--cameras", nargs="+", default=None)
    parser.add_argument("--grid", nargs=2, type=int, default=None, metavar=("ROWS", "COLS"))
    parser.add_argument("--horizon", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--textures", default=None, help="folder of background images")
    parser.add_argument(
        "--radius", type=float, default=0.01, help="sphere radius (m) before scales"
    )
    parser.add_argument("--figure", default=None, help="also write a PNG of a few frames")
    parser.add_argument("--video", default=None, help="also write an mp4 of the first episode")
    parser.add_argument("--quiet", action="store_true")
    return parser


def run(argv: Sequence[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    config = GenimaDatasetConfig(
        cameras=args.cameras, grid=tuple(args.grid) if args.grid else None, horizon=args.horizon,
        seed=args.seed, textures=args.textures, style=TargetStyle(radius=args.radius),
    )  # fmt: skip
    path = build_dataset(args.dataset, config, args.out, args.reader, progress=not args.quiet)
    print(f"GENIMA dataset: {path}")
    if args.figure or args.video:
        from stemob.genima import preview

        if args.figure:
            print(f"figure: {preview.write_figure(path, args.figure)}")
        if args.video:
            print(f"video: {preview.write_video(path, args.video)}")
    return path


def main(argv: Sequence[str] | None = None) -> None:
    """``stemob-genima-dataset``: exit status 2 with one line for bad input."""
    raise SystemExit(run_cli(run, argv, "stemob-genima-dataset"))
