"""Replay a recorded robosuite file through robomimic's own environment wrapper.

    MUJOCO_GL=egl python tools/check_robomimic_env.py --robomimic /path/to/robomimic \
        --dataset data/robosuite_lift/demos_200.hdf5 [--demos 5]   # any robomimic robosuite file

robomimic's PyPI release (0.3.0) still imports ``mujoco_py`` in ``robomimic.envs.env_robosuite``,
so the check needs a robomimic source checkout (master supports robosuite 1.5; checked at
d309eae). Per demo: ``EnvUtils.create_env_from_metadata`` from the file's ``env_args``,
``reset_to({"states": states[0], "model": model_file})``, the largest difference between the
restored and the recorded state, then the actions the env executed (``extras/executed_actions``
in DART-style files, else ``actions``) and whether robomimic's ``is_success`` reports the task
done; DART-style demos recorded before ``executed_actions`` existed are restored, not replayed.
Exit status 1 when a demo does not restore or replay. ``egl_probe`` (which robomimic imports
only to pick a GPU for rendering) is replaced by an empty device list where it is not installed.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import h5py
import numpy as np

from stemob.data.robomimic import demo_sort_key, stemob_attrs


def _import_robomimic(checkout: str) -> types.ModuleType:
    sys.path.insert(0, str(Path(checkout).resolve()))
    try:
        import egl_probe  # noqa: F401
    except ImportError:  # a CPU machine: robomimic would find no EGL GPU device anyway
        sys.modules["egl_probe"] = types.SimpleNamespace(get_available_devices=lambda: [])
    import robomimic.utils.env_utils as env_utils
    import robomimic.utils.obs_utils as obs_utils

    obs_utils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": ["robot0_eef_pos"]}})
    return env_utils


def check(dataset: str | Path, env_utils: types.ModuleType, demos: int) -> list[dict]:
    """Restore and replay the first ``demos`` demos; one result per demo (``success`` None: a
    DART-style demo recorded without its executed actions, which nothing can replay)."""
    with h5py.File(dataset, "r") as f:
        env_meta = json.loads(
            f["data"].attrs["env_args"]
        )  # FileUtils.get_env_metadata_from_dataset
        names = sorted(f["data"], key=demo_sort_key)[:demos]
        episodes = []
        for name in names:
            demo = f["data"][name]
            if "executed_actions" in demo.get("extras", {}):
                source = "extras/executed_actions"
            else:
                noise = float(stemob_attrs(demo).get("action_noise") or 0.0)  # 0: not ours
                source = "actions" if noise == 0 else None
            actions = demo[source][:] if source else None
            episodes.append((name, demo["states"][:], actions, source,
                             demo.attrs.get("model_file")))  # fmt: skip
    env = env_utils.create_env_from_metadata(env_meta=env_meta, render=False,
                                             render_offscreen=False, use_image_obs=False)  # fmt: skip
    results = []
    for name, states, actions, source, model in episodes:
        env.reset()
        env.reset_to({"states": states[0], **({"model": model} if model is not None else {})})
        error = float(np.abs(env.get_state()["states"] - states[0]).max())
        success = None
        if actions is not None:
            success = False
            for action in actions:
                env.step(action)
                success = success or bool(env.is_success()["task"])
        results.append({"demo": name, "state_error": error, "replayed": source, "success": success})
        outcome = ("not replayed: a DART-style demo recorded without extras/executed_actions (its "
                   "actions are the expert's labels; re-record it)") if success is None else (
                   f"{source} replay {'succeeds' if success else 'FAILS'}")  # fmt: skip
        print(f"{name}: restored state max error {error:.2e}, {outcome}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--robomimic", required=True, help="a robomimic source checkout")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--demos", type=int, default=5)
    args = parser.parse_args()
    results = check(args.dataset, _import_robomimic(args.robomimic), args.demos)
    ok = all(r["success"] is not False and r["state_error"] < 1e-6 for r in results)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
