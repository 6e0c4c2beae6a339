"""The common policy interface, its base config, the registry and checkpoints.

A policy consumes the batch contract of ``shared/DESIGN.md``: ``obs`` = ``{key: (B, T_obs, ...)}``
(uint8 ``(B, T_obs, 3, H, W)`` images, float low-dim keys, optional float Stem-OB latent maps
``(B, T_obs, C, h, w)``), ``action`` ``(B, horizon, A)`` and ``action_is_pad`` ``(B, horizon)``.

Checkpoint (a folder, no pickles): ``config.json`` (policy name, config, Stem-OB settings,
env_args), ``normalization.json`` (the statistics) and ``model.safetensors`` (the weights).
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from policies.encoders import BACKBONES, SMALL_CNN_STRIDES
from policies.normalize import NORM_MODES, FeatureNormalizer, stats_to_dict
from stemob.errors import StemobError

CHECKPOINT_FORMAT = "stemob-policy/1"
CONFIG_FILE, STATS_FILE, WEIGHTS_FILE = "config.json", "normalization.json", "model.safetensors"
MAX_CAMERAS = 3


def _positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise StemobError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _is_fraction_pair(value: Any) -> bool:
    """``[fh, fw]`` given as floats in (0, 1] (a crop relative to the image size)."""
    return (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, float) and 0.0 < v <= 1.0 for v in value)
    )


def _positive_float(name: str, value: Any, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise StemobError(
            f"{name} must be a {'non-negative' if allow_zero else 'positive'} number, got {value!r}"
        )


@dataclass
class PolicyConfig:
    """Settings shared by every policy (each field is validated in ``__post_init__``).

    Attributes:
        obs_shapes: shape of one frame of every observation key: ``[3, H, W]`` for a camera,
            ``[C, h, w]`` for a latent key (listed in ``latent_keys``), ``[D]`` for low-dim state.
        action_dim: size of one action.
        latent_keys: keys of ``obs_shapes`` that are float Stem-OB latent maps, not uint8 images.
        n_obs_steps: observation frames per decision.
        horizon: actions predicted per decision (the window starts at the first observation step).
        n_action_steps: actions executed per decision, from step ``n_obs_steps - 1``.
        vision_backbone: ``resnet18`` (written in the project) or ``small_cnn`` (CPU runs).
        use_group_norm: replace BatchNorm by GroupNorm in the backbone.
        cnn_width: channel width of ``small_cnn``.
        cnn_stride: total stride of ``small_cnn``, 8 or 16 (a 96 px frame gives 12x12 or 6x6
            feature cells: ACT's image tokens, Diffusion Policy's keypoint maps).
        crop_shape: ``[h, w]`` crop (random in training, central in evaluation); ``None``: no crop.
            Floats in (0, 1] are fractions of the smallest camera, resolved to pixels (at least 8)
            when the config is built (``[0.9, 0.9]`` is the small configs' rule).
        share_encoder: one backbone for every camera instead of one per camera.
        normalization: mode per kind (``action``, ``state``, ``image``, ``latent``): ``min_max``,
            ``mean_std`` or ``identity``; images are normalised per channel in 0..255 units.
        lr, betas, weight_decay: AdamW settings.
        lr_scheduler: ``cosine`` or ``constant`` (both after a linear warm-up).
        lr_warmup_steps: warm-up steps of the learning-rate schedule.
        inference_dtype: ``fp32``, or ``bf16`` to run inference under bfloat16 autocast (about
            twice as fast on CPUs with AVX-512 BF16 / AMX and on GPUs; actions stay float32).
    """

    obs_shapes: dict[str, list[int]] = field(default_factory=dict)
    action_dim: int = 7
    latent_keys: list[str] = field(default_factory=list)
    n_obs_steps: int = 2
    horizon: int = 16
    n_action_steps: int = 8
    vision_backbone: str = "resnet18"
    use_group_norm: bool = True
    cnn_width: int = 32
    cnn_stride: int = 8
    crop_shape: list[int] | None = None
    share_encoder: bool = False
    normalization: dict[str, str] = field(
        default_factory=lambda: {
            "action": "min_max",
            "state": "min_max",
            "image": "mean_std",
            "latent": "mean_std",
        }
    )
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.95, 0.999])
    weight_decay: float = 1e-6
    lr_scheduler: str = "cosine"
    lr_warmup_steps: int = 500
    inference_dtype: str = "fp32"

    # Fields that only change how a trained model is run; a checkpoint's value may be overridden
    # at load time (``load_policy(..., overrides=...)``, ``eval.py policy_overrides=...``).
    INFERENCE_FIELDS: ClassVar[tuple[str, ...]] = ("n_action_steps", "inference_dtype")

    def __post_init__(self) -> None:
        if not isinstance(self.obs_shapes, Mapping) or not self.obs_shapes:
            raise StemobError("obs_shapes must map every observation key to its frame shape")
        self.obs_shapes = {str(k): [int(d) for d in v] for k, v in self.obs_shapes.items()}
        self.latent_keys = list(self.latent_keys)
        for key in self.latent_keys:
            if key not in self.obs_shapes or len(self.obs_shapes[key]) != 3:
                raise StemobError(f"latent key {key!r} needs a [C, h, w] entry in obs_shapes")
        for key, shape in self.obs_shapes.items():
            if len(shape) not in (1, 3) or min(shape) < 1:
                raise StemobError(
                    f"obs_shapes[{key!r}] = {shape}: expected [D] (low-dim) or [C, H, W] (image)"
                )
            if len(shape) == 3 and key not in self.latent_keys and shape[0] != 3:
                raise StemobError(f"obs_shapes[{key!r}] = {shape}: camera images need 3 channels")
        cameras = self.image_keys
        if len(cameras) + len(self.latent_keys) < 1 or len(cameras) > MAX_CAMERAS:
            raise StemobError(
                f"a policy needs 1 to {MAX_CAMERAS} cameras (or latent keys), got {cameras}"
            )
        _positive_int("action_dim", self.action_dim)
        _positive_int("n_obs_steps", self.n_obs_steps)
        _positive_int("horizon", self.horizon)
        _positive_int("n_action_steps", self.n_action_steps)
        _positive_int("cnn_width", self.cnn_width)
        if self.cnn_stride not in SMALL_CNN_STRIDES:
            raise StemobError(
                f"cnn_stride {self.cnn_stride}: expected one of {list(SMALL_CNN_STRIDES)}"
            )
        if self.n_obs_steps - 1 + self.n_action_steps > self.horizon:
            raise StemobError(
                f"n_obs_steps - 1 + n_action_steps ({self.n_obs_steps - 1 + self.n_action_steps}) "
                f"must not exceed horizon ({self.horizon})"
            )
        if self.vision_backbone not in BACKBONES:
            raise StemobError(
                f"vision_backbone {self.vision_backbone!r}: expected one of {BACKBONES}"
            )
        if self.crop_shape is not None and _is_fraction_pair(self.crop_shape):
            sizes = [self.obs_shapes[k] for k in cameras]
            if sizes:
                h, w = min(s[1] for s in sizes), min(s[2] for s in sizes)
                fh, fw = self.crop_shape
                self.crop_shape = [max(8, int(h * fh)), max(8, int(w * fw))]
            else:
                self.crop_shape = None
        if self.crop_shape is not None:
            self.crop_shape = [int(v) for v in self.crop_shape]
            if len(self.crop_shape) != 2 or min(self.crop_shape) < 8:
                raise StemobError(
                    f"crop_shape must be [h, w] with h, w >= 8, got {self.crop_shape}"
                )
            for key in cameras:
                _, h, w = self.obs_shapes[key]
                if self.crop_shape[0] > h or self.crop_shape[1] > w:
                    raise StemobError(f"crop_shape {self.crop_shape} exceeds {key!r} ({h}x{w})")
        if self.share_encoder and len({tuple(self.obs_shapes[k]) for k in cameras}) > 1:
            raise StemobError("share_encoder needs cameras of one size")
        defaults = PolicyConfig.__dataclass_fields__["normalization"].default_factory()
        self.normalization = defaults | dict(self.normalization)
        for kind, mode in self.normalization.items():
            if kind not in defaults or mode not in NORM_MODES:
                raise StemobError(
                    f"normalization[{kind!r}] = {mode!r}: kinds are {sorted(defaults)}, "
                    f"modes {NORM_MODES}"
                )
        _positive_float("lr", self.lr)
        _positive_float("weight_decay", self.weight_decay, allow_zero=True)
        self.betas = [float(b) for b in self.betas]
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise StemobError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if self.lr_scheduler not in ("cosine", "constant"):
            raise StemobError(f"lr_scheduler {self.lr_scheduler!r}: expected cosine or constant")
        _positive_int("lr_warmup_steps", self.lr_warmup_steps, minimum=0)
        if self.inference_dtype not in ("fp32", "bf16"):
            raise StemobError(f"inference_dtype must be fp32 or bf16, got {self.inference_dtype!r}")

    @property
    def image_keys(self) -> list[str]:
        """Camera keys (uint8 RGB images)."""
        return [k for k, s in self.obs_shapes.items() if len(s) == 3 and k not in self.latent_keys]

    @property
    def lowdim_keys(self) -> list[str]:
        """Low-dim keys, concatenated in this order into the state vector."""
        return [k for k, s in self.obs_shapes.items() if len(s) == 1]

    @property
    def state_dim(self) -> int:
        return sum(self.obs_shapes[k][0] for k in self.lowdim_keys)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicyConfig:
        """Build from a dict; unknown keys are an error that names them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise StemobError(f"unknown {cls.__name__} option(s) {unknown}")
        return cls(**dict(data))


def _stemob_dict(stemob: Any) -> dict[str, Any] | None:
    if stemob is None:
        return None
    from stemob.inversion.settings import InversionSettings

    if isinstance(stemob, InversionSettings):
        return stemob.to_dict()
    if isinstance(stemob, Mapping):
        return InversionSettings.from_dict(dict(stemob)).to_dict()
    raise StemobError(f"stemob must be InversionSettings, a dict or None, got {stemob!r}")


class Policy(nn.Module):
    """Base class: observation preparation, normalisation, action queue and checkpoints.

    Subclasses implement :meth:`compute_loss` and :meth:`predict_chunk`.
    """

    name: ClassVar[str] = "base"
    config_class: ClassVar[type[PolicyConfig]] = PolicyConfig

    def __init__(
        self,
        config: PolicyConfig | Mapping[str, Any],
        stats: Any = None,
        stemob: Any = None,
        env_args: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(config, Mapping):
            config = self.config_class.from_dict(config)
        if not isinstance(config, self.config_class):
            raise StemobError(
                f"{self.name} needs a {self.config_class.__name__}, got {type(config)}"
            )
        self.config = config
        self.stats = stats_to_dict(stats)
        self.stemob = _stemob_dict(stemob)
        self.env_args = dict(env_args) if env_args is not None else None
        if self.stats:
            needed = ["action", *config.lowdim_keys]
            missing = [k for k in needed if k not in self.stats]
            if missing:
                raise StemobError(f"normalisation stats lack {missing} (have {sorted(self.stats)})")
            for key in needed:
                size = config.action_dim if key == "action" else config.obs_shapes[key][0]
                if len(self.stats[key]["min"]) != size:
                    raise StemobError(
                        f"normalisation stats of {key!r} have {len(self.stats[key]['min'])} "
                        f"dimensions, expected {size}"
                    )
        norm = config.normalization
        modes = {"action": norm["action"]}
        modes |= {k: norm["state"] for k in config.lowdim_keys}
        modes |= {k: norm["image"] for k in config.image_keys}
        modes |= {k: norm["latent"] for k in config.latent_keys}
        self.normalizer = FeatureNormalizer(self.stats, modes, config.image_keys)
        self._queue: collections.deque[torch.Tensor] = collections.deque()
        self._compiled: Callable[..., Any] | None = None

    def compile_inference(self, **kwargs: Any) -> Policy:
        """``torch.compile`` the per-chunk inference core (see :meth:`_compile_target`), in place.

        Weights, checkpoints and results are unchanged; the first chunks pay the compilation.
        ``kwargs`` go to ``torch.compile``. Returns ``self``.
        """
        # object.__setattr__: a compiled module must not become a registered submodule
        object.__setattr__(self, "_compiled", torch.compile(self._compile_target(), **kwargs))
        return self

    def _compile_target(self) -> Callable[..., Any]:
        """What :meth:`compile_inference` compiles (subclasses say)."""
        raise StemobError(f"{self.name} has no compilable inference core")

    # ------------------------------------------------------------------ observations
    def prepare_obs(
        self, obs: Mapping[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Check and normalise an observation window: ``({camera: (B, T, C, H, W)}, (B, T, S))``.

        The last ``n_obs_steps`` frames are used, so a longer history is accepted.
        """
        cfg = self.config
        missing = [k for k in cfg.obs_shapes if k not in obs]
        if missing:
            raise StemobError(f"observation lacks {missing} (has {sorted(obs)})")
        device = self.normalizer.scale__action.device
        images: dict[str, torch.Tensor] = {}
        states = []
        for key, shape in cfg.obs_shapes.items():
            value = torch.as_tensor(obs[key])
            if value.dim() != len(shape) + 2 or list(value.shape[2:]) != shape:
                raise StemobError(
                    f"observation {key!r} has shape {tuple(value.shape)}, expected "
                    f"(B, T>={cfg.n_obs_steps}, {', '.join(map(str, shape))})"
                )
            if value.shape[1] < cfg.n_obs_steps:
                raise StemobError(
                    f"observation {key!r} has {value.shape[1]} steps, needs {cfg.n_obs_steps}"
                )
            value = value[:, -cfg.n_obs_steps :].to(device)
            if key in cfg.image_keys:
                if value.dtype != torch.uint8:
                    raise StemobError(
                        f"camera {key!r} must be uint8 (B, T, 3, H, W), got {value.dtype}"
                    )
                images[key] = self.normalizer.normalize(key, value)
            elif key in cfg.latent_keys:
                images[key] = self.normalizer.normalize(key, value, channels=True)
            else:
                states.append(self.normalizer.normalize(key, value))
        state = torch.cat(states, -1) if states else None
        return images, state

    # ------------------------------------------------------------------ interface
    def compute_loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss of a batch and scalar logs."""
        raise NotImplementedError

    def predict_chunk(self, obs: Mapping[str, torch.Tensor], **kwargs: Any) -> torch.Tensor:
        """The whole predicted window ``(B, horizon, A)`` in environment units."""
        raise NotImplementedError

    def inference_chunk(self, obs: Mapping[str, torch.Tensor], **kwargs: Any) -> torch.Tensor:
        """:meth:`predict_chunk` in the config's ``inference_dtype`` (float32 actions)."""
        if self.config.inference_dtype == "fp32":
            return self.predict_chunk(obs, **kwargs)
        device = self.normalizer.scale__action.device.type
        with torch.autocast(device, dtype=torch.bfloat16):
            return self.predict_chunk(obs, **kwargs).float()

    @torch.inference_mode()
    def predict_action(self, obs: Mapping[str, torch.Tensor], **kwargs: Any) -> torch.Tensor:
        """The chunk to execute: ``(B, n_action_steps, A)``, from step ``n_obs_steps - 1``."""
        start = self.config.n_obs_steps - 1
        return self.inference_chunk(obs, **kwargs)[:, start : start + self.config.n_action_steps]

    def select_action(self, obs: Mapping[str, torch.Tensor], **kwargs: Any) -> torch.Tensor:
        """One action ``(B, A)`` per call, re-planning when the queued chunk is spent."""
        if not self._queue:
            self._queue.extend(self.predict_action(obs, **kwargs).unbind(1))
        return self._queue.popleft()

    def reset(self) -> None:
        """Forget queued actions (call at the start of every episode)."""
        self._queue.clear()

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups (subclasses may give the backbone its own learning rate)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str | os.PathLike) -> Path:
        """Write the checkpoint folder (each file through a temporary name, then renamed)."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        record = {
            "format": CHECKPOINT_FORMAT,
            "policy": self.name,
            "config": self.config.to_dict(),
            "stemob": self.stemob,
            "env_args": self.env_args,
        }
        _write_text(folder / CONFIG_FILE, json.dumps(record, indent=2))
        _write_text(folder / STATS_FILE, json.dumps(self.stats))
        tmp = folder / (WEIGHTS_FILE + ".tmp")
        save_model(self, str(tmp))
        os.replace(tmp, folder / WEIGHTS_FILE)
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> Policy:
        """Load a checkpoint folder written by :meth:`save` (in evaluation mode)."""
        return load_policy(path, device)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------- registry
_REGISTRY: dict[str, str | type[Policy]] = {
    "diffusion": "policies.diffusion.policy:DiffusionPolicy",
    "act": "policies.act.policy:ACTPolicy",
}


def register_policy(name: str, cls: type[Policy]) -> None:
    """Make ``cls`` available to :func:`make_policy` under ``name``."""
    _REGISTRY[name] = cls


def policy_class(name: str) -> type[Policy]:
    """The policy class registered under ``name`` (imported on first use)."""
    if name not in _REGISTRY:
        raise StemobError(f"unknown policy {name!r}: expected one of {sorted(_REGISTRY)}")
    entry = _REGISTRY[name]
    if isinstance(entry, str):
        module, attr = entry.split(":")
        entry = getattr(importlib.import_module(module), attr)
        _REGISTRY[name] = entry
    return entry


def make_policy(
    name: str,
    config: PolicyConfig | Mapping[str, Any],
    stats: Any = None,
    stemob: Any = None,
    env_args: Mapping[str, Any] | None = None,
) -> Policy:
    """Build the policy ``name`` (``diffusion`` or ``act``) from its config object or dict."""
    return policy_class(name)(config, stats=stats, stemob=stemob, env_args=env_args)


RUN_CHECKPOINTS = "checkpoints"
"""A training run's checkpoint folder: ``best/`` (a policy folder) and ``step_NNNNNNN/policy``."""
STEP_DIR = re.compile(r"^step_(\d{7})$")


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The policy folder that ``path`` names: a policy folder (``config.json``), a checkpoint
    step folder (``<step>/policy``) or a training run directory (its ``checkpoints/best``, else
    its newest ``checkpoints/step_N/policy``)."""
    folder = Path(path)
    if (folder / CONFIG_FILE).is_file():
        return folder
    if (folder / "policy" / CONFIG_FILE).is_file():
        return folder / "policy"
    root = folder / RUN_CHECKPOINTS
    if (root / "best" / CONFIG_FILE).is_file():
        return root / "best"
    steps = sorted(
        (int(m.group(1)), p)
        for p in (root.iterdir() if root.is_dir() else [])
        if (m := STEP_DIR.match(p.name)) and (p / "policy" / CONFIG_FILE).is_file()
    )
    if steps:
        return steps[-1][1] / "policy"
    raise StemobError(
        f"{folder} is not a policy checkpoint: expected a policy folder ({CONFIG_FILE}), a "
        f"checkpoint step folder (policy/{CONFIG_FILE}) or a training run directory with "
        f"{RUN_CHECKPOINTS}/best or {RUN_CHECKPOINTS}/step_N"
    )


def checkpoint_record(path: str | os.PathLike) -> dict[str, Any]:
    """The saved record of a checkpoint (policy name, config, ``stemob``, ``env_args``) without
    loading its weights; ``path`` as for :func:`load_policy`."""
    config_file = resolve_checkpoint(path) / CONFIG_FILE
    record = json.loads(config_file.read_text())
    if record.get("format") != CHECKPOINT_FORMAT:
        raise StemobError(
            f"{config_file}: format {record.get('format')!r}, expected {CHECKPOINT_FORMAT!r}"
        )
    return record


def checkpoint_config(path: str | os.PathLike) -> PolicyConfig:
    """The saved config of a checkpoint, as its policy class builds it, without loading the
    weights; ``path`` as for :func:`load_policy`."""
    record = checkpoint_record(path)
    return policy_class(record["policy"]).config_class.from_dict(record["config"])


def load_policy(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    overrides: Mapping[str, Any] | None = None,
) -> Policy:
    """Load a policy checkpoint in evaluation mode: a policy folder (see the module
    docstring), a checkpoint step folder or a training run directory (:func:`resolve_checkpoint`).

    ``overrides`` replaces inference-only config fields (the config class's
    ``INFERENCE_FIELDS``, e.g. ACT's ``temporal_ensemble_coeff``); any other field is an error,
    since it would not match the trained weights.
    """
    folder = resolve_checkpoint(path)
    record = checkpoint_record(folder)
    stats = json.loads((folder / STATS_FILE).read_text())
    config = dict(record["config"])
    if overrides:
        allowed = policy_class(record["policy"]).config_class.INFERENCE_FIELDS
        refused = sorted(set(overrides) - set(allowed))
        if refused:
            raise StemobError(
                f"{folder}: {refused} cannot be overridden at load time (they shape the trained "
                f"model); {record['policy']} accepts {list(allowed)}"
            )
        config.update(overrides)
    policy = make_policy(
        record["policy"], config, stats, record.get("stemob"), record.get("env_args")
    )
    missing, unexpected = load_model(policy, str(folder / WEIGHTS_FILE), strict=True)
    del missing, unexpected
    return policy.to(device).eval()
