"""stemob: Stem-OB diffusion inversion of observations, and visual imitation learning around it."""

from stemob.errors import StemobError

__all__ = ["StemobError", "__version__"]
__version__ = "0.1.0"
