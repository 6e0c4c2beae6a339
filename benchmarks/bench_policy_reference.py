"""Our policies next to the reference implementations: training samples/s and inference latency.

Diffusion Policy is compared with real-stanford/diffusion_policy's
``DiffusionUnetHybridImagePolicy`` (the paper's image recipe: robomimic 0.2.0's ResNet-18 +
spatial-softmax encoder per camera, robomimic being the version it pins) and ACT with
tonyzhaozh/act's ``ACTPolicy`` (``DETRVAE`` from its ``build``). Both sides are built in ONE
process from the same numbers (cameras, image size, state and action sizes, horizons, UNet /
transformer sizes, keypoints, crop, batch) and timed interleaved (ours, reference, reference,
ours, ...); figures are medians. Our AdamW is ``policies.optim.make_optimizer`` (fused); the
reference's is its recipe's plain ``torch.optim.AdamW``.

* training: loss + backward + AdamW step (no EMA on either side) on one fixed batch; the
  reference gets its images as float [0, 1] (its data loader's output), ours gets uint8.
* inference: one action chunk for one observation window (B=1): DP with 10 DDIM steps on both
  sides (the reference under ``torch.no_grad`` as its env runner does); ACT one chunk (the
  reference under ``torch.inference_mode`` as its eval loop does).
* small config: our ``small_config`` (SmallCNN trunk). The references cannot build that trunk, so
  their ResNet-18 is replaced by the same conv stack (our ``SmallCNN``, through robomimic's
  backbone hook for DP; as the ``body`` of ACT's backbone) and the remaining sizes (UNet dims,
  step embedding, keypoints, feature size, hidden/FF/layers, latent 16 instead of ACT's
  hard-coded 32, action/state sizes instead of its hard-coded 14) are set to ours.
* ``--compile``: ours is also timed after ``Policy.compile_inference()`` (torch.compile of the
  per-chunk core: ACT's model forward, DP's denoiser); compilation stays out of the timing.
* paper config: ResNet-18 (GroupNorm for DP, BatchNorm for ACT: the reference's is frozen),
  3 timed training steps and 5 chunks (``--paper-repeats``, ``--paper-infer-repeats``), batch 16
  for DP and 8 for ACT (``--paper-batch``). One torch thread unless ``--threads``.

Setup (outside the repo; never install torchvision into the project's .venv)::

    git --git-dir=<mirror of real-stanford/diffusion_policy> archive -o /tmp/ref/dp.tar HEAD \
        diffusion_policy/policy diffusion_policy/model diffusion_policy/common
    mkdir -p /tmp/ref/dp && tar -xf /tmp/ref/dp.tar -C /tmp/ref/dp
    mkdir -p /tmp/ref/act
    git --git-dir=<mirror of tonyzhaozh/act> archive HEAD | tar -x -C /tmp/ref/act
    git --git-dir=<mirror of diffusion_policy> rev-parse HEAD > /tmp/ref/dp/COMMIT   # recorded
    git --git-dir=<mirror of act> rev-parse HEAD > /tmp/ref/act/COMMIT
    python3 -m venv /tmp/venv-ref
    /tmp/venv-ref/bin/pip install torch==2.13.0            # first: the local CPU wheel
    /tmp/venv-ref/bin/pip install --no-deps torchvision==0.28.0
    /tmp/venv-ref/bin/pip install -e /work/main einops "zarr<3" omegaconf six matplotlib ipython
    /tmp/venv-ref/bin/pip install --no-deps robomimic==0.2.0
    /tmp/venv-ref/bin/pip install termcolor

Run::

    /tmp/venv-ref/bin/python benchmarks/bench_policy_reference.py            # small + paper
    /tmp/venv-ref/bin/python benchmarks/bench_policy_reference.py --configs small --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from policies import make_policy
from policies.encoders import SMALL_CNN_STRIDES, make_backbone
from policies.optim import make_optimizer
from policies.testing import batch_stats, synthetic_batch

RESULTS = Path(__file__).resolve().parent / "results"


# ---------------------------------------------------------------------- reference imports
def import_torchvision() -> None:
    """Import torchvision with ``torch.library.register_fake`` a no-op during the import.

    The registry's torchvision is a CUDA build whose fake-kernel registrations fail against the
    CPU torch wheel; the benchmark needs none of those ops, so they are skipped, then restored.
    """
    original = torch.library.register_fake
    torch.library.register_fake = lambda *a, **k: lambda fn: fn  # type: ignore[assignment]
    try:
        import torchvision  # noqa: F401
    finally:
        torch.library.register_fake = original


@contextlib.contextmanager
def act_builder_context(values: list[str]) -> Iterator[None]:
    """ACT's builder parses ``sys.argv`` itself and moves the model to CUDA: give it the arguments
    its parser requires and make ``Module.cuda`` a no-op (CPU machine) while it runs."""
    saved, cuda = sys.argv, nn.Module.cuda
    sys.argv = values
    nn.Module.cuda = lambda self, device=None: self  # type: ignore[method-assign]
    try:
        yield
    finally:
        sys.argv, nn.Module.cuda = saved, cuda  # type: ignore[method-assign]


def reference_commit(root: Path) -> str | None:
    """The commit written to ``<root>/COMMIT`` at setup (an archive has no git metadata)."""
    marker = root / "COMMIT"
    return marker.read_text().strip() if marker.is_file() else None


# ---------------------------------------------------------------------- configs
LIKE_FOR_LIKE_ACT = {"grid_tokens": True, "keypoint_tokens": 0, "cnn_stride": 16}
"""ACT small as the reference can build it: a token per feature cell (its only scheme), at the
stride of our first small config. Our CPU default (keypoint tokens) has no reference twin."""


def our_config(policy: str, kind: str, shapes: dict[str, list[int]], action_dim: int) -> Any:
    if policy == "diffusion":
        from policies.diffusion import paper_config, small_config

        return (small_config if kind == "small" else paper_config)(shapes, action_dim)
    from policies.act import paper_config, small_config

    if kind == "small":
        return small_config(shapes, action_dim, **LIKE_FOR_LIKE_ACT)
    return paper_config(shapes, action_dim)


def small_out(size: int, stride: int) -> int:
    """Spatial size after SmallCNN's strided convolutions (total ``stride``)."""
    for layer_stride in SMALL_CNN_STRIDES[stride]:
        size = (size - 1) // layer_stride + 1
    return size


