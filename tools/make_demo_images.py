"""Draw the demo images shipped in stemob/assets (a tabletop scene, clean and perturbed).

Run once: ``python tools/make_demo_images.py``. The images are ours (drawn here with PIL), so the
project ships them without any licence question.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 256
ASSETS = Path(__file__).resolve().parent.parent / "stemob" / "assets"


def draw_scene(
    wall: tuple[int, int, int],
    table: tuple[int, int, int],
    cube: tuple[int, int, int],
    light: tuple[float, float, float],
    stripes: bool,
    seed: int,
) -> Image.Image:
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, SIZE)[:, None, None]
    image = (np.array(wall) * (1.0 - 0.35 * y)).repeat(
        SIZE, axis=1
    )  # wall with a vertical gradient
    horizon = int(SIZE * 0.42)
    rows = np.linspace(0.8, 1.1, SIZE - horizon)[:, None, None]
    grain = rng.normal(0, 6, (SIZE - horizon, SIZE, 1))
    if stripes:
        grain += 18 * np.sign(np.sin(np.arange(SIZE) / 5.0))[None, :, None]
    image[horizon:] = np.array(table) * rows + grain
    image = np.clip(image * np.array(light), 0, 255).astype(np.uint8)
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    shade = tuple(int(c * 0.6) for c in cube)
    draw.ellipse((70, 178, 132, 196), fill=(40, 40, 40))  # shadow
    draw.polygon([(78, 130), (118, 130), (118, 186), (78, 186)], fill=cube)
    draw.polygon([(118, 130), (132, 120), (132, 176), (118, 186)], fill=shade)
    draw.polygon(
        [(78, 130), (92, 120), (132, 120), (118, 130)],
        fill=tuple(min(255, int(c * 1.2)) for c in cube),
    )
    draw.ellipse((160, 150, 230, 190), fill=(50, 80, 170))  # bowl
    draw.ellipse((168, 152, 222, 172), fill=(30, 50, 110))
    draw.rectangle((120, 0, 136, 70), fill=(150, 150, 155))  # arm and gripper
    draw.rectangle((104, 70, 152, 82), fill=(110, 110, 115))
    draw.rectangle((104, 82, 112, 104), fill=(90, 90, 95))
    draw.rectangle((144, 82, 152, 104), fill=(90, 90, 95))
    return canvas.filter(ImageFilter.GaussianBlur(0.6))


def main() -> None:
    ASSETS.mkdir(parents=True, exist_ok=True)
    draw_scene((190, 200, 210), (150, 110, 70), (200, 40, 40), (1.0, 1.0, 1.0), False, 0).save(
        ASSETS / "tabletop.png"
    )
    draw_scene((120, 160, 110), (90, 120, 150), (60, 160, 60), (1.1, 0.9, 0.75), True, 1).save(
        ASSETS / "tabletop_perturbed.png"
    )
    print(f"wrote {ASSETS}/tabletop.png and tabletop_perturbed.png")


if __name__ == "__main__":
    main()
