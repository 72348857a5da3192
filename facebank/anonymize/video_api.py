"""`facebank.anonymize_video`: one video file in, the anonymised video and its JSON sidecar out.

The video is written to a temporary file and renamed when complete, then the sidecar (OUT.json)
is written, atomically: a sidecar that reads back complete, made from the same input bytes, next
to an output of the recorded size, means the video is done, and a re-run returns it without
work. A killed run leaves no output and no sidecar; the re-run clears its temporary file and
starts again from the first frame (there is no resume inside a video).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from facebank.anonymize.options import AnonymizeOptions
from facebank.anonymize.video_report import VIDEO_SIDECAR_FORMAT, VideoReport
from facebank.errors import InputError
from facebank.progress import Progress

__all__ = ["VideoResult", "anonymize_video", "sidecar_path"]


@dataclass(frozen=True)
class VideoResult:
    """The anonymised video, its sidecar, what was done, and whether an earlier run had done it all."""

    out: Path
    sidecar: Path
    report: VideoReport
    skipped: bool = False

    @property
    def passed(self) -> bool:
        return self.report.passed

    def to_dict(self) -> dict:
        return {"out": str(self.out), "sidecar": str(self.sidecar), "skipped": self.skipped,
                **self.report.to_dict()}


def sidecar_path(out: str | os.PathLike) -> Path:
    return Path(out).with_suffix(".json")


def _done(out: Path, sha: str) -> VideoReport | None:
    try:
        side = json.loads(sidecar_path(out).read_text())
        if (side.get("format") == VIDEO_SIDECAR_FORMAT and side.get("input_sha256") == sha
                and out.stat().st_size == side.get("output_bytes")):
            return VideoReport.from_dict(side)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def anonymize_video(video: str | os.PathLike, out: str | os.PathLike, *, build: str | os.PathLike | None = None,
                    bank: str | os.PathLike | None = None, options: AnonymizeOptions | None = None,
                    max_gap: int = 15, fill: str = "swap", key: str | None = None,
                    progress: Progress | None = None, **kw) -> VideoResult:
    """Anonymise the video file `video` into `out` (.mp4, .avi, .mov, .mkv, .webm) and `out`.json.

    Faces are tracked across frames; each track (person) gets one synthetic target, keyed by
    (key, track), checked on every frame, and replaced for the whole track when a frame fails.
    max_gap: frames a track may go undetected; the frames in between are filled from the track.
    fill: "swap" (the track's target over the interpolated face) or "fallback" (blur it).
    key: the video's key for the picks (default: the video's file name).
    progress: ProgressEvents of stage "anonymize video": frames done, frames planned, over both passes.
    Other keywords: AnonymizeOptions' fields (swapper="classical", tries=3, fallback="blur", ...).
    Audio is not carried (OpenCV writes pictures only). Returns a VideoResult.
    """
    from facebank._io.checksum import file_digests
    from facebank._io.files import atomic_write_json
    from facebank.anonymize.api import _options
    from facebank.anonymize.video import VideoAnonymizer, VideoOptions
    from facebank.anonymize.video_io import clear_partials, is_video
    from facebank.pick.session import FaceBank

    src, out = Path(video), Path(out)
    if not src.is_file():
        raise InputError(f"video {src} does not exist")
    if not is_video(out):
        raise InputError(f"out {out}: a video output ends in .mp4, .avi, .mov, .mkv or .webm")
    if out.resolve() == src.resolve():
        raise InputError(f"out {out} is the input video")
    opts = _options(options, kw if key is None else {**kw, "key": key})
    vopts = VideoOptions(max_gap=max_gap, fill=fill).check()
    sha = file_digests(src)[0]
    report = _done(out, sha)
    if report is not None:
        return VideoResult(out, sidecar_path(out), report, skipped=True)
    clear_partials(out)
    sidecar_path(out).unlink(missing_ok=True)  # the sidecar of an older output no longer describes it
    session = FaceBank(build, bank=bank)
    try:
        report = VideoAnonymizer(session, opts, vopts).run(src, out, key=opts.key or src.name, progress=progress)
    finally:
        session.close()
    side = {**report.to_dict(), "input": src.name, "input_sha256": sha, "output": out.name,
            "output_bytes": out.stat().st_size}
    atomic_write_json(sidecar_path(out), side)
    return VideoResult(out, sidecar_path(out), report)
