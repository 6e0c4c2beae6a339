"""Evaluation results: per-episode records and per-factor summaries (success rate, stderr)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class EpisodeRecord:
    """One evaluation episode.

    Attributes:
        index: episode number within its factor (seed = base_seed + index).
        seed: the reset seed.
        success: the task was done at some step.
        length: env steps taken.
        reward: summed reward.
        error: the exception message when the episode raised (it then counts as no outcome).
        video: path of its mp4, if recorded.
    """

    index: int
    seed: int
    success: bool = False
    length: int = 0
    reward: float = 0.0
    error: str | None = None
    video: str | None = None


@dataclass
class FactorResult:
    """The episodes of one evaluation setting (a perturbation factor or the training setting).

    ``rate`` and ``stderr`` (binomial, ``sqrt(p (1 - p) / n)``) are over the ``completed``
    episodes: those that did not raise; ``errors`` counts the others.
    """

    name: str
    records: list[EpisodeRecord] = field(default_factory=list)
    perturbation: str | None = None
    wall_s: float = 0.0

    @property
    def episodes(self) -> int:
        return len(self.records)

    @property
    def errors(self) -> int:
        return sum(r.error is not None for r in self.records)

    @property
    def completed(self) -> int:
        return self.episodes - self.errors

    @property
    def successes(self) -> int:
        return sum(r.success for r in self.records if r.error is None)

    @property
    def rate(self) -> float:
        return self.successes / self.completed if self.completed else 0.0

    @property
    def stderr(self) -> float:
        n = self.completed
        return math.sqrt(self.rate * (1.0 - self.rate) / n) if n else 0.0

    @property
    def mean_length(self) -> float:
        lengths = [r.length for r in self.records if r.error is None]
        return sum(lengths) / len(lengths) if lengths else 0.0

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.records]

    @property
    def videos(self) -> list[str]:
        return [r.video for r in self.records if r.video]

    @property
    def error_messages(self) -> list[str]:
        return [f"seed {r.seed}: {r.error}" for r in self.records if r.error is not None]

    def summary(self) -> dict[str, Any]:
        """The numbers of the report (JSON-serialisable)."""
        return {
            "successes": self.successes,
            "episodes": self.episodes,
            "completed": self.completed,
            "errors": self.errors,
            "rate": self.rate,
            "stderr": self.stderr,
            "mean_length": self.mean_length,
            "perturbation": self.perturbation,
            "wall_s": self.wall_s,
            "seeds": self.seeds,
            "error_messages": self.error_messages,
            "videos": self.videos,
        }

    def to_dict(self) -> dict[str, Any]:
        """Summary plus every episode record."""
        return {
            "name": self.name,
            **self.summary(),
            "records": [dataclasses.asdict(r) for r in self.records],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FactorResult:
        """Rebuild from :meth:`to_dict` output (e.g. a ``results.json`` entry)."""
        return cls(
            name=str(data["name"]),
            records=[EpisodeRecord(**r) for r in data.get("records", [])],
            perturbation=data.get("perturbation"),
            wall_s=float(data.get("wall_s", 0.0)),
        )


def mean_over(results: Sequence[FactorResult]) -> tuple[float, float]:
    """Mean success rate of several settings and its standard error ``sqrt(sum se^2) / m``."""
    used = [r for r in results if r.completed]
    if not used:
        return 0.0, 0.0
    mean = sum(r.rate for r in used) / len(used)
    return mean, math.sqrt(sum(r.stderr**2 for r in used)) / len(used)
