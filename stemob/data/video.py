"""mp4 decoding and encoding with imageio-ffmpeg (the ffmpeg binary it ships)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stemob.errors import StemobError


def read_video(path: str | Path) -> tuple[np.ndarray, float | None]:
    """All frames of a video as uint8 ``(T, H, W, 3)`` and its frame rate."""
    import imageio_ffmpeg

    path = Path(path)
    if not path.is_file():
        raise StemobError(f"video {path} does not exist")
    try:
        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        meta = next(reader)
        width, height = meta["size"]
        buffers = list(reader)
    except (RuntimeError, OSError, StopIteration) as error:
        raise StemobError(f"cannot decode video {path} (truncated or corrupt?): {error}") from error
    frame_bytes = width * height * 3
    if not buffers or any(len(b) != frame_bytes for b in buffers):
        raise StemobError(f"cannot decode video {path}: no frames or truncated frames")
    frames = np.frombuffer(b"".join(buffers), np.uint8).reshape(len(buffers), height, width, 3)
    fps = meta.get("fps")
    return frames, float(fps) if fps else None


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: float,
    *,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    crf: int = 10,
) -> Path:
    """Encode uint8 ``(T, H, W, 3)`` frames as an mp4 (every frame a key frame for exact seeking)."""
    import imageio_ffmpeg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    height, width = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(
        str(path),
        (width, height),
        fps=fps,
        codec=codec,
        pix_fmt_out=pix_fmt,
        macro_block_size=1,
        output_params=["-crf", str(crf), "-g", "1"],
        ffmpeg_log_level="error",
    )
    writer.send(None)
    for frame in frames:
        writer.send(frame)
    writer.close()
    return path
