"""ACT (Zhao et al., RSS 2023): config, transformer, temporal ensembling and the policy."""

from policies.act.config import ACTConfig, paper_config, small_config
from policies.act.ensemble import TemporalEnsembler
from policies.act.policy import ACTPolicy

__all__ = ["ACTConfig", "ACTPolicy", "TemporalEnsembler", "paper_config", "small_config"]