# ---------------------------------------------------------------------- Diffusion Policy
def build_ref_dp(cfg: Any, image_keys: list[str], state_key: str | None, batch: dict) -> Any:
    """real-stanford/diffusion_policy's hybrid image policy with our config's numbers."""
    import diffusion_policy.policy.diffusion_unet_hybrid_image_policy as hybrid
    import robomimic.models.base_nets as base_nets
    from diffusers import DDIMScheduler
    from diffusion_policy.common.normalize_util import get_image_range_normalizer
    from diffusion_policy.model.common.normalizer import (
        LinearNormalizer,
        SingleFieldLinearNormalizer,
    )

    width = cfg.cnn_width

    class StemobSmallConv(base_nets.ConvBase):
        """Our SmallCNN trunk behind robomimic's backbone interface (small config only)."""

        def __init__(self, input_channel: int = 3) -> None:
            super().__init__()
            self.nets = make_backbone(
                "small_cnn", input_channel, cfg.use_group_norm, width, cfg.cnn_stride
            )

        def output_shape(self, input_shape: list[int]) -> list[int]:
            h, w = (small_out(n, cfg.cnn_stride) for n in input_shape[1:])
            return [2 * width, h, w]

    base_nets.StemobSmallConv = StemobSmallConv  # VisualCore resolves backbone_class by name
    original = hybrid.get_robomimic_config

    def robomimic_config(**kwargs: Any) -> Any:
        config = original(**kwargs)
        with config.unlocked():
            core = config.observation.encoder.rgb.core_kwargs
            core.feature_dimension = cfg.image_feature_dim
            core.pool_kwargs.num_kp = cfg.num_keypoints
            if cfg.vision_backbone == "small_cnn":
                core.backbone_class = "StemobSmallConv"
        return config

    hybrid.get_robomimic_config = robomimic_config
    shape_meta = {
        "action": {"shape": [cfg.action_dim]},
        "obs": {k: {"shape": cfg.obs_shapes[k], "type": "rgb"} for k in image_keys},
    }
    if state_key:
        shape_meta["obs"][state_key] = {"shape": cfg.obs_shapes[state_key], "type": "low_dim"}
    scheduler = DDIMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        clip_sample=cfg.clip_sample,
        set_alpha_to_one=True,
        steps_offset=0,
        prediction_type=cfg.prediction_type,
    )
    try:
        policy = hybrid.DiffusionUnetHybridImagePolicy(
            shape_meta=shape_meta,
            noise_scheduler=scheduler,
            horizon=cfg.horizon,
            n_action_steps=cfg.n_action_steps,
            n_obs_steps=cfg.n_obs_steps,
            num_inference_steps=cfg.num_inference_steps,
            obs_as_global_cond=True,
            crop_shape=tuple(cfg.crop_shape) if cfg.crop_shape else None,
            diffusion_step_embed_dim=cfg.step_embed_dim,
            down_dims=tuple(cfg.down_dims),
            kernel_size=cfg.kernel_size,
            n_groups=cfg.n_groups,
            cond_predict_scale=True,
            obs_encoder_group_norm=cfg.use_group_norm,
            eval_fixed_crop=True,
        )
    finally:
        hybrid.get_robomimic_config = original
    normalizer = LinearNormalizer()
    normalizer["action"] = SingleFieldLinearNormalizer.create_fit(batch["action"])
    for key in image_keys:
        normalizer[key] = get_image_range_normalizer()
    if state_key:
        normalizer[state_key] = SingleFieldLinearNormalizer.create_fit(batch["obs"][state_key])
    policy.set_normalizer(normalizer)
    return policy


