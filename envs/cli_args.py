"""``key=value`` command-line arguments (hydra-like) for the env tools."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stemob.errors import StemobError


def parse_kv(argv: Sequence[str], spec: dict[str, tuple[type, Any]]) -> dict[str, Any]:
    """Parse ``key=value`` arguments against ``spec`` (key -> (type, default; ... = required))."""
    out: dict[str, Any] = {}
    for arg in argv:
        if "=" not in arg:
            raise StemobError(f"argument {arg!r}: expected key=value (keys: {sorted(spec)})")
        key, value = arg.split("=", 1)
        if key not in spec:
            raise StemobError(f"unknown option {key!r}: expected one of {sorted(spec)}")
        kind = spec[key][0]
        try:
            if kind is bool:
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                out[key] = value.lower() in ("true", "1", "yes")
            else:
                out[key] = kind(value)
        except ValueError:
            raise StemobError(f"option {key}={value!r}: expected {kind.__name__}") from None
    for key, (_, default) in spec.items():
        if key not in out:
            if default is ...:
                raise StemobError(f"missing option {key}=...")
            out[key] = default
    return out
