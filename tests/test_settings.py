import numpy as np
import pytest
import torch

from stemob.errors import StemobError
from stemob.inversion.settings import InversionSettings


def test_defaults_are_the_reference_ones():
    s = InversionSettings()
    assert (s.mode, s.pretrained, s.num_steps, s.inversion_steps) == ("ddpm", "embedded", 50, 15)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"inversion_steps": 51}, "inversion_steps"),
        ({"inversion_steps": -1}, "inversion_steps"),
        ({"mode": "ddim2"}, "unknown inversion mode"),
        ({"num_steps": 0}, "num_steps"),
        ({"resolution": 4}, "resolution"),
        ({"seed": 1.5}, "seed"),
        ({"pretrained": ""}, "pretrained"),
    ],
)
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(StemobError, match=message):
        InversionSettings(**kwargs)


def test_round_trip_and_digest():
    s = InversionSettings(mode="ddim", inversion_steps=5, resolution=64)
    assert InversionSettings.from_dict(s.to_dict()) == s
    assert s.digest() == InversionSettings.from_dict(s.to_dict()).digest()
    assert s.digest() != InversionSettings(mode="ddim", inversion_steps=6, resolution=64).digest()
    with pytest.raises(StemobError, match="unknown Stem-OB setting"):
        InversionSettings.from_dict({"mode": "ddpm", "k": 3})


def test_later_options_keep_old_digests_and_validate():
    """interpolation / short_side / rounding are left out at their defaults: caches and
    checkpoints written before them keep their names and verify."""
    import hashlib
    import json

    before = {"mode": "ddpm", "pretrained": "embedded", "num_steps": 50, "inversion_steps": 15,
              "resolution": None, "seed": 0}  # fmt: skip
    digest = hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:12]
    assert InversionSettings().digest() == digest
    assert InversionSettings(interpolation=None, rounding=None) == InversionSettings()  # null
    paper = InversionSettings(resolution=768, interpolation="nearest", rounding="truncate")
    assert paper.to_dict()["interpolation"] == "nearest" and paper.digest() != digest
    assert InversionSettings.from_dict(paper.to_dict()) == paper
    with pytest.raises(StemobError, match="exclude each other"):
        InversionSettings(resolution=64, short_side=32)
    with pytest.raises(StemobError, match="interpolation must be one of"):
        InversionSettings(interpolation="bicubic")
    with pytest.raises(StemobError, match="rounding must be one of"):
        InversionSettings(rounding="floor")


def test_paper_preset_resizes_with_pillows_nearest_and_truncates(tiny_uncond_model):
    """The reference path: nearest-neighbour by pixel centres to the model size and back, and
    uint8 by truncation; a short-side resize keeps the aspect ratio."""
    from PIL import Image

    from stemob.inversion.cli import PRESETS
    from stemob.inversion.inverter import Inverter

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (1, 24, 24, 3), dtype=np.uint8)  # 2x: no pixel-centre ties
    settings = InversionSettings(pretrained=str(tiny_uncond_model), inversion_steps=0,
                                 **{**PRESETS["paper"], "resolution": 48})  # fmt: skip
    inverter = Inverter(settings)
    pixels = torch.from_numpy(frame).permute(0, 3, 1, 2).float() / 127.5 - 1
    fitted = inverter._fit(pixels)[0]
    pil = np.asarray(Image.fromarray(frame[0]).resize((48, 48), Image.NEAREST))
    np.testing.assert_allclose(((fitted + 1) * 127.5).permute(1, 2, 0).numpy(), pil, atol=1e-3)
    truncated = inverter.invert(frame, [(0, 0, "front")])
    rounded = Inverter(InversionSettings(**{**settings.to_dict(), "rounding": "round"})).invert(
        frame, [(0, 0, "front")]
    )
    diff = rounded.astype(int) - truncated
    assert diff.min() == 0 and diff.max() == 1 and diff.mean() > 0.2  # round = truncate or +1
    short = Inverter(InversionSettings(pretrained=str(tiny_uncond_model), short_side=12))
    assert short._processing_size(24, 32)[:2] == (12, 16)
    wide = rng.integers(0, 256, (1, 24, 32, 3), dtype=np.uint8)
    assert short.invert(wide, [(0, 0, "front")]).shape == wide.shape