# ---------------------------------------------------------------------- ACT
def build_ref_act(cfg: Any, image_keys: list[str]) -> tuple[Any, torch.optim.Optimizer]:
    """tonyzhaozh/act's ACTPolicy (DETRVAE from its build function) with our config's numbers."""
    import detr.models.backbone as act_backbone
    from policy import ACTPolicy as RefACTPolicy

    act_backbone.is_main_process = lambda: False  # would download ImageNet weights otherwise
    override = {
        "lr": cfg.lr,
        "lr_backbone": cfg.backbone_lr,
        "num_queries": cfg.horizon,
        "kl_weight": cfg.kl_weight,
        "hidden_dim": cfg.hidden_dim,
        "dim_feedforward": cfg.dim_feedforward,
        "backbone": "resnet18",
        "enc_layers": cfg.n_encoder_layers,  # the reference's CVAE encoder has the same depth
        "dec_layers": cfg.n_decoder_layers,
        "nheads": cfg.n_heads,
        "camera_names": image_keys,
    }
    required = ["--ckpt_dir", "/tmp", "--policy_class", "ACT", "--task_name", "bench"]
    with act_builder_context(["bench", *required, "--seed", "0", "--num_epochs", "1"]):
        policy = RefACTPolicy(override)
    model = policy.model
    d, a, s = cfg.hidden_dim, cfg.action_dim, cfg.state_dim
    # the reference hard-codes 14-d state/action and a 32-d latent: give it our sizes
    model.action_head = nn.Linear(d, a)
    model.input_proj_robot_state = nn.Linear(s, d)
    model.encoder_action_proj = nn.Linear(a, d)
    model.encoder_joint_proj = nn.Linear(s, d)
    model.latent_dim = cfg.latent_dim
    model.latent_proj = nn.Linear(d, 2 * cfg.latent_dim)
    model.latent_out_proj = nn.Linear(cfg.latent_dim, d)
    if cfg.vision_backbone == "small_cnn":
        trunk = make_backbone("small_cnn", 3, cfg.use_group_norm, cfg.cnn_width, cfg.cnn_stride)

        class Body(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.trunk = trunk

            def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
                return {"0": self.trunk(x)}

        model.backbones[0][0].body = Body()
        model.backbones[0][0].num_channels = trunk.out_channels
        model.input_proj = nn.Conv2d(trunk.out_channels, d, 1)
    # the reference's optimiser recipe (detr/main.py), rebuilt over the resized model
    groups = [
        {"params": [p for n, p in model.named_parameters() if "backbone" not in n]},
        {
            "params": [p for n, p in model.named_parameters() if "backbone" in n],
            "lr": cfg.backbone_lr,
        },
    ]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return policy, optimizer


# ---------------------------------------------------------------------- timing
def interleaved(
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: int
) -> dict[str, list[float]]:
    """Time each function ``repeats`` times, alternating the order every round."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            fns[name]()
            out[name].append(time.perf_counter() - start)
    return out


def bench(policy_name: str, kind: str, args: argparse.Namespace) -> dict[str, Any]:
    image_keys = [f"camera{i}_image" for i in range(args.cameras)]
    shapes = {k: [3, args.image, args.image] for k in image_keys}
    state_key = "robot_state" if args.state_dim else None
    if state_key:
        shapes[state_key] = [args.state_dim]
    cfg = our_config(policy_name, kind, shapes, args.action_dim)
    if kind == "small":
        batch_size = args.batch or (64 if policy_name == "diffusion" else 8)
        repeats, infer_repeats = args.repeats, args.infer_repeats
    else:
        batch_size = args.paper_batch or (16 if policy_name == "diffusion" else 8)
        repeats, infer_repeats = args.paper_repeats, args.paper_infer_repeats
    batch = synthetic_batch(shapes, args.action_dim, batch_size, cfg.n_obs_steps, cfg.horizon)
    torch.manual_seed(0)
    ours = make_policy(policy_name, copy.deepcopy(cfg), stats=batch_stats(batch))
    ours_opt = make_optimizer(ours)
    # the reference steps plain (per-tensor) AdamW: ours is timed with it too, like for like
    plain = make_policy(policy_name, copy.deepcopy(cfg), stats=batch_stats(batch))
    plain.load_state_dict(ours.state_dict())
    plain_opt = torch.optim.AdamW(
        plain.param_groups(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay,
        foreach=False,
    )  # fmt: skip
    ref_obs = {
        k: (v.float() / 255.0 if k in image_keys else v.clone()) for k, v in batch["obs"].items()
    }
    torch.manual_seed(0)
    if policy_name == "diffusion":
        ref = build_ref_dp(cfg, image_keys, state_key, batch)
        ref_opt = torch.optim.AdamW(
            ref.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
        )
        ref_batch = {"obs": ref_obs, "action": batch["action"]}

        def ref_loss() -> torch.Tensor:
            return ref.compute_loss(ref_batch)

        ref_one = {k: v[:1] for k, v in ref_obs.items()}

        def ref_infer() -> Any:
            with torch.no_grad():
                return ref.predict_action(ref_one)["action"]

        ref_module: nn.Module = ref
    else:
        ref, ref_opt = build_ref_act(cfg, image_keys)
        qpos = ref_obs[state_key][:, -1] if state_key else torch.zeros(batch_size, 0)
        image = torch.stack([ref_obs[k][:, -1] for k in image_keys], 1)
        mean = torch.tensor(batch_stats(batch)["action"]["mean"])
        std = torch.tensor(batch_stats(batch)["action"]["std"])
        actions = (batch["action"] - mean) / std
        is_pad = batch["action_is_pad"]

        def ref_loss() -> torch.Tensor:
            return ref(qpos, image, actions, is_pad)["loss"]

        def ref_infer() -> Any:
            with torch.inference_mode():
                return ref(qpos[:1], image[:1])

        ref_module = ref.model

    def ours_train() -> None:
        loss, _ = ours.compute_loss(batch)
        ours_opt.zero_grad(set_to_none=True)
        loss.backward()
        ours_opt.step()

    def ours_plain_train() -> None:
        loss, _ = plain.compute_loss(batch)
        plain_opt.zero_grad(set_to_none=True)
        loss.backward()
        plain_opt.step()

    def ref_train() -> None:
        loss = ref_loss()
        ref_opt.zero_grad(set_to_none=True)
        loss.backward()
        ref_opt.step()

    ours.train()
    plain.train()
    ref_module.train()
    train = interleaved(
        {"ours": ours_train, "ours_plain_adamw": ours_plain_train, "reference": ref_train},
        repeats, args.warmup,
    )  # fmt: skip
    ours.eval()
    ref_module.eval()
    one = {k: v[:1] for k, v in batch["obs"].items()}
    kwargs = {"num_inference_steps": 10} if policy_name == "diffusion" else {}
    fns = {"ours": lambda: ours.predict_action(one, **kwargs), "reference": ref_infer}
    sides = [("ours", ours), ("ours_plain_adamw", plain), ("reference", ref_module)]
    if args.compile:  # compiled against compiled: the reference's per-chunk core too
        eager_model = ref.model  # ACT's DETRVAE, DP's denoiser (what ours compiles)
        compiled_model = torch.compile(eager_model)

        def ref_compiled() -> Any:
            ref.model = compiled_model
            try:
                return ref_infer()
            finally:
                ref.model = eager_model

        for _ in range(3):  # compilation stays out of the timing
            ref_compiled()
        fns["reference_compiled"] = ref_compiled
    variants = {"ours_compiled": args.compile, "ours_bf16": args.bf16}
    for side in [name for name, wanted in variants.items() if wanted]:
        # a config of its own: make_policy keeps the object, so setting the variant's
        # inference_dtype on a shared config turned "ours" into bf16 too (the old figure)
        variant = make_policy(policy_name, copy.deepcopy(cfg), stats=batch_stats(batch))
        variant.load_state_dict(ours.state_dict())
        variant.eval()
        if side == "ours_compiled":
            variant.compile_inference()
        else:
            variant.config.inference_dtype = "bf16"
        for _ in range(3):  # compilation (and the recompilations) stay out of the timing
            variant.predict_action(one, **kwargs)
        fns[side] = functools.partial(variant.predict_action, one, **kwargs)
        sides.append((side, variant))
    infer = interleaved(fns, infer_repeats, args.warmup + 1)
    assert ours.config.inference_dtype != "bf16", "the fp32 side must stay fp32"
    row: dict[str, Any] = {
        "policy": policy_name,
        "config": kind,
        "batch": batch_size,
        "repeats": repeats,
        "infer_repeats": infer_repeats,
    }
    for side, module in sides:
        row[side] = {"params": sum(p.numel() for p in module.parameters())}
        if side in infer:
            row[side]["infer_ms_per_chunk"] = round(statistics.median(infer[side]) * 1e3, 2)
            row[side]["infer_ms_min"] = round(min(infer[side]) * 1e3, 2)
        if side in train:
            step = statistics.median(train[side])
            row[side]["train_step_ms"] = round(step * 1e3, 2)
            row[side]["train_samples_per_s"] = round(batch_size / step, 2)
    ref_ms = row["reference"]["infer_ms_per_chunk"]
    row["train_ratio"] = round(
        row["ours"]["train_samples_per_s"] / row["reference"]["train_samples_per_s"], 2
    )
    row["train_ratio_plain_adamw"] = round(
        row["ours_plain_adamw"]["train_samples_per_s"] / row["reference"]["train_samples_per_s"], 2
    )
    if "reference_compiled" in infer:
        ms = round(statistics.median(infer["reference_compiled"]) * 1e3, 2)
        row["reference_compiled"] = {"infer_ms_per_chunk": ms}
        row["infer_speedup_compiled_vs_compiled"] = round(
            ms / row["ours_compiled"]["infer_ms_per_chunk"], 2
        )
    row["infer_speedup"] = round(ref_ms / row["ours"]["infer_ms_per_chunk"], 2)
    for side in ("ours_compiled", "ours_bf16"):
        if side in row:
            row[f"infer_speedup_{side.removeprefix('ours_')}"] = round(
                ref_ms / row[side]["infer_ms_per_chunk"], 2
            )
    return row


def table(rows: list[dict[str, Any]], threads: int) -> str:
    lines = [
        "| policy | config | batch | threads | train samples/s ours fused / ours plain AdamW / "
        "ref (ratios) | inference ms/chunk fp32 ours / ref (speed-up) | compiled ours / ref "
        "(speed-up) | ours bf16 (vs ref fp32) |",
        "| --- | --- | ---: | ---: | --- | --- | --- | --- |",
    ]
    for r in rows:
        o, f = r["ours"], r["reference"]
        extra = ["-", "-"]
        if "reference_compiled" in r:
            extra[0] = (
                f"{r['ours_compiled']['infer_ms_per_chunk']} / "
                f"{r['reference_compiled']['infer_ms_per_chunk']} "
                f"({r['infer_speedup_compiled_vs_compiled']}x)"
            )
        if r.get("ours_bf16"):
            extra[1] = f"{r['ours_bf16']['infer_ms_per_chunk']} ({r['infer_speedup_bf16']}x)"
        p = r["ours_plain_adamw"]
        name = "DP (DDIM 10)" if r["policy"] == "diffusion" else "ACT"
        lines.append(
            f"| {name} | {r['config']} | {r['batch']} | {threads} | "
            f"{o['train_samples_per_s']} / {p['train_samples_per_s']} / {f['train_samples_per_s']} "
            f"({r['train_ratio']}x / {r['train_ratio_plain_adamw']}x) | "
            f"{o['infer_ms_per_chunk']} / {f['infer_ms_per_chunk']} ({r['infer_speedup']}x) | "
            f"{extra[0]} | {extra[1]} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", nargs="+", default=["diffusion", "act"])
    parser.add_argument("--configs", nargs="+", default=["small", "paper"])
    parser.add_argument("--dp-root", default="/tmp/ref/dp", help="diffusion_policy work tree")
    parser.add_argument("--act-root", default="/tmp/ref/act", help="tonyzhaozh/act work tree")
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--image", type=int, default=84, help="square image side")
    parser.add_argument("--state-dim", type=int, default=9)
    parser.add_argument("--action-dim", type=int, default=7)
    parser.add_argument("--batch", type=int, default=0, help="small: 0 = 64 (DP) / 8 (ACT)")
    parser.add_argument("--paper-batch", type=int, default=0, help="0 = 16 (DP) / 8 (ACT)")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--infer-repeats", type=int, default=31)
    parser.add_argument("--paper-repeats", type=int, default=3)
    parser.add_argument("--paper-infer-repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time ours after Policy.compile_inference() (torch.compile)",
    )
    parser.add_argument(
        "--bf16", action="store_true", help="also time ours with inference_dtype=bf16 (autocast)"
    )
    parser.add_argument("--out", default=str(RESULTS / "policy_reference.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    import_torchvision()
    act_root = Path(args.act_root)
    sys.path[:0] = [args.dp_root, str(act_root), str(act_root / "detr")]
    rows = []
    for kind in args.configs:
        for name in args.policies:
            row = bench(name, kind, args)
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "threads": args.threads,
            "torch": torch.__version__,
        },
        "date": time.strftime("%Y-%m-%d"),
        "command": f"{sys.executable} benchmarks/bench_policy_reference.py "
        + " ".join(argv or sys.argv[1:]),
        "references": {
            "diffusion_policy": reference_commit(Path(args.dp_root)),
            "act": reference_commit(act_root),
        },
        "setup": {
            "cameras": args.cameras,
            "image": args.image,
            "state_dim": args.state_dim,
            "action_dim": args.action_dim,
        },
        "results": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(table(rows, args.threads))
    return result


if __name__ == "__main__":
    main()
