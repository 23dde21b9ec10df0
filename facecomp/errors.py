"""The error hierarchy: every error a user can cause is one of these.

The message of each error is a single line that says what was expected, what came in and what to
do. The CLI prints it as is and maps the class to an exit code; library users catch
:class:`FaceCompError`.
"""

from __future__ import annotations


class FaceCompError(Exception):
    """Base class. ``str(error)`` is a one-line, user-facing message."""


class InputError(FaceCompError):
    """An input (image, video, folder) is missing, unreadable or not what it claims to be."""


class OutputError(FaceCompError):
    """An output cannot be written (exists, unwritable location, disk full, same as input)."""


class ModelError(FaceCompError):
    """A model file is missing, corrupt, or not a facecomp generator of the expected shape."""


class ConfigError(FaceCompError):
    """An option or setting is out of range or inconsistent (a usage error: exit code 2)."""


class TrainingDiverged(FaceCompError):
    """A loss became NaN or infinite (the last good checkpoint is kept)."""


class PartialVideo(InputError):
    """The input video broke off mid-way; the frames up to there were written. ``report`` is
    the run's :class:`facecomp.frontends.video.VideoReport`."""

    def __init__(self, report) -> None:
        super().__init__(f"{report.src}: {report.error}; wrote the {report.frames} frames "
                         f"before it to {report.dst}")
        self.report = report
