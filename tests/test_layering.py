"""The project's import graph keeps DESIGN.md's one-way dependencies (read from the source, so a
lazy import inside a function counts as much as one at the top)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("stemob", "policies", "envs")

# what each part may import of the project (besides itself)
ALLOWED = {
    "stemob.errors": set(),
    "stemob.inversion": {"stemob.errors"},
    "stemob.genima": {
        "stemob.errors",
        "stemob.data",
        "stemob.inversion",
    },  # targets; the drawer loads diffusers models
    "stemob.data": {"stemob.errors", "stemob.inversion"},
    "policies": {"stemob.errors", "stemob.inversion"},
    "envs": {"stemob.errors", "stemob.inversion", "stemob.data"},
    "stemob.priors": {"stemob.errors", "stemob.inversion", "envs"},  # renders training images
    "stemob.demo": {"stemob.errors", "stemob.inversion"},
    "stemob.deploy": {
        "stemob.errors",
        "stemob.inversion",
        "policies",
        "stemob.genima",
    },  # GENIMA's painter
    "stemob.training": {
        "stemob.errors",
        "stemob.inversion",
        "stemob.data",
        "stemob.genima",
        "policies",
        "envs",
    },  # fmt: skip
    "stemob.evaluation": {
        "stemob.errors",
        "stemob.inversion",
        "stemob.data",
        "stemob.deploy",
        "stemob.genima",  # the oracle targets of GENIMA's controller
        "stemob.training",
        "policies",
        "envs",
    },
    "stemob.__init__": {"stemob.errors"},
}


def _part(dotted: str) -> str:
    """``stemob.x.y`` -> ``stemob.x``; ``policies.act.z`` -> ``policies``."""
    parts = dotted.split(".")
    return ".".join(parts[:2]) if parts[0] == "stemob" else parts[0]


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def test_every_part_imports_only_what_design_allows():
    broken = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            part = _part(module)
            assert part in ALLOWED, f"{module}: part {part!r} has no rule in ALLOWED"
            for name in _imports(path):
                target = _part(name)
                if target != part and target not in ALLOWED[part]:
                    broken.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not broken, "imports against DESIGN.md's dependency direction:\n" + "\n".join(broken)


def test_the_rules_catch_an_upward_import(tmp_path):
    """The checker itself: an inversion module importing the policies is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from policies.base import load_policy\n")
    assert _imports(bad) == {"policies.base"}
    assert _part("policies.base") not in ALLOWED["stemob.inversion"]
