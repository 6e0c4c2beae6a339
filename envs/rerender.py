"""Re-render recorded demos from their simulator states (other perturbation, cameras or size).

Works for the tabletop suite and for robosuite files (robomimic's own, or recorded here): the
output also holds every frame's camera matrices and arm joint / gripper world poses in
``extras/``, which is what GENIMA's targets are drawn from (``stemob-genima-dataset``).

    python -m envs.rerender in=demos.hdf5 out=demos_eval.hdf5 [perturbation=PATH|none]
        [cameras=front,overhead] [image_size=128]

Each demo is reset with its recorded seed (so perturbations draw the appearance of that
episode), then every stored state is restored and rendered. Actions, rewards, dones and states
are copied unchanged; masks are kept.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from envs.cli_args import parse_kv
from envs.record import _extras, env_args_of, make_env_from_args
from stemob.errors import StemobError

KEPT_EXTRAS = ("executed_actions",)
"""Extras copied from the source rather than re-rendered: the actions a DART-style recording's
env executed (``envs.record.run_episode``), which the states alone do not give back."""


def rerender(
    src: str | Path,
    out: str | Path,
    perturbation: str | None = "",
    cameras: Sequence[str] | None = None,
    image_size: int | None = None,
    next_obs: bool = True,
) -> Path:
    """Write a copy of ``src`` whose observations are rendered again with the given overrides."""
    import h5py

    from stemob.data.episodes import Episode
    from stemob.data.robomimic import demo_sort_key, stemob_attrs, write_robomimic

    src = Path(src)
    if not src.is_file():
        raise StemobError(f"input file not found: {src}")
    h5 = h5py.File(src, "r")
    try:
        if "data" not in h5 or "env_args" not in h5["data"].attrs:
            raise StemobError(f"{src}: missing data attrs env_args")
        env_args = json.loads(h5["data"].attrs["env_args"])
        overrides: dict[str, Any] = {}
        if perturbation:
            overrides["perturbation"] = None if perturbation == "none" else perturbation
        if cameras:
            overrides["cameras"] = tuple(cameras)
        if image_size:
            overrides["image_size"] = int(image_size)
        env = make_env_from_args(env_args, **overrides)
        names = sorted(h5["data"].keys(), key=demo_sort_key)
        masks = {k: [n.decode() for n in h5["mask"][k][()]] for k in h5.get("mask", {})}

        def generate() -> Iterator[Episode]:
            for name in names:
                g = h5["data"][name]
                attrs = stemob_attrs(g)
                attrs.pop("episode_name", None)
                env.reset(seed=int(attrs.get("seed", 0)))
                obs_seq: dict[str, list] = {}
                extras: dict[str, list] = {}
                for state in g["states"][()]:
                    env.set_state(state)
                    obs, info = env.observe()
                    for k, v in obs.items():
                        obs_seq.setdefault(k, []).append(v)
                    for k, v in _extras(env, info).items():
                        extras.setdefault(k, []).append(v)
                attrs["model_file"] = env.xml
                for k in KEPT_EXTRAS:
                    if k in g.get("extras", {}):
                        extras[k] = list(g[f"extras/{k}"][()])
                yield Episode(
                    obs={k: np.stack(v) for k, v in obs_seq.items()},
                    actions=g["actions"][()],
                    rewards=g["rewards"][()],
                    dones=g["dones"][()],
                    states=g["states"][()],
                    extras={k: np.stack(v) for k, v in extras.items()},
                    attrs=attrs,
                    name=name,
                )

        # Re-map mask names: write_robomimic names demos by position.
        new = {n: f"demo_{i}" for i, n in enumerate(names)}
        masks = {k: [new[n] for n in v if n in new] for k, v in masks.items()}
        try:
            return write_robomimic(
                out,
                generate(),
                env_args=env_args_of(env),
                next_obs=next_obs,
                masks=masks,
                compression="lzf",
                total=len(names),
                progress=True,
            )
        finally:
            env.close()
    finally:
        h5.close()


SPEC: dict[str, tuple[type, Any]] = {
    "in": (str, ...), "out": (str, ...), "perturbation": (str, ""), "cameras": (str, ""),
    "image_size": (int, 0), "next_obs": (bool, True),
}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; bad input prints one line and exits with status 2."""
    try:
        a = parse_kv(sys.argv[1:] if argv is None else argv, SPEC)
        cams = tuple(c for c in a["cameras"].split(",") if c) or None
        path = rerender(
            a["in"], a["out"], a["perturbation"], cams, a["image_size"] or None, a["next_obs"]
        )
    except StemobError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(path)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
