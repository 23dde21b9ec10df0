"""What each output container holds, decided from the file name before any decoding.

The output extension picks the container; ``codec`` picks its video codec among those the
container can hold (``auto``: the container's usual one). Audio the container holds is copied
packet for packet; audio it cannot hold is re-encoded to its usual audio codec, and a container
that holds no audio (GIF) leaves it out with a warning, never silently. Pure: no FFmpeg calls
except asking whether this build has an encoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError
from ..options import CODECS

#: Speed presets, x264's names; other encoders map them to their own speed settings.
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
           "veryslow", "placebo")


@dataclass(frozen=True)
class Container:
    """name: for messages; video: codec name -> FFmpeg encoder, the first is the default;
    audio_copy: audio codecs held as they are (None: any); audio_encoder: what other audio is
    re-encoded to (None: the container holds no audio)."""

    name: str
    video: dict[str, str]
    audio_copy: frozenset[str] | None = field(default=None)
    audio_encoder: str | None = "aac"


_MP4_AUDIO = frozenset({"aac", "mp3", "alac", "opus", "flac", "ac3", "eac3"})
_MP4 = Container("MP4", {"h264": "libx264", "h265": "libx265", "av1": "libsvtav1"}, _MP4_AUDIO)
CONTAINERS: dict[str, Container] = {
    ".mp4": _MP4,
    ".m4v": _MP4,
    ".mov": Container("QuickTime", {"h264": "libx264", "h265": "libx265"},
                      frozenset({"aac", "mp3", "alac", "ac3", "pcm_s16le", "pcm_s24le",
                                 "pcm_s16be", "pcm_s24be"})),
    ".mkv": Container("Matroska", {"h264": "libx264", "h265": "libx265", "vp9": "libvpx-vp9",
                                   "av1": "libsvtav1"}, None, "libopus"),
    ".webm": Container("WebM", {"vp9": "libvpx-vp9", "av1": "libsvtav1"},
                       frozenset({"opus", "vorbis"}), "libopus"),
    ".avi": Container("AVI", {"h264": "libx264"},
                      frozenset({"mp3", "ac3", "pcm_s16le", "pcm_u8"}), "libmp3lame"),
    ".gif": Container("GIF", {"gif": "gif"}, frozenset(), None),
}


@dataclass(frozen=True)
class OutputPlan:
    """The writer's choices for one output file."""

    container: Container
    codec: str  # h264, h265, vp9, av1, gif
    encoder: str  # the FFmpeg encoder
    options: dict[str, str]  # the encoder's options (quality and speed)

    def audio(self, codec_name: str) -> str | None:
        """'copy', an encoder to re-encode with, or None (the container holds no audio)."""
        held = self.container.audio_copy
        if held is None or codec_name in held:
            return "copy"
        return self.container.audio_encoder


def plan_output(suffix: str, codec: str = "auto", crf: int = 18, preset: str = "medium"
                ) -> OutputPlan:
    """The plan for an output named ``*suffix``, or a one-line ConfigError saying what works."""
    suffix = suffix.lower()
    container = CONTAINERS.get(suffix)
    if container is None:
        raise ConfigError(f"cannot write {suffix or 'a file without extension'} videos; use one "
                          f"of {', '.join(CONTAINERS)}")
    check_encoding(codec, crf, preset)
    name = next(iter(container.video)) if codec == "auto" else codec
    if name not in container.video:
        raise ConfigError(f"{container.name} ({suffix}) cannot hold {name} video; use `codec` "
                          f"{' or '.join(container.video)}, or another container (.mkv holds "
                          f"{', '.join(CONTAINERS['.mkv'].video)})")
    encoder = container.video[name]
    if not _has_encoder(encoder):
        raise ConfigError(f"this FFmpeg build has no {encoder} encoder for {name}; use another "
                          f"`codec`")
    return OutputPlan(container, name, encoder, _options(encoder, crf, preset))


def check_encoding(codec: str, crf: int, preset: str) -> None:
    """A one-line ConfigError for a codec, quality or speed preset that is not one of ours."""
    if codec not in CODECS:
        raise ConfigError(f"`codec` must be one of {', '.join(CODECS)}, got {codec!r}")
    if not 0 <= crf <= 51:
        raise ConfigError(f"`crf` must be within 0..51, got {crf}")
    if preset not in PRESETS:
        raise ConfigError(f"`preset` must be one of {', '.join(PRESETS)}, got {preset!r}")


def _options(encoder: str, crf: int, preset: str) -> dict[str, str]:
    speed = PRESETS.index(preset)  # 0 fastest .. 9 slowest
    if encoder == "libx264":
        return {"crf": str(crf), "preset": preset}
    if encoder == "libx265":
        return {"crf": str(crf), "preset": preset, "x265-params": "log-level=error"}
    if encoder == "libvpx-vp9":  # constant quality; cpu-used 8 (fastest) .. 0
        cpu = max(8 - speed, 0)
        return {"crf": str(crf + 12), "b": "0", "row-mt": "1", "cpu-used": str(cpu),
                "deadline": "realtime" if cpu > 5 else "good"}
    if encoder == "libsvtav1":  # presets 12 (fastest) .. 3
        return {"crf": str(crf + 12), "preset": str(max(12 - speed, 3))}
    return {}


def _has_encoder(name: str) -> bool:
    import av

    try:
        av.codec.Codec(name, "w")
    except Exception:  # noqa: BLE001 - any failure means this build lacks it
        return False
    return True
