"""Anonymise photos: detect every real face, pick a dissimilar target, swap, and check the result.

`anonymize` (photos and folders to an output folder, or one array in memory) and
`anonymize_image` (one image against an open FaceBank); the work is in `photo` (one photo),
`check` (the result check), `run` (folders, workers, resume), `files`, `consent`, `thresholds`;
`anonymize_video` (one video: `video`, `tracks`, `video_io`, `video_report`, `video_api`).
"""

from facebank.anonymize.api import AnonymizedImage, anonymize, anonymize_image
from facebank.anonymize.options import AnonymizeOptions
from facebank.anonymize.report import PhotoReport, RunCounts
from facebank.anonymize.video_api import VideoResult, anonymize_video
from facebank.anonymize.video_report import VideoReport, video_audit

__all__ = ["AnonymizeOptions", "AnonymizedImage", "PhotoReport", "RunCounts", "VideoReport", "VideoResult",
           "anonymize", "anonymize_image", "anonymize_video", "video_audit"]
