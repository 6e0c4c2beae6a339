import pytest

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
