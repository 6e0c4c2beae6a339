"""Coarser visual meshes (envs/robosuite/meshes.py): clustering on a synthetic grid, and on
robosuite's Lift: fewer faces drawn, collision meshes and physics untouched, nearly the same
frames. The robosuite part is skipped where the ``robosuite`` extra is not installed."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from envs.robosuite.meshes import cluster_faces
from stemob.errors import StemobError


def grid_mesh(n: int, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """An n x n vertex grid in the z=0 plane, two triangles per square."""
    ys, xs = np.mgrid[0:n, 0:n]
    verts = np.stack([xs.ravel() * spacing, ys.ravel() * spacing, np.zeros(n * n)], 1)
    faces = []
    for r in range(n - 1):
        for c in range(n - 1):
            i = r * n + c
            faces += [(i, i + 1, i + n), (i + 1, i + n + 1, i + n)]
    return verts, np.asarray(faces)


def test_clustering_merges_vertices_and_drops_collapsed_faces():
    verts, faces = grid_mesh(21, 0.001)  # 2 cm square, 1 mm spacing, 800 faces
    coarse = cluster_faces(verts, faces, 0.004)
    assert 0 < len(coarse) < len(faces) / 8
    a, b, c = coarse.T
    assert np.all((a != b) & (b != c) & (a != c)), "a degenerate face survived"
    assert len({tuple(sorted(f)) for f in coarse.tolist()}) == len(coarse), "a repeated face"
    kept = np.unique(coarse)
    assert len(np.unique(np.floor(verts[kept] / 0.004), axis=0)) == len(kept)  # one per cell
    normal = np.cross(verts[b] - verts[a], verts[c] - verts[a])[:, 2]
    assert np.all(normal > 0), "a face turned over"  # the grid's faces all face +z
    # a cell finer than the spacing leaves the mesh as it is
    np.testing.assert_array_equal(cluster_faces(verts, faces, 0.0005), faces)


needs_robosuite = pytest.mark.skipif(
    importlib.util.find_spec("robosuite") is None, reason="the robosuite extra is not installed"
)


PHYSICS = ("body_mass", "body_inertia", "geom_size", "mesh_vert", "mesh_graph", "mesh_normal")
"""Model arrays the clustering must leave as they are (with every collision mesh's faces)."""


def reset_view(cell: float | None) -> tuple[np.ndarray, dict[str, np.ndarray], list[int], object]:
    """The agentview frame after ``reset(seed=0)``, physics arrays, visual meshes, stats."""
    from envs.robosuite.env import RobosuiteEnv
    from envs.robosuite.meshes import visual_only_meshes

    env = RobosuiteEnv("Lift", {"robots": "Panda"}, cameras=("agentview",), image_size=64,
                       visual_mesh_cell=cell)  # fmt: skip
    obs, _ = env.reset(seed=0)
    model = env.env.sim.model._model
    arrays = {k: getattr(model, k).copy() for k in (*PHYSICS, "mesh_facenum")}
    arrays["state"] = env.get_state()
    visual, stats = visual_only_meshes(model), env.mesh_stats
    env.close()
    return obs["agentview_image"], arrays, visual, stats


@needs_robosuite
def test_lift_renders_fewer_faces_with_the_same_physics_and_nearly_the_same_frame():
    full, full_arrays, visual, none = reset_view(None)
    coarse, coarse_arrays, _, stats = reset_view(0.005)
    assert none is None
    assert stats.meshes == len(visual) > 0
    assert stats.faces_after < 0.5 * stats.faces_before
    for name in (*PHYSICS, "state"):
        np.testing.assert_array_equal(coarse_arrays[name], full_arrays[name], err_msg=name)
    faces = full_arrays["mesh_facenum"]
    collision = [m for m in range(len(faces)) if m not in set(visual)]
    assert collision, "Lift has collision meshes"
    np.testing.assert_array_equal(coarse_arrays["mesh_facenum"][collision], faces[collision])
    assert np.all(coarse_arrays["mesh_facenum"][visual] <= faces[visual])
    diff = np.abs(coarse.astype(int) - full.astype(int))
    assert 0 < diff.mean() < 2.0, f"mean pixel change {diff.mean():.2f} / 255"


@needs_robosuite
def test_a_bad_cell_is_refused_by_name():
    from envs.robosuite.env import RobosuiteEnv

    with pytest.raises(StemobError, match="visual_mesh_cell"):
        RobosuiteEnv("Lift", {"robots": "Panda"}, cameras=("agentview",), visual_mesh_cell=0)
