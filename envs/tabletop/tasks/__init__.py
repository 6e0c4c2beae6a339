"""The tabletop tasks, by name."""

from __future__ import annotations

from envs.tabletop.tasks.base import Task
from envs.tabletop.tasks.lift_cube import LiftCube
from envs.tabletop.tasks.open_drawer import OpenDrawer
from envs.tabletop.tasks.push_to_target import PushToTarget
from envs.tabletop.tasks.put_in_bowl import PutInBowl
from stemob.errors import StemobError

TASKS: dict[str, type[Task]] = {t.name: t for t in (LiftCube, PushToTarget, OpenDrawer, PutInBowl)}


def make_task(name: str) -> Task:
    """A fresh task object; unknown names raise a StemobError listing the known ones."""
    if name not in TASKS:
        raise StemobError(f"unknown task {name!r} (option 'task'): expected one of {sorted(TASKS)}")
    return TASKS[name]()
