"""Training recipe of the embedded prior: a small AutoencoderKL, then an unconditional UNet2DModel.

Run::

    python -m stemob.priors.train --config configs/prior/embedded.json \
        [--out stemob/priors/embedded] [--work_dir runs/prior] [--minutes M] [--resume]

Fine-tune on your own frames (starts from an existing diffusers folder, mixes in procedural images)::

    python -m stemob.priors.train --config configs/prior/finetune.json \
        --init_from stemob/priors/embedded --images my_frames/ --out my_prior --work_dir runs/ft

Phase 1 trains the VAE (4 latent channels, 4x down-sampling) on procedural images mixed with
renders of the tabletop suite (share ``tabletop_fraction``; ``train`` texture pool only) with
L1 + MSE reconstruction loss and a tiny KL weight. Then the VAE's ``scaling_factor`` is set to
1 / std of the latents (``latent_dist.mode()``) of ``scale_images`` procedural images. Phase 2
trains the UNet on the scaled latents (``latent_dist.sample()``) of the same mix with epsilon prediction under
Stable Diffusion's scaled-linear schedule (1000 steps, betas 0.00085..0.012). Each phase stops
at its ``max_steps`` or its time budget, whichever comes first; ``--resume`` continues each
phase to its (possibly raised) limits. The result is written atomically as a diffusers folder in
float16 (``vae/``, ``unet/``, ``scheduler/``, ``model_index.json``, ``training_summary.json``);
a ``README.md`` and a ``samples.png`` already in ``--out`` are kept. To train longer later, raise
the budgets (``--minutes`` or the config) and pass ``--resume``: each phase continues from its
saved step (the ``scaling_factor`` measured after the first VAE phase is kept).

Work dir: ``state.pt`` (models, optimisers, steps, seconds, torch RNG; saved atomically every
``checkpoint_minutes`` and at the end of each phase; loaded with ``weights_only=True``) and
``loss_log.csv`` (phase, step, seconds, loss, l1, mse, kl, lr). Batches are a pure function of
(seed, phase, step), so a resumed run sees the same data as an uninterrupted one.

Config keys: :mod:`stemob.priors.config`; training images: :mod:`stemob.priors.images`.
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from stemob.errors import StemobError
from stemob.inversion.model_builder import SD_SCHEDULER
from stemob.priors.config import ConfigError, PhaseConfig, PriorConfig, load_config
from stemob.priors.images import (
    PHASE_IDS,
    UserImages,
    cached_renders,
    eval_images,
    eval_renders,
    to_tensor,
    training_batch,
)
from stemob.priors.metrics import measure_latent_std, reconstruction_metrics
from stemob.priors.procedural import procedural_batch

PHASES = ("vae", "unet")
STATE_FILE = "state.pt"
LOG_FILE = "loss_log.csv"
LOG_COLUMNS = ("phase", "step", "seconds", "loss", "l1", "mse", "kl", "lr")
# the shipped scheduler: Stable Diffusion's scaled-linear schedule, with epsilon prediction
SCHEDULER_CONFIG = {
    **{k: v for k, v in SD_SCHEDULER.items() if k != "skip_prk_steps"},
    "prediction_type": "epsilon",
}


# --------------------------------------------------------------------------------------- models


def build_vae(arch: dict[str, Any]) -> torch.nn.Module:
    """A fresh AutoencoderKL from constructor arguments or a saved config."""
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_config(arch)


def build_unet(arch: dict[str, Any]) -> torch.nn.Module:
    """A fresh unconditional UNet2DModel from constructor arguments or a saved config."""
    from diffusers import UNet2DModel

    return UNet2DModel.from_config(arch)


def noise_scheduler() -> Any:
    """The training noise schedule (DDPM form of :data:`SCHEDULER_CONFIG`)."""
    from diffusers import DDPMScheduler

    keys = (
        "beta_start",
        "beta_end",
        "beta_schedule",
        "num_train_timesteps",
        "prediction_type",
        "clip_sample",
    )
    return DDPMScheduler(**{k: SCHEDULER_CONFIG[k] for k in keys})


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


# -------------------------------------------------------------------------------------- trainer


def _lr_at(cfg: PhaseConfig, step: int, seconds: float) -> float:
    warm = min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
    fractions = [seconds / (cfg.minutes * 60.0)] if cfg.minutes > 0 else [1.0]
    if cfg.max_steps:
        fractions.append(step / cfg.max_steps)
    frac = min(1.0, max(fractions))
    cosine = 0.5 * (1.0 + math.cos(math.pi * frac))
    return cfg.lr * warm * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cosine)


class PriorTrainer:
    """Owns the models, optimisers, counters and work dir of one (resumable) training run."""

    def __init__(
        self,
        config: PriorConfig,
        work_dir: str | Path,
        *,
        init_from: str | Path | None = None,
        images: str | Path | None = None,
    ) -> None:
        self.config = config
        self.work_dir = Path(work_dir)
        self.user = UserImages(images, config.vae_phase.image_size) if images else None
        self.renders: np.ndarray | None = None
        if config.tabletop_fraction > 0:
            self.renders = cached_renders(
                self.work_dir,
                "train",
                seed=config.tabletop_seed,
                episodes=config.tabletop_episodes,
                frames_per_episode=config.tabletop_frames_per_episode,
                pool="train",
                perturbation=config.tabletop_perturbation,
                image_size=config.tabletop_image_size,
                cameras=tuple(config.tabletop_cameras),
            )
        self.counters: dict[str, float] = {
            "vae_step": 0,
            "vae_seconds": 0.0,
            "unet_step": 0,
            "unet_seconds": 0.0,
            "vae_loss": float("nan"),
            "unet_loss": float("nan"),
            "scaling_factor": 0.0,
        }
        torch.manual_seed(config.seed)
        self.vae, self.unet = self._initial_models(init_from)
        self.optimizers = {name: self._optimizer(name) for name in PHASES}

    def _initial_models(
        self, init_from: str | Path | None
    ) -> tuple[torch.nn.Module, torch.nn.Module]:
        if init_from is None:
            return build_vae(self.config.vae), build_unet(self.config.unet)
        from diffusers import AutoencoderKL, UNet2DModel

        folder = Path(init_from)
        if not (folder / "vae" / "config.json").is_file():
            raise ConfigError(
                f"--init_from {folder}: expected a diffusers folder with vae/config.json"
            )
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float32)
        self.counters["scaling_factor"] = float(
            vae.config.scaling_factor
        )  # keep it: the UNet was trained on it
        if (folder / "unet" / "config.json").is_file():
            unet = UNet2DModel.from_pretrained(folder, subfolder="unet", torch_dtype=torch.float32)
        else:
            unet = build_unet(self.config.unet)
        return vae, unet

    def model(self, phase: str) -> torch.nn.Module:
        """The model trained in ``phase``."""
        return self.vae if phase == "vae" else self.unet

    def _optimizer(self, phase: str) -> torch.optim.Optimizer:
        cfg = self.config.phase(phase)
        return torch.optim.AdamW(
            self.model(phase).parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )

    # ---- state
    @property
    def state_path(self) -> Path:
        return self.work_dir / STATE_FILE

    def save_state(self) -> None:
        """Write models, optimisers, counters and the torch RNG to ``state.pt`` atomically."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "vae_arch": json.dumps(dict(self.vae.config), default=str),
            "unet_arch": json.dumps(dict(self.unet.config), default=str),
            "vae": self.vae.state_dict(),
            "unet": self.unet.state_dict(),
            "vae_opt": self.optimizers["vae"].state_dict(),
            "unet_opt": self.optimizers["unet"].state_dict(),
            "counters": dict(self.counters),
            "torch_rng": torch.get_rng_state(),
        }
        tmp = self.state_path.with_suffix(f".tmp{os.getpid()}")
        torch.save(state, tmp)
        os.replace(tmp, self.state_path)

    def load_state(self) -> None:
        """Restore everything :meth:`save_state` wrote (architecture included)."""
        state = torch.load(self.state_path, map_location="cpu", weights_only=True)
        self.vae = build_vae(json.loads(state["vae_arch"]))
        self.unet = build_unet(json.loads(state["unet_arch"]))
        self.vae.load_state_dict(state["vae"])
        self.unet.load_state_dict(state["unet"])
        self.optimizers = {name: self._optimizer(name) for name in PHASES}
        for name in PHASES:
            self.optimizers[name].load_state_dict(state[f"{name}_opt"])
        self.counters.update(state["counters"])
        torch.set_rng_state(state["torch_rng"])
        _trim_log(self.work_dir / LOG_FILE, {p: int(self.counters[f"{p}_step"]) for p in PHASES})

    # ---- losses
    def _vae_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.vae_phase.bf16):
            posterior = self.vae.encode(x).latent_dist
            rec = self.vae.decode(posterior.sample()).sample
        rec = rec.float()
        l1, mse = (rec - x).abs().mean(), ((rec - x) ** 2).mean()
        kl = posterior.kl().float().mean()
        loss = cfg.l1_weight * l1 + cfg.mse_weight * mse + cfg.kl_weight * kl
        return loss, {"l1": l1.item(), "mse": mse.item(), "kl": kl.item()}

    def _unet_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        bf16 = self.config.unet_phase.bf16
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            latents = self.vae.encode(x).latent_dist.sample()
        latents = latents.float() * self.counters["scaling_factor"]
        noise = torch.randn_like(latents)
        t = torch.randint(0, self._scheduler.config.num_train_timesteps, (len(latents),))
        noisy = self._scheduler.add_noise(latents, noise, t)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            pred = self.unet(noisy, t).sample
        mse = ((pred.float() - noise) ** 2).mean()
        return mse, {"l1": float("nan"), "mse": mse.item(), "kl": float("nan")}

    # ---- loop
    def run_phase(self, phase: str) -> None:
        """Train ``phase`` until its max_steps or time budget; checkpoint on the way and at the end."""
        cfg = self.config.phase(phase)
        model, optimizer = self.model(phase), self.optimizers[phase]
        loss_fn: Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, float]]]
        loss_fn = self._vae_loss if phase == "vae" else self._unet_loss
        if phase == "unet":
            self._scheduler = noise_scheduler()
            self.vae.eval().requires_grad_(False)
        model.train().requires_grad_(True)
        step, seconds = (
            int(self.counters[f"{phase}_step"]),
            float(self.counters[f"{phase}_seconds"]),
        )
        budget = cfg.minutes * 60.0
        rows: list[list[Any]] = []
        last_save = time.monotonic()
        bar = tqdm(
            total=cfg.max_steps, initial=step, desc=f"{phase}", mininterval=2.0, dynamic_ncols=True
        )
        while seconds < budget and (cfg.max_steps is None or step < cfg.max_steps):
            start = time.monotonic()
            x = training_batch(
                self.config.seed,
                phase,
                step,
                cfg,
                self.user,
                self.config.user_image_fraction,
                self.renders,
                self.config.tabletop_fraction,
            )
            lr = _lr_at(cfg, step, seconds)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss, parts = loss_fn(x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            loss_value = loss.item()
            step += 1
            seconds += time.monotonic() - start
            self.counters.update(
                {f"{phase}_step": step, f"{phase}_seconds": seconds, f"{phase}_loss": loss_value}
            )
            bar.update(1)
            bar.set_postfix(
                loss=f"{loss_value:.4f}", min=f"{seconds / 60:.1f}/{cfg.minutes:.1f}", refresh=False
            )
            if step % self.config.log_every == 0:
                rows.append(
                    [
                        phase,
                        step,
                        round(seconds, 2),
                        loss_value,
                        parts["l1"],
                        parts["mse"],
                        parts["kl"],
                        lr,
                    ]
                )
            if time.monotonic() - last_save >= self.config.checkpoint_minutes * 60.0:
                self._checkpoint(rows)
                last_save = time.monotonic()
        bar.close()
        self._checkpoint(rows)
        model.eval().requires_grad_(False)

    def _checkpoint(self, rows: list[list[Any]]) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        _append_log(self.work_dir / LOG_FILE, rows)
        rows.clear()
        self.save_state()

    def measure_scaling(self) -> float:
        """Set the VAE's scaling_factor to 1 / std of latent modes of procedural images (once)."""
        if self.counters["scaling_factor"] <= 0:
            cfg = self.config
            images = procedural_batch(
                [cfg.seed, PHASE_IDS["scale"]],
                cfg.scale_images,
                cfg.scale_image_size,
                as_float=True,
            )
            std = measure_latent_std(
                self.vae, torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
            )
            self.counters["scaling_factor"] = 1.0 / max(std, 1e-6)
            self.save_state()
        self.vae.register_to_config(scaling_factor=float(self.counters["scaling_factor"]))
        return float(self.counters["scaling_factor"])


def _append_log(path: Path, rows: list[list[Any]]) -> None:
    if not rows:
        return
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(LOG_COLUMNS)
        writer.writerows(rows)


def _trim_log(path: Path, steps: dict[str, int]) -> None:
    """Drop log rows written after the last saved state (so a resumed run does not duplicate them)."""
    if not path.exists():
        return
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    kept = [rows[0]] + [
        r for r in rows[1:] if len(r) >= 2 and r[0] in steps and int(r[1]) <= steps[r[0]]
    ]
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as handle:
        csv.writer(handle).writerows(kept)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------- export


def export_folder(trainer: PriorTrainer, out: str | Path, summary: dict[str, Any]) -> Path:
    """Write the float16 diffusers folder to ``out`` atomically; returns it. Adds the PSNR to ``summary``."""
    from diffusers import AutoencoderKL, DDIMScheduler

    out = Path(out).resolve()
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    copy.deepcopy(trainer.vae).to(torch.float16).save_pretrained(
        tmp / "vae", safe_serialization=True
    )
    copy.deepcopy(trainer.unet).to(torch.float16).save_pretrained(
        tmp / "unet", safe_serialization=True
    )
    DDIMScheduler.from_config(SCHEDULER_CONFIG).save_pretrained(tmp / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.30.0",
        "vae": ["diffusers", "AutoencoderKL"],
        "unet": ["diffusers", "UNet2DModel"],
        "scheduler": ["diffusers", "DDIMScheduler"],
    }
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    shipped = AutoencoderKL.from_pretrained(tmp, subfolder="vae", torch_dtype=torch.float32)
    procedural = reconstruction_metrics(shipped, eval_images(trainer.config))
    summary["eval_psnr_db"] = round(procedural["psnr_db"], 3)
    if trainer.config.eval_render_episodes > 0:
        renders = eval_renders(trainer.config, trainer.work_dir)
        metrics = reconstruction_metrics(shipped, to_tensor(renders))
        summary["eval_renders"] = len(renders)
        summary["eval_render_psnr_db"] = round(metrics["psnr_db"], 3)
        summary["eval_render_ssim"] = round(metrics["ssim"], 4)
    summary["weights_bytes"] = sum(p.stat().st_size for p in tmp.rglob("*.safetensors"))
    (tmp / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for keep in ("README.md", "samples.png"):
        if (out / keep).is_file():
            shutil.copy2(out / keep, tmp / keep)
    old = out.parent / f".{out.name}.old{os.getpid()}"
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def _summary(
    trainer: PriorTrainer, init_from: str | Path | None, images: str | Path | None
) -> dict[str, Any]:
    c = trainer.counters
    return {
        "version": "v1" if init_from is None else "fine-tuned",
        "init_from": str(init_from) if init_from else None,
        "user_images": str(images) if images else None,
        "vae_steps": int(c["vae_step"]),
        "vae_minutes": round(c["vae_seconds"] / 60, 2),
        "vae_final_loss": c["vae_loss"],
        "unet_steps": int(c["unet_step"]),
        "unet_minutes": round(c["unet_seconds"] / 60, 2),
        "unet_final_loss": c["unet_loss"],
        "scaling_factor": c["scaling_factor"],
        "vae_parameters": count_parameters(trainer.vae),
        "unet_parameters": count_parameters(trainer.unet),
        "eval": f"{trainer.config.eval_images} held-out procedural images at {trainer.config.eval_size}x{trainer.config.eval_size}",
        "tabletop_renders": 0 if trainer.renders is None else len(trainer.renders),
        "torch_threads": torch.get_num_threads(),
        "config": dataclasses.asdict(trainer.config),
    }


def train(
    config: PriorConfig,
    out: str | Path,
    work_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    minutes: float | None = None,
    init_from: str | Path | None = None,
    images: str | Path | None = None,
) -> dict[str, Any]:
    """Run (or resume) both phases and export the folder; returns the training summary."""
    if minutes is not None:  # split a total budget over the phases in the config's proportions
        total = config.vae_phase.minutes + config.unet_phase.minutes
        for cfg in (config.vae_phase, config.unet_phase):
            cfg.minutes = minutes * (cfg.minutes / total if total > 0 else 0.5)
    work = Path(work_dir)
    if (work / STATE_FILE).exists() and not (resume or overwrite):
        raise ConfigError(
            f"{work / STATE_FILE} exists: pass --resume to continue it or --overwrite to start over"
        )
    if overwrite and not resume:
        for name in (STATE_FILE, LOG_FILE):
            (work / name).unlink(missing_ok=True)
    trainer = PriorTrainer(config, work, init_from=init_from, images=images)
    if resume and trainer.state_path.exists():
        trainer.load_state()
    trainer.run_phase("vae")
    trainer.measure_scaling()
    trainer.run_phase("unet")
    summary = _summary(trainer, init_from, images)
    export_folder(trainer, out, summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--config", required=True, help="JSON recipe, e.g. configs/prior/embedded.json"
    )
    parser.add_argument("--out", default="stemob/priors/embedded", help="diffusers folder to write")
    parser.add_argument("--work_dir", default="runs/prior", help="training state and loss log")
    parser.add_argument(
        "--minutes", type=float, default=None, help="total time budget, split over the phases"
    )
    parser.add_argument("--resume", action="store_true", help="continue the state in --work_dir")
    parser.add_argument(
        "--overwrite", action="store_true", help="discard a state in --work_dir and start over"
    )
    parser.add_argument(
        "--init_from", default=None, help="start from this diffusers folder (vae/, unet/)"
    )
    parser.add_argument(
        "--images", default=None, help="folder of your own frames mixed into every batch"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    try:
        summary = train(
            load_config(args.config),
            args.out,
            args.work_dir,
            resume=args.resume,
            overwrite=args.overwrite,
            minutes=args.minutes,
            init_from=args.init_from,
            images=args.images,
        )
    except StemobError as error:
        sys.exit(f"error: {error}")
    shown = {k: v for k, v in summary.items() if k != "config"}
    print(json.dumps(shown, indent=2))


if __name__ == "__main__":
    main()
