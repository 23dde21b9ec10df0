"""Writing a video's streams as an OutputPlan (facecomp.frontends.containers) says: the video encoder with
the input's colour tags, and each audio stream copied, re-encoded or left out.

Colour: frames are decoded to RGB with the input's own matrix and range (``to_rgb``) and encoded
back with the same matrix and range, tagged like the input (primaries, transfer, matrix, range),
so what lies outside the faces keeps its colour in any player. GIF frames get a palette of their
own each (FFmpeg's palettegen/paletteuse), which streams: memory does not grow with length.
"""

from __future__ import annotations

import logging
from fractions import Fraction

import numpy as np

from ..errors import ConfigError
from .containers import OutputPlan

log = logging.getLogger(__name__)


def to_rgb(frame) -> np.ndarray:
    """A decoded frame as RGB uint8, read with its own matrix and range."""
    if frame.format.name in ("rgb24",):
        return frame.to_ndarray()
    return frame.reformat(format="rgb24", src_color_range=frame.color_range or None
                          ).to_ndarray()


class VideoOut:
    """The output video stream of ``plan`` for frames of ``width`` x ``height`` at ``rate``,
    timestamps in ``time_base``, colour tagged like the input stream ``like``."""

    def __init__(self, out, plan: OutputPlan, width: int, height: int, rate: Fraction,
                 time_base: Fraction, like) -> None:
        import av

        self.out, self.plan = out, plan
        self.in_time_base = time_base
        if plan.container.name == "AVI":  # frame-numbered: timestamps in frames
            time_base = Fraction(1, 1) / Fraction(rate)
        self.time_base = time_base
        self.stream = out.add_stream(plan.encoder, rate=rate)
        self.stream.width, self.stream.height = width, height
        even = width % 2 == 0 and height % 2 == 0
        if plan.codec == "gif":
            self.pix_fmt = "pal8"
        elif plan.codec == "av1" and not even:
            raise ConfigError(f"AV1 here needs an even width and height, not {width}x{height}; "
                              "use `codec` h264 or vp9")
        elif even:
            self.pix_fmt = "yuv420p"
        else:  # 4:2:0 needs even sides; H.264/H.265/VP9 hold 4:4:4 as well
            self.pix_fmt = "yuv444p"
        self.stream.pix_fmt = self.pix_fmt
        self.stream.time_base = time_base
        self.stream.codec_context.time_base = time_base
        if plan.options:
            self.stream.options = dict(plan.options)
        cc, src = self.stream.codec_context, like.codec_context
        self.colorspace = src.colorspace if src.colorspace in _MATRICES else None
        self.color_range = src.color_range or None
        if plan.codec != "gif":
            for name in ("color_primaries", "color_trc", "colorspace", "color_range"):
                value = getattr(src, name, 0)
                if value:
                    try:
                        setattr(cc, name, value)
                    except (ValueError, TypeError, AttributeError):  # not settable here: untagged
                        pass
        self._graph = self._palette_graph(av, width, height) if plan.codec == "gif" else None
        pix = src.format.name if src.format else ""
        self.ten_bit = "10" in pix or "12" in pix

    def write(self, rgb: np.ndarray, pts: int | None) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        if pts is not None and self.time_base != self.in_time_base:
            pts = int(round(pts * self.in_time_base / self.time_base))
        frame.pts, frame.time_base = pts, self.time_base
        if self._graph is not None:
            self._graph.push(frame)
            self._drain()
            return
        yuv = frame.reformat(format=self.pix_fmt, dst_colorspace=self.colorspace,
                             dst_color_range=self.color_range)
        yuv.pts, yuv.time_base = pts, self.time_base
        for packet in self.stream.encode(yuv):
            self.out.mux(packet)

    def flush(self) -> None:
        if self._graph is not None:
            self._graph.push(None)
            self._drain()
        for packet in self.stream.encode(None):
            self.out.mux(packet)

    def _drain(self) -> None:
        import av

        while True:
            try:
                frame = self._graph.pull()
            except (av.BlockingIOError, av.EOFError):
                return
            for packet in self.stream.encode(frame):
                self.out.mux(packet)

    def _palette_graph(self, av, width: int, height: int):
        g = av.filter.Graph()
        src = g.add_buffer(width=width, height=height, format="rgb24", time_base=self.time_base)
        split = g.add("split")
        palette = g.add("palettegen", "stats_mode=single:reserve_transparent=0")
        use = g.add("paletteuse", "new=1:dither=sierra2_4a")
        sink = g.add("buffersink")
        src.link_to(split)
        split.link_to(palette, 0, 0)
        split.link_to(use, 1, 0)
        palette.link_to(use, 0, 1)
        use.link_to(sink)
        g.configure()
        return g


