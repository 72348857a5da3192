"""Video files through OpenCV: frames in as RGB, frames out with the input's size, rate and codec.

Only the picture is carried: OpenCV reads and writes no audio track, so the output is silent
(docs/video.md). The output is written to a temporary file beside it and renamed into place
when the last frame is in, so a killed run never leaves a truncated video under the output's name.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facebank.errors import InputError

__all__ = ["VIDEO_SUFFIXES", "VideoInfo", "VideoOut", "clear_partials", "is_video", "probe", "read_frames"]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
# Codecs the pip wheels of OpenCV can write, per container, tried when the input's own codec cannot be written
# (H.264 needs an encoder the wheels do not ship).
_FALLBACK_FOURCC = {".mp4": ("mp4v",), ".mov": ("mp4v",), ".avi": ("MJPG", "XVID"), ".mkv": ("XVID", "MJPG"),
                    ".webm": ("VP80",)}
_ALIASES = {"FMP4": "mp4v"}  # what OpenCV reads back from an mp4v stream, under the tag the MP4 muxer takes


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class VideoInfo:
    """What OpenCV reports about a video: size in pixels, frames per second, frame count, codec."""

    width: int
    height: int
    fps: float
    frames: int  # the container's count: an estimate for some formats, the frames read are counted too
    fourcc: str  # four characters, e.g. "avc1", "mp4v", "MJPG"; "" when unknown

    def to_dict(self) -> dict:
        return {"width": self.width, "height": self.height, "fps": round(self.fps, 4), "frames": self.frames,
                "fourcc": self.fourcc}


def _fourcc_text(code: float) -> str:
    n = int(code)
    text = "".join(chr((n >> 8 * i) & 0xFF) for i in range(4))
    return text if n and text.isprintable() else ""


def _open(path: Path):
    import cv2

    if not path.is_file():
        raise InputError(f"video {path} does not exist")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise InputError(f"cannot read video {path} (OpenCV opens no stream in it)")
    return cap


def probe(path: str | os.PathLike) -> VideoInfo:
    import cv2

    cap = _open(Path(path))
    try:
        info = VideoInfo(int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                         float(cap.get(cv2.CAP_PROP_FPS)), int(cap.get(cv2.CAP_PROP_FRAME_COUNT)),
                         _fourcc_text(cap.get(cv2.CAP_PROP_FOURCC)))
    finally:
        cap.release()
    if info.width < 1 or info.height < 1:
        raise InputError(f"video {path} reports no frame size")
    return info


def read_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Every frame of the video, in order, as RGB uint8 (H, W, 3)."""
    cap = _open(Path(path))
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                return
            yield np.ascontiguousarray(bgr[:, :, ::-1])
    finally:
        cap.release()


def _partial_name(out: Path) -> Path:
    # The suffix stays last: OpenCV picks the container from it.
    return out.with_name(f".{out.stem}.partial-{os.getpid()}{out.suffix}")


def clear_partials(out: str | os.PathLike) -> list[Path]:
    """Remove the temporary files a killed run left beside `out`; returns what was removed."""
    out = Path(out)
    gone = []
    for p in out.parent.glob(f".{out.stem}.partial-*{out.suffix}"):
        p.unlink(missing_ok=True)
        gone.append(p)
    return gone


class VideoOut:
    """Frames (RGB) into `out` at the input's size and rate, in its codec where OpenCV can write it."""

    def __init__(self, out: str | os.PathLike, info: VideoInfo):
        import cv2

        self.out = Path(out)
        if not is_video(self.out):
            raise InputError(f"--out {self.out}: a video output ends in one of {', '.join(VIDEO_SUFFIXES)}")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = _partial_name(self.out)
        fps = info.fps if info.fps > 0 else 25.0
        codes = ([_ALIASES.get(info.fourcc, info.fourcc)] if info.fourcc else []) + list(_FALLBACK_FOURCC.get(self.out.suffix.lower(), ()))
        self._writer = None
        for code in dict.fromkeys(codes):
            w = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*code), fps, (info.width, info.height))
            if w.isOpened():
                self._writer, self.fourcc = w, code
                break
            w.release()
        if self._writer is None:
            self.tmp.unlink(missing_ok=True)
            raise InputError(f"OpenCV cannot write {self.out.suffix} with any of {', '.join(dict.fromkeys(codes))}")
        self.size = (info.height, info.width)
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        if rgb.shape[:2] != self.size:
            raise InputError(f"frame of size {rgb.shape[:2]}, the video is {self.size}")
        self._writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))
        self.frames += 1

    def discard(self) -> None:
        self._writer.release()
        self.tmp.unlink(missing_ok=True)

    def finish(self) -> Path:
        """Close the file and move it into place (atomic on one file system)."""
        self._writer.release()
        with open(self.tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(self.tmp, self.out)
        return self.out
