"""Coarser visual meshes for software rendering: vertex clustering on a compiled MuJoCo model.

On a CPU (llvmpipe) most of a robosuite frame is vertex work on the Panda's visual meshes (168 k
faces on Lift), about the same at 84 px as at 512 px. :func:`cluster_visual_meshes` snaps the
vertices of every mesh that only non-colliding geoms use onto a grid of ``cell`` metres, keeps
one original vertex per occupied cell, and rewrites the faces in place (``mesh_face``,
``mesh_facenormal``, ``mesh_facetexcoord``, ``mesh_facenum``). Vertices, collision meshes,
convex hulls, inertia and physics are untouched; only what the renderer draws changes, and only
once a GL context is (re)made from the model (``mjr_makeContext`` uploads the faces).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stemob.errors import StemobError


@dataclass(frozen=True)
class ClusterStats:
    """Faces before and after :func:`cluster_visual_meshes`, over the meshes it changed."""

    meshes: int
    faces_before: int
    faces_after: int


def checked_cell(cell: float) -> float:
    """``cell`` as a float, or a :class:`StemobError` naming ``visual_mesh_cell``."""
    if not float(cell) > 0:
        raise StemobError(f"visual_mesh_cell must be a positive length in metres, got {cell}")
    return float(cell)


def visual_only_meshes(model: Any) -> list[int]:
    """Ids of the meshes that every geom using them leaves out of collisions."""
    import mujoco

    used: dict[int, bool] = {}
    for g in range(model.ngeom):
        if model.geom_type[g] != mujoco.mjtGeom.mjGEOM_MESH:
            continue
        mesh = int(model.geom_dataid[g])
        visual = model.geom_contype[g] == 0 and model.geom_conaffinity[g] == 0
        used[mesh] = used.get(mesh, True) and bool(visual)
    return sorted(m for m, visual in used.items() if visual)


def _corner_map(faces: np.ndarray, attribute: np.ndarray, nvert: int) -> np.ndarray:
    """Per vertex, the attribute index (normal, texcoord) of one face corner that uses it."""
    out = np.zeros(nvert, np.int64)
    out[faces.reshape(-1)] = attribute.reshape(-1)  # any corner of the vertex; last one wins
    return out


def cluster_faces(verts: np.ndarray, faces: np.ndarray, cell: float) -> np.ndarray:
    """Faces of ``verts`` / ``faces`` after clustering the vertices on a ``cell`` grid.

    The new faces index the original vertices (one per occupied cell, the first in vertex
    order), in the original faces' order and orientation. Faces that collapse (two corners in
    one cell) and repeats of the same triangle are dropped."""
    keys = np.floor(verts / cell).astype(np.int64)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    representative = first[inverse.reshape(-1)]
    mapped = representative[faces]
    a, b, c = mapped[:, 0], mapped[:, 1], mapped[:, 2]
    alive = np.flatnonzero((a != b) & (b != c) & (a != c))
    _, unique = np.unique(np.sort(mapped[alive], axis=1), axis=0, return_index=True)
    return mapped[alive[np.sort(unique)]]


def cluster_visual_meshes(model: Any, cell: float) -> ClusterStats:
    """Replace the faces of every visual-only mesh of ``model`` by their clustered version
    (:func:`cluster_faces` on a ``cell``-metre grid, in the mesh's own frame), in place."""
    cell = checked_cell(cell)
    meshes = visual_only_meshes(model)
    before = after = 0
    for m in meshes:
        vadr, nvert = int(model.mesh_vertadr[m]), int(model.mesh_vertnum[m])
        fadr, nface = int(model.mesh_faceadr[m]), int(model.mesh_facenum[m])
        faces = np.asarray(model.mesh_face[fadr : fadr + nface], np.int64)
        new_faces = cluster_faces(np.asarray(model.mesh_vert[vadr : vadr + nvert]), faces, cell)
        if len(new_faces) == 0:  # the whole mesh fits in one cell: keep it as it is
            before, after = before + nface, after + nface
            continue
        normals = _corner_map(faces, np.asarray(model.mesh_facenormal[fadr : fadr + nface]), nvert)
        count = len(new_faces)
        model.mesh_face[fadr : fadr + count] = new_faces
        model.mesh_facenormal[fadr : fadr + count] = normals[new_faces]
        if model.mesh_texcoordnum[m] > 0:
            tex = np.asarray(model.mesh_facetexcoord[fadr : fadr + nface])
            model.mesh_facetexcoord[fadr : fadr + count] = _corner_map(faces, tex, nvert)[new_faces]
        model.mesh_facenum[m] = count
        before, after = before + nface, after + count
    return ClusterStats(len(meshes), before, after)