_MATRICES = {1, 5, 6, 7, 9}  # BT.709, BT.601 (470BG, SMPTE170M), SMPTE240M, BT.2020 NCL


class AudioOut:
    """One input audio stream into the output: its packets copied, or decoded and re-encoded
    with ``encoder`` (rate and layout kept where the encoder allows)."""

    def __init__(self, out, stream, encoder: str) -> None:
        self.out, self.encoder = out, encoder
        if encoder == "copy":
            self.stream = out.add_stream_from_template(stream)
            return
        import av

        rate = stream.codec_context.sample_rate or 48000
        codec = av.codec.Codec(encoder, "w")
        rates = list(codec.audio_rates or [])
        if rates and rate not in rates:
            rate = 48000 if 48000 in rates else max(rates)
        self.stream = out.add_stream(encoder, rate=rate)
        layout = stream.codec_context.layout.name if stream.codec_context.layout else "stereo"
        channels = stream.codec_context.channels or 2
        if channels > 2 and encoder in ("libmp3lame",):
            layout = "stereo"
        self.stream.layout = layout
        fmt = codec.audio_formats[0].name if codec.audio_formats else "fltp"
        self.stream.format = fmt
        self.stream.time_base = Fraction(1, rate)
        self.decoder = stream.codec_context
        self.rate, self.layout, self.format = rate, layout, fmt
        self._resampler = None
        self._fifo = av.AudioFifo()
        self._start: int | None = None
        self._written = 0

    def write(self, packet) -> None:
        if self.encoder == "copy":
            packet.stream = self.stream
            self.out.mux(packet)
            return
        for frame in self.decoder.decode(packet):
            self._push(frame)

    def flush(self) -> None:
        if self.encoder == "copy":
            return
        for frame in self.decoder.decode(None):
            self._push(frame)
        if self._resampler is not None:
            for frame in self._resampler.resample(None):
                self._fifo.write(frame)
        self._encode(final=True)
        for packet in self.stream.encode(None):
            self.out.mux(packet)

    def _push(self, frame) -> None:
        import av

        if self._resampler is None:
            self._resampler = av.AudioResampler(format=self.format, layout=self.layout,
                                                rate=self.rate)
        if self._start is None:  # output samples count from the first frame's own time
            self._start = max(int(round((frame.time or 0.0) * self.rate)), 0)
        frame.pts = None
        for out in self._resampler.resample(frame):
            out.pts = None
            self._fifo.write(out)
        self._encode(final=False)

    def _encode(self, final: bool) -> None:
        size = self.stream.codec_context.frame_size or 1024
        while self._fifo.samples >= size or (final and self._fifo.samples):
            frame = self._fifo.read(min(size, self._fifo.samples))
            frame.pts = (self._start or 0) + self._written
            frame.time_base = Fraction(1, self.rate)
            self._written += frame.samples
            for packet in self.stream.encode(frame):
                self.out.mux(packet)


#: Container tags that describe the file's making, not its content: FFmpeg writes its own.
_MAKING_TAGS = {"major_brand", "minor_version", "compatible_brands", "encoder", "duration"}
#: Stream tags carried from each input stream to its output stream.
STREAM_TAGS = ("language", "title")


def carry_tags(inp, out, pairs) -> None:
    """The input container's tags (title, artist, date, comment, creation time, ...) onto
    ``out`` and each input stream's language and title onto its output stream; ``pairs``:
    (input stream, output stream). Call before the first packet is muxed (the header holds
    them). A GIF holds no tags, which FFmpeg ignores."""
    for key, value in (inp.metadata or {}).items():
        if key.lower() not in _MAKING_TAGS and value:
            out.metadata[key] = value
    for src, dst in pairs:
        for key in STREAM_TAGS:
            value = (src.metadata or {}).get(key)
            if value and not (key == "language" and value == "und"):
                dst.metadata[key] = value
