"""Video: the photo pipeline frame by frame, stable over time, audio kept, memory bounded.

Three threads joined by bounded queues, so memory stays flat however long the video:
  reader   demuxes the input, decodes video frames (upright RGB) and passes audio packets on;
  main     follows the faces of the last frame (re-measured by the detector's last stage), looks
           for new ones every ``detect_every`` frames, tracks them with smoothed landmarks,
           pools the crops of ``batch_frames`` consecutive frames into generator batches and
           pastes the results back;
  writer   encodes H.264 (yuv420p; yuv444p for odd sizes) with the input's timestamps, so
           constant and variable frame rates survive, and muxes the audio packets unchanged.
The output is written to a temporary file beside OUT and renamed at the end: an interrupted run
leaves nothing at OUT and never touches IN. Frames are written upright: an input with rotation
metadata gets upright pixels and no rotation flag, so it displays the same.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import ConfigError, InputError, OutputError, PartialVideo
from ..geometry import box_iou
from ..io import atomic_path
from ..options import VIDEO, default
from ..pipeline import FaceComp
from ..stages.blend import ColorTransform, color_transform
from ..stages.steady import SteadyChange
from ..stages.track import TrackConfig, Tracker
from .containers import OutputPlan, check_encoding, plan_output
from .encode import AudioOut, VideoOut, carry_tags, to_rgb

log = logging.getLogger(__name__)

_END = object()


@dataclass(frozen=True)
class VideoConfig:
    """detect_every: run the full detector at least every K frames, to find new faces; the
    faces of the last frame are followed by the detector's last stage alone (MTCNN's O-Net on
    the previous boxes: a few ms instead of the image pyramid), and a face lost that way is
    looked for at once by the full detector in a window around its last box;
    start/end: trim (seconds, from the video's own start); crf/preset: quality and speed (x264's
    scale and names; other encoders map them); codec: the video codec (auto: the container's
    usual one, facecomp.frontends.containers); batch_frames: frames whose
    crops share generator batches; queue_size: frames buffered between threads;
    color_smoothing: time constant (seconds) of each track's colour-match smoothing (0: off);
    age_smoothing: likewise for each track's estimated age, with a target age;
    steady: time constant (seconds) of each track's running average of the generator's change,
    where the input face stays the same (facecomp.stages.steady; 0: each frame's change as it comes);
    generate_every: with steady on, the generator runs on each face at least every K frames;
    in between, a frame whose face stayed the same reuses the last change, carried along the
    face's motion (1: the generator on every frame)."""

    detect_every: int = default("detect_every")
    start: float = default("start")
    end: float | None = default("end")
    crf: int = default("crf")
    preset: str = default("preset")
    codec: str = default("codec")
    batch_frames: int = 8
    queue_size: int = 16
    color_smoothing: float = 0.3
    age_smoothing: float = 2.0
    steady: float = default("steady")
    generate_every: int = default("generate_every")
    track: TrackConfig = field(default_factory=TrackConfig)

    def __post_init__(self) -> None:
        for option in ("detect_every", "start", "steady", "generate_every"):
            VIDEO[option].check(getattr(self, option))
        if self.end is not None and self.end <= self.start:  # start >= 0: the table's range
            raise ConfigError(f"`start`/`end` must satisfy 0 <= start < end, got "
                              f"{self.start}, {self.end}")
        check_encoding(self.codec, self.crf, self.preset)
        if self.batch_frames < 1 or self.queue_size < 1:
            raise ConfigError("batch_frames and queue_size must be at least 1")
        if self.color_smoothing < 0 or self.age_smoothing < 0:
            raise ConfigError(f"colour and age smoothing must be >= 0 s, got "
                              f"{self.color_smoothing}, {self.age_smoothing}")


class _TrackSmoother:
    """An exponential moving average per track, time constant ``tau`` seconds (0: off)."""

    def __init__(self, tau: float) -> None:
        self.tau = tau
        self._state: dict[int, tuple[Any, float]] = {}

    def _weight(self, prev_t: float, t: float) -> float:
        """How much of a new value to mix in, ``dt`` after the last one."""
        return 1.0 - math.exp(-max(t - prev_t, 0.0) / self.tau)

    def keep_only(self, track_ids: set[int]) -> None:
        """Forget tracks that ended."""
        for k in [k for k in self._state if k not in track_ids]:
            del self._state[k]


class AgeSmoother(_TrackSmoother):
    """Each track's estimated age, averaged over time, so the change a target age asks for
    does not pulse from frame to frame."""

    def __call__(self, track_id: int, age: float, t: float) -> float:
        prev = self._state.get(track_id)
        if prev is not None and self.tau > 0:
            age = prev[0] + (age - prev[0]) * self._weight(prev[1], t)
        self._state[track_id] = (age, t)
        return age


class ColorSmoother(_TrackSmoother):
    """Smooths each track's colour-match transform over time, so colour does not flicker.

    Matching a face's colour frame by frame follows every wobble of the per-frame statistics
    (the mask sliding over hair or background, expressions, codec noise); an exponential moving
    average with time constant ``tau`` seconds keeps the slow changes (lighting) and drops the
    flicker. ``tau`` 0 passes transforms through.
    """

    def __call__(self, track_id: int, transform: ColorTransform | None,
                 t: float) -> ColorTransform | None:
        if self.tau <= 0:
            return transform
        prev = self._state.get(track_id)
        if transform is None:
            return prev[0] if prev is not None else None
        if prev is not None:
            transform = prev[0].blend(transform, self._weight(prev[1], t))
        self._state[track_id] = (transform, t)
        return transform


@dataclass
class VideoReport:
    src: Path
    dst: Path
    frames: int = 0
    face_frames: int = 0  # faces translated, summed over frames
    generated: int = 0  # of those, the ones the generator ran on (the rest reused a change)
    damaged_packets: int = 0  # video packets the decoder refused, skipped
    interlaced_frames: int = 0  # input frames flagged interlaced (written progressive)
    tracks: int = 0
    audio_streams: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None  # set when the input broke off: frames up to there were written

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Frame:
    rgb: np.ndarray  # upright
    pts: int | None
    time: float


def translate_video(src: str | Path, dst: str | Path, pipeline: FaceComp,
                    config: VideoConfig | None = None, *, overwrite: bool = False,
                    on_progress: Callable[[int, int], None] | None = None) -> VideoReport:
    """Translate every tracked face of ``src`` into a new video at ``dst``."""
    import av

    config = config or VideoConfig()
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise InputError(f"{src}: no such file")
    if dst.resolve() == src.resolve():
        raise OutputError(f"{dst}: the output would overwrite the input; choose another -o")
    try:
        plan = plan_output(dst.suffix, config.codec, config.crf, config.preset)
    except ConfigError as e:
        raise ConfigError(f"{dst}: {e}") from None
    try:
        inp = av.open(str(src))
    except Exception as e:  # FFmpeg's errors for non-videos vary: one line, whatever they are
        raise InputError(f"{src}: not a video FFmpeg can read ({_short(e)})") from None
    report = VideoReport(src, dst)
    t0 = time.perf_counter()
    with inp:
        if not inp.streams.video:
            raise InputError(f"{src}: has no video stream")
        vs = inp.streams.video[0]
        vs.thread_type = "AUTO"
        audio = list(inp.streams.audio)
        report.audio_streams = len(audio)
        total = vs.frames or 0
        _check_range(src, inp, vs, config)
        with atomic_path(dst, overwrite=overwrite) as tmp:
            try:
                out = av.open(str(tmp), "w")
            except Exception as e:
                raise OutputError(f"{dst}: cannot write a video here ({_short(e)})") from None
            with out:
                _run(inp, vs, audio, out, plan, pipeline, config, report, total, on_progress)
            if report.frames == 0:  # nothing to write: leave no empty file behind
                raise InputError(f"{src}: no video frames " + (
                    f"from `start` {config.start:g} s on (the video may be shorter)"
                    if config.start > 0 or config.end is not None else
                    "could be decoded") + "; nothing was written")
    report.seconds = time.perf_counter() - t0
    if report.error:
        raise PartialVideo(report)
    if report.interlaced_frames:
        log.warning("%s: interlaced input (%d frames): faces are translated on whole frames "
                    "and the output is progressive; deinterlace it first for the cleanest "
                    "faces (e.g. ffmpeg -vf bwdif)", src, report.interlaced_frames)
    if report.damaged_packets:
        log.warning("%s: %d damaged video packet%s skipped (the frames in %s are missing; "
                    "the frames after may show artefacts up to the next key frame); wrote %d "
                    "frames", src, report.damaged_packets,
                    "" if report.damaged_packets == 1 else "s",
                    "it" if report.damaged_packets == 1 else "them", report.frames)
    if (total and config.start == 0 and config.end is None
            and report.frames < min(0.98 * total, total - 2)):
        log.warning("%s: the input ended after %d of the %d frames its header announces (the "
                    "file may be cut short); the output has %d frames", src, report.frames,
                    total, report.frames)
    return report


def _run(inp, vs, audio, out, plan: OutputPlan, pipeline: FaceComp, c: VideoConfig,
         report: VideoReport, total: int, on_progress) -> None:
    import av

    turn = _first_rotation(Path(inp.name))
    width, height = vs.codec_context.width, vs.codec_context.height
    if turn in (90, 270):
        width, height = height, width
    ovs = VideoOut(out, plan, width, height, vs.average_rate or vs.guessed_rate or Fraction(25),
                   vs.time_base, vs)
    if ovs.ten_bit:
        log.warning("%s: %s input is written 8-bit (%s); the faces are processed in 8 bits",
                    report.src, vs.codec_context.format.name, ovs.pix_fmt)
    oas: dict[int, AudioOut] = {}
    for stream in audio:
        kind = stream.codec_context.codec.canonical_name  # mp3, not the decoder mp3float
        how = plan.audio(kind)
        if how is None:
            log.warning("%s: %s holds no sound; audio stream %d (%s) is left out", report.dst,
                        plan.container.name, stream.index, kind)
            continue
        if how != "copy":
            log.warning("%s: %s cannot hold %s audio; stream %d is re-encoded to %s",
                        report.dst, plan.container.name, kind, stream.index, how)
        oas[stream.index] = AudioOut(out, stream, how)
    audio = [s for s in audio if s.index in oas]
    carry_tags(inp, out, [(vs, ovs.stream)] + [(s, oas[s.index].stream) for s in audio])
    others = [s for s in inp.streams if s.type not in ("video", "audio")]
    if others:
        log.warning("%s: %s not carried over (facecomp writes the video and its audio)",
                    report.dst, ", ".join(f"{s.type} stream {s.index}" for s in others))
    if len(inp.streams.video) > 1:
        log.warning("%s: only the first video stream is translated; %d other%s left out",
                    report.dst, len(inp.streams.video) - 1,
                    "" if len(inp.streams.video) == 2 else "s")

    # times count from the video's own start (a TS stream may start at 1.4 s): one offset for
    # every stream keeps them in sync
    origin = _origin(inp, vs)
    start_pts = {s.index: int(round((origin + c.start) / s.time_base)) if s.time_base else 0
                 for s in [vs] + audio}
    # MPEG-TS and GIF have no index: FFmpeg's seek there can land past every frame, so those
    # (and short skips) are decoded from the start and the frames before --start dropped
    if c.start > 2.0 and not any(n in inp.format.name for n in ("mpegts", "gif")):
        inp.seek(int((origin + c.start) * av.time_base), any_frame=False)

    q_in: queue.Queue = queue.Queue(maxsize=c.queue_size)
    q_out: queue.Queue = queue.Queue(maxsize=c.queue_size)
    errors: list[BaseException] = []
    stop = threading.Event()
    timings = {"decode": 0.0, "detect": 0.0, "align": 0.0, "translate": 0.0, "blend": 0.0,
               "encode": 0.0}

    def put(q: queue.Queue, item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        notes = {"damaged": 0, "interlaced": 0}
        try:
            for item in _demux(inp, vs, audio, c, origin, timings, notes):
                if isinstance(item, str):  # the input broke off
                    report.error = item
                    break
                if not put(q_in, item):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            errors.append(e)
        finally:
            report.damaged_packets = notes["damaged"]
            report.interlaced_frames = notes["interlaced"]
            put(q_in, _END)

    def writer() -> None:
        try:
            while True:
                item = _get(q_out, stop, [])
                if item is _END:
                    break
                t = time.perf_counter()
                if isinstance(item, _Frame):
                    ovs.write(item.rgb, None if item.pts is None
                              else item.pts - start_pts[vs.index])
                else:
                    packet = item
                    shift = start_pts[packet.stream.index]
                    packet.pts, packet.dts = packet.pts - shift, packet.dts - shift
                    oas[packet.stream.index].write(packet)
                timings["encode"] += time.perf_counter() - t
            if not stop.is_set():
                ovs.flush()
                for a in oas.values():
                    a.flush()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
            stop.set()

    threads = [threading.Thread(target=reader, name="facecomp-read", daemon=True),
               threading.Thread(target=writer, name="facecomp-write", daemon=True)]
    for th in threads:
        th.start()
    tracker = Tracker(c.track)
    smoother = ColorSmoother(c.color_smoothing)
    age_smoother = AgeSmoother(c.age_smoothing)
    # the solid part of the face mask in crop space: where colours are matched and where the
    # steady change counts how much a face changed
    face_region = pipeline.face_region
    steady = SteadyChange(c.steady, every=c.generate_every, region=face_region)
    ids: set[int] = set()
    try:
        batch: list[tuple[_Frame, list, list[int]]] = []
        pending_audio: list = []
        index, last_full = 0, -c.detect_every
        while True:
            item = _get(q_in, stop, errors)
            if item is _END:
                break
            if not isinstance(item, _Frame):
                pending_audio.append(item)
                continue
            t = time.perf_counter()
            faces = _faces_of_frame(pipeline, tracker, item.rgb,
                                    due=index - last_full >= c.detect_every)
            if faces is not None and faces[1]:
                last_full = index
            tracks = (tracker.update(faces[0], item.time) if faces is not None
                      else tracker.tracks)
            timings["detect"] += time.perf_counter() - t
            live = [tracks[i] for i in pipeline.large_enough([tr.face for tr in tracks])]
            ids.update(tr.id for tr in tracks)
            batch.append((item, [tr.face for tr in live], [tr.id for tr in live]))
            index += 1
            if len(batch) >= c.batch_frames:
                _flush(batch, pipeline, smoother, age_smoother, steady, face_region, timings,
                       report, q_out, put, pending_audio)
                live_ids = {tr.id for tr in tracker.tracks}
                for s in (smoother, age_smoother, steady):
                    s.keep_only(live_ids)
                batch, pending_audio = [], []
                if on_progress is not None:
                    on_progress(report.frames, total)
        _flush(batch, pipeline, smoother, age_smoother, steady, face_region, timings, report,
               q_out, put, pending_audio)
        if on_progress is not None:
            on_progress(report.frames, total)
    except BaseException:
        stop.set()
        raise
    finally:
        if not stop.is_set():
            put(q_out, _END)
        for th in threads:
            th.join(timeout=60)
        stop.set()
    if errors:
        raise errors[0]
    report.tracks = len(ids)
    report.timings = timings


def _faces_of_frame(pipeline: FaceComp, tracker: Tracker, rgb: np.ndarray, due: bool
                    ) -> tuple[list, bool] | None:
    """This frame's faces and whether the full detector ran; None: keep the tracks as they are.

    The faces seen in the last frame are followed by ``pipeline.refine``. The full detector runs
    when ``due`` (it finds new faces; the followed ones keep their refined measurement, so a
    face is measured the same way from frame to frame). A face that refinement lost, or that
    the tracker holds through a miss, is looked for by the full detector in a window around
    its last box (``pipeline.detect_near``: a few per cent of a full pass at 1080p), or, with a
    detector that cannot, by a full detection at once. A detector that cannot refine runs when
    due; in between the tracks are held.
    """
    seen = [tr.face for tr in tracker.tracks if tr.missed == 0]
    refined = pipeline.refine(rgb, seen) if seen else []
    if refined is None:
        return (pipeline.detect(rgb), True) if due else None
    if due:
        return refined + _new(pipeline.detect(rgb), refined), True
    lost = [tr.face for tr in tracker.tracks if _new([tr.face], refined)]
    if not lost:
        return refined, False
    near = pipeline.detect_near(rgb, lost)
    if near is not None:
        return refined + _new(near, refined), False
    if len(refined) < len(seen):  # lost in this frame
        return pipeline.detect(rgb), True
    return refined, False


def _new(faces: list, known: list) -> list:
    """The faces of ``faces`` that overlap none of ``known`` (IoU < 0.3)."""
    return [f for f in faces if all(box_iou(f.box, g.box) < 0.3 for g in known)]


def _flush(batch, pipeline: FaceComp, smoother: ColorSmoother, ages: AgeSmoother,
           steady: SteadyChange, face_region: np.ndarray, timings, report: VideoReport, q_out,
           put, pending_audio) -> None:
    """The batch's frames through :meth:`FaceComp.change` (the photo path: one generator call
    per direction for the whole batch), with each track's change steadied and its colour match
    smoothed, then sent on. With a target age, each track's smoothed estimated age sets its
    direction and strength."""
    if not batch:
        for packet in pending_audio:
            put(q_out, packet)
        return
    frames = [frame for frame, _, _ in batch]
    faces = [list(fs) for _, fs, _ in batch]
    seen = [(tid, frame.time) for frame, _, ids_ in batch for tid in ids_]
    directions = strengths = None
    if pipeline.config.age is not None and seen:
        t = time.perf_counter()
        estimated = [a for frame, fs in zip(frames, faces)
                     for a in pipeline.estimate_age(frame.rgb, fs)]
        smoothed = [ages(tid, float(a), when) for (tid, when), a in zip(seen, estimated)]
        plans = iter(pipeline.plan(smoothed))
        chosen = [[next(plans) for _ in fs] for fs in faces]
        directions = [[p.direction or pipeline.config.direction for p in ps] for ps in chosen]
        strengths = [[p.strength if p.direction else 0.0 for p in ps] for ps in chosen]
        timings["age"] = timings.get("age", 0.0) + time.perf_counter() - t

    def translate(crops: np.ndarray, dirs: list[str]) -> np.ndarray:
        return _translate(pipeline, steady, crops, seen, dirs, timings, report)

    def color(k: int, out: np.ndarray, crop: np.ndarray) -> ColorTransform | None:
        track, when = seen[k]
        return smoother(track, color_transform(out, crop, face_region), when)

    done = pipeline.change([f.rgb for f in frames], faces, directions=directions,
                           strengths=strengths, translate=translate, color=color)
    for frame, d in zip(frames, done):
        timings["align"] += d.timings["align"]
        timings["blend"] += d.timings["blend"]
        report.face_frames += len(d.patches)
        report.frames += 1
        put(q_out, _Frame(d.image, frame.pts, frame.time))
    for packet in pending_audio:
        put(q_out, packet)


def _translate(pipeline: FaceComp, steady: SteadyChange, crops: np.ndarray,
               seen: list[tuple[int, float]], directions: list[str], timings,
               report: VideoReport) -> np.ndarray:
    """The batch's crops translated and steadied along their tracks (``seen``: track id and
    time of each crop). The generator runs on the crops the steady change asks for."""
    t = time.perf_counter()
    steps = [steady.plan(tid, crops[k], when, directions[k]) for k, (tid, when) in enumerate(seen)]
    run = [k for k, step in enumerate(steps) if step.generate]
    t1 = time.perf_counter()
    out = np.empty_like(crops)
    if run:
        out[run] = pipeline.translate(crops[run], [directions[k] for k in run])
    t2 = time.perf_counter()
    wanted = set(run)
    for k, step in enumerate(steps):
        out[k] = steady.apply(step, out[k] if k in wanted else None)
    timings["translate"] += t2 - t1
    if steady.tau > 0:
        timings["steady"] = timings.get("steady", 0.0) + (t1 - t) + (time.perf_counter() - t2)
    report.generated += len(run)
    return out


def _demux(inp, vs, audio, c: VideoConfig, origin: float, timings, notes: dict[str, int]
           ) -> Iterator[Any]:
    """Upright frames and audio packets within [start, end) counted from ``origin`` (seconds),
    in demux order; a str where the container itself breaks off. Video packets the decoder
    refuses are skipped and counted in ``notes["damaged"]``; interlaced frames are counted in
    ``notes["interlaced"]``."""
    import av

    t = time.perf_counter()
    try:
        for packet in inp.demux(vs, *audio):
            if packet.stream.type == "audio":
                if packet.dts is None or packet.pts is None:
                    continue
                when = float(packet.pts * packet.stream.time_base) - origin
                if when >= c.start and (c.end is None or when < c.end):
                    yield packet
                continue
            try:
                decoded = packet.decode()
            except av.error.InvalidDataError:
                # one damaged packet: FFmpeg's decoder drops it and conceals what follows from
                # the frames it has, as ffmpeg does; the count is reported at the end
                if packet.size:
                    notes["damaged"] += 1
                continue
            for frame in decoded:
                when = float(frame.time) - origin if frame.time is not None else 0.0
                if when < c.start - 1e-6:
                    continue
                if c.end is not None and when >= c.end:
                    return
                if getattr(frame, "interlaced_frame", False):
                    notes["interlaced"] += 1
                rgb = to_rgb(frame)
                turn = int(round(-(getattr(frame, "rotation", 0) or 0))) % 360
                timings["decode"] += time.perf_counter() - t
                yield _Frame(_rotate(rgb, turn), frame.pts, when)
                t = time.perf_counter()
    except (av.error.InvalidDataError, av.error.EOFError) as e:
        yield f"the video data is damaged ({_short(e)})"


def _origin(inp, vs) -> float:
    """Where the video's time starts (seconds): the container's start time, else the video
    stream's, else 0."""
    if inp.start_time is not None:
        return max(inp.start_time / 1_000_000, 0.0)
    if vs.start_time is not None and vs.time_base:
        return max(float(vs.start_time * vs.time_base), 0.0)
    return 0.0


def _check_range(src: Path, inp, vs, c: VideoConfig) -> None:
    """--start at or past the end of a video whose length is known: a one-line usage error
    before any decoding."""
    length = None
    if inp.duration:
        length = inp.duration / 1_000_000
    elif vs.duration and vs.time_base:
        length = float(vs.duration * vs.time_base)
    if length and c.start >= length:
        raise ConfigError(f"{src}: `start` {c.start:g} s is at or past the end of the video "
                          f"({length:.2f} s long); nothing to translate")


def _first_rotation(path: Path) -> int:
    """How far to turn frames clockwise to make them upright (FFmpeg's autorotate rule: the
    negated display-matrix angle), read from the first decoded frame; 0 if none."""
    import av

    try:
        with av.open(str(path)) as c:
            for frame in c.decode(video=0):
                return int(round(-(getattr(frame, "rotation", 0) or 0))) % 360
    except Exception as e:  # a damaged first packet: decoding proper reports what it can
        log.warning("%s: cannot read the rotation from the first frame (%s); assuming none",
                    path, _short(e))
    return 0


def _rotate(rgb: np.ndarray, degrees: int) -> np.ndarray:
    """Rotate clockwise by a multiple of 90 degrees (negative: counter-clockwise)."""
    k = (-degrees // 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb


def _get(q: queue.Queue, stop: threading.Event, errors: list) -> Any:
    while True:
        if errors:
            raise errors[0]
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if stop.is_set():
                return _END


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:120]


def default_output(src: Path) -> Path:
    return src.with_name(f"{src.stem}.facecomp.mp4")


