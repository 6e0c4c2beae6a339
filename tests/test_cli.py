"""stemob-invert: round trips on files, folders and videos, and one-line errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from stemob.inversion import media
from stemob.inversion.cli import main


def write_png(path, height=40, width=56, seed=0):
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    media.write_image(path, image)
    return image


def test_png_round_trip_keeps_the_size(tmp_path, tiny_model):
    write_png(tmp_path / "in.png")
    out = tmp_path / "out.png"
    assert (
        main(
            [
                "--img_path",
                str(tmp_path / "in.png"),
                "--output_path",
                str(out),
                "--model",
                "ddpm",
                "--pretrained",
                str(tiny_model),
                "--inversion_steps",
                "5",
            ]
        )
        == 0
    )
    assert media.read_image(out).shape == (40, 56, 3)


def test_mode_alias_ddim_and_seed(tmp_path, tiny_model):
    write_png(tmp_path / "in.png")
    args = ["--img_path", str(tmp_path / "in.png"), "--pretrained", str(tiny_model), "--seed", "3"]
    assert (
        main(
            [
                *args,
                "--output_path",
                str(tmp_path / "a.png"),
                "--mode",
                "ddim",
                "--inversion_steps",
                "2",
            ]
        )
        == 0
    )
    assert main([*args, "--output_path", str(tmp_path / "b.png"), "--model", "ddpm"]) == 0
    assert main([*args, "--output_path", str(tmp_path / "c.png"), "--model", "ddpm"]) == 0
    assert np.array_equal(
        media.read_image(tmp_path / "b.png"), media.read_image(tmp_path / "c.png")
    )


def test_folder_input_gives_a_folder(tmp_path, tiny_model):
    src = tmp_path / "frames"
    for i, (h, w) in enumerate([(32, 32), (32, 32), (24, 40)]):
        write_png(src / f"frame_{i}.png", h, w, seed=i)
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "inverted"
    assert (
        main(
            [
                "--img_path",
                str(src),
                "--output_path",
                str(out),
                "--pretrained",
                str(tiny_model),
                "--batch_size",
                "2",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["frame_0.png", "frame_1.png", "frame_2.png"]
    assert media.read_image(out / "frame_2.png").shape == (24, 40, 3)


def test_video_input_gives_a_video(tmp_path, tiny_model):
    video = tmp_path / "clip.mp4"
    writer = media.VideoWriter(video, fps=10)
    for i in range(5):
        writer.write(np.full((32, 48, 3), 40 * i, np.uint8))
    writer.close()
    out = tmp_path / "clip_inverted.mp4"
    assert (
        main(["--img_path", str(video), "--output_path", str(out), "--pretrained", str(tiny_model)])
        == 0
    )
    frames, fps, _ = media.read_video(out)
    frames = list(frames)
    assert len(frames) == 5 and frames[0].shape == (32, 48, 3) and fps == pytest.approx(10)


def test_report_prints_psnr(tmp_path, tiny_model, capsys):
    write_png(tmp_path / "in.png")
    assert (
        main(["--img_path", str(tmp_path / "in.png"), "--report", "--pretrained", str(tiny_model)])
        == 0
    )
    assert "reconstruction PSNR" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--inversion_steps", "60"], "inversion_steps must be"),
        (["--inversion_steps", "-2"], "inversion_steps must be"),
        (["--pretrained", "/no/such/model"], "no such folder"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, tiny_model, capsys, extra, message):
    write_png(tmp_path / "in.png")
    args = [
        "--img_path",
        str(tmp_path / "in.png"),
        "--output_path",
        str(tmp_path / "o.png"),
        "--pretrained",
        str(tiny_model),
        *extra,
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_unreadable_and_missing_files(tmp_path, tiny_model, capsys):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    assert (
        main(
            [
                "--img_path",
                str(tmp_path / "broken.png"),
                "--output_path",
                str(tmp_path / "o.png"),
                "--pretrained",
                str(tiny_model),
            ]
        )
        == 2
    )
    assert "cannot read image" in capsys.readouterr().err
    assert (
        main(
            ["--img_path", str(tmp_path / "missing.png"), "--output_path", str(tmp_path / "o.png")]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err


def test_unknown_mode_through_the_console_script(tmp_path):
    """The installed command exits 2 with argparse's one-line message, no traceback."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "stemob.inversion.cli",
            "--img_path",
            "x.png",
            "--output_path",
            "y.png",
            "--model",
            "ddpx",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "invalid choice: 'ddpx'" in result.stderr and "Traceback" not in result.stderr
