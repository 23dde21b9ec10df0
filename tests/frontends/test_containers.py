"""Every common container in and out: frame count, rate, duration, audio (copied, re-encoded or
left out with a warning) and colour tags kept; a pair that cannot work is refused in one line
before any decoding; a stream that starts late (MPEG-TS) is trimmed from its own start; a folder
of videos works like a folder of photos."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

av = pytest.importorskip("av")

from facecomp.frontends.containers import CONTAINERS, plan_output  # noqa: E402
from facecomp.frontends.encode import to_rgb  # noqa: E402
from facecomp.errors import ConfigError  # noqa: E402
from facecomp.pipeline import FaceComp, PhotoConfig  # noqa: E402
from facecomp.frontends.video import VideoConfig, translate_video  # noqa: E402

from ..conftest import SAMPLES, Invert, load_rgb, make_info, one_error_line  # noqa: E402

W, H, FPS, N = 192, 144, 25, 15
RED = (200, 40, 40)  # a saturated patch: a wrong colour matrix moves it by 10+ levels

# input container: (video encoder, pix_fmt, audio encoder or None, audio sample format)
INPUTS = {
    ".mp4": ("libx264", "yuv420p", "aac", "fltp"),
    ".mov": ("libx264", "yuv420p", "pcm_s16le", "s16"),
    ".mkv": ("libx264", "yuv420p", "libopus", "flt"),
    ".webm": ("libvpx-vp9", "yuv420p", "libopus", "flt"),
    ".avi": ("libx264", "yuv420p", "libmp3lame", "fltp"),
    ".ts": ("libx264", "yuv420p", "aac", "fltp"),
    ".m2ts": ("libx264", "yuv420p", "aac", "fltp"),
    ".gif": ("gif", "pal8", None, None),
}


def frames(n: int = N) -> list[np.ndarray]:
    face = load_rgb(SAMPLES / "portrait.jpg")[40:300, 110:340]
    face = cv2.resize(face, (100, 113), interpolation=cv2.INTER_AREA)
    out = []
    for k in range(n):
        img = np.full((H, W, 3), (90, 120, 150), np.uint8)
        img[:20, :40] = RED
        x = 50 + k % 30
        img[15:128, x:x + 100] = face
        out.append(img)
    return out


def write_clip(path: Path, video: str = "libx264", pix_fmt: str = "yuv420p",
               audio: str | None = "aac", sample_fmt: str = "fltp", tags: dict | None = None,
               n: int = N, offset: float = 0.0, title: str | None = None,
               languages: tuple[str, str] | None = None, interlaced: bool = False,
               subtitles: Path | None = None) -> None:
    """A clip of a face moving past a red patch, with a tone; ``tags``: colour tags the frames
    are converted with and the stream carries; ``offset``: when the streams start (seconds);
    ``title``, ``languages`` (video, audio), ``interlaced``: container and stream tags, x264's
    interlaced coding; ``subtitles``: an .srt file muxed in as a subtitle stream."""
    if video == "gif":
        return write_gif(path, n)
    with av.open(str(path), "w") as out:
        if title:
            out.metadata["title"] = title
        vs = out.add_stream(video, rate=FPS)
        vs.width, vs.height, vs.pix_fmt = W, H, pix_fmt
        if video in ("libx264", "libx265"):
            vs.options = {"crf": "10", "preset": "ultrafast"}
            if interlaced:
                vs.options = {**vs.options, "x264-params": "interlaced=1"}
        if languages:
            vs.metadata["language"] = languages[0]
        cues = []
        if subtitles is not None:
            srt = av.open(str(subtitles))
            ss = out.add_stream_from_template(srt.streams[0])
            cues = [p for p in srt.demux() if p.size]
        if video == "libvpx-vp9":
            vs.options = {"crf": "10", "b": "0", "cpu-used": "8", "deadline": "realtime"}
        for k, v in (tags or {}).items():
            setattr(vs.codec_context, k, v)
        a = None
        if audio:
            a = out.add_stream(audio, rate=48000)
            a.layout = "stereo"
            if languages:
                a.metadata["language"] = languages[1]
        for i, img in enumerate(frames(n)):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            if tags:
                f = f.reformat(format=pix_fmt, dst_colorspace=tags.get("colorspace"),
                               dst_color_range=tags.get("color_range"))
            f.pts = i + round(offset * FPS)
            f.time_base = Fraction(1, FPS)
            for p in vs.encode(f):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
        for p in cues:  # muxed once every stream is added
            p.stream = ss
            out.mux(p)
        if cues:
            srt.close()
        if a is not None:
            total = int(48000 * n / FPS)
            size = a.codec_context.frame_size or 1024
            t = np.arange(total) / 48000
            tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for k in range(0, total, size):
                chunk = tone[k:k + size]
                data = np.stack([chunk, chunk])
                if sample_fmt == "s16":
                    data = (data * 32767).astype(np.int16).T.reshape(1, -1)
                elif sample_fmt == "flt":
                    data = data.T.reshape(1, -1)
                af = av.AudioFrame.from_ndarray(data, format=sample_fmt, layout="stereo")
                af.sample_rate, af.pts = 48000, k + round(offset * 48000)
                for p in a.encode(af):
                    out.mux(p)
            for p in a.encode(None):
                out.mux(p)


def write_gif(path: Path, n: int) -> None:
    """An animated GIF with a palette per frame (FFmpeg's palettegen, as a GIF maker would)."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("gif", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = W, H, "pal8"
        g = av.filter.Graph()
        src = g.add_buffer(width=W, height=H, format="rgb24", time_base=Fraction(1, FPS))
        split, pal = g.add("split"), g.add("palettegen", "stats_mode=single")
        use, sink = g.add("paletteuse", "new=1"), g.add("buffersink")
        src.link_to(split)
        split.link_to(pal, 0, 0)
        split.link_to(use, 1, 0)
        pal.link_to(use, 0, 1)
        use.link_to(sink)
        g.configure()
        for i, img in enumerate(frames(n) + [None]):
            if img is not None:
                f = av.VideoFrame.from_ndarray(img, format="rgb24")
                f.pts, f.time_base = i, Fraction(1, FPS)
            g.push(f if img is not None else None)
            while True:
                try:
                    for p in vs.encode(g.pull()):
                        out.mux(p)
                except (av.BlockingIOError, av.EOFError):
                    break
        for p in vs.encode(None):
            out.mux(p)


def probe(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        decoded = list(c.decode(video=0))
        rgb = [to_rgb(f) for f in decoded]
        out = {"frames": len(decoded), "rate": v.average_rate,
               "codec": v.codec_context.codec.canonical_name,
               "audio": [s.codec_context.codec.canonical_name for s in c.streams.audio],
               "first": decoded[0].time, "last": decoded[-1].time, "rgb": rgb,
               "tags": {k: getattr(v.codec_context, k) for k in
                        ("color_primaries", "color_trc", "colorspace", "color_range")}}
    audio_s = 0.0
    if out["audio"]:
        with av.open(str(path)) as c:
            samples = sum(f.samples for f in c.decode(audio=0))
            audio_s = samples / c.streams.audio[0].codec_context.sample_rate
    out["audio_s"] = audio_s
    return out


@pytest.fixture(scope="module")
def fc(detector) -> FaceComp:
    return FaceComp(PhotoConfig(), generator=Invert(), info=make_info("test_invert"),
                    detector=detector)


@pytest.fixture(scope="module")
def mp4(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("containers") / "clip.mp4"
    write_clip(p)
    return p


def check_round_trip(src: Path, dst: Path, audio_expected: list[str]) -> dict:
    a, b = probe(src), probe(dst)
    assert b["frames"] == a["frames"] == N, (src.suffix, dst.suffix)
    assert abs(float(b["rate"]) - FPS) < 0.5, b["rate"]
    assert abs(b["last"] - b["first"] - (a["last"] - a["first"])) <= 1.5 / FPS
    assert b["audio"] == audio_expected, (src.suffix, dst.suffix, b["audio"])
    if audio_expected:  # as long as the video, within an audio frame or two
        assert abs(b["audio_s"] - N / FPS) < 0.08, (b["audio_s"], N / FPS)
    # outside the face the picture is the input's (the red patch, its colour exactly)
    patch = (slice(2, 14), slice(2, 30))
    for x, y in zip(a["rgb"][::5], b["rgb"][::5]):
        gap = np.abs(x[patch].astype(int) - y[patch].astype(int)).mean(axis=(0, 1))
        assert gap.max() < (12 if dst.suffix == ".gif" else 5), (dst.suffix, gap)
        face = (slice(40, 100), slice(80, 130))
        assert np.percentile(np.abs(x[face].astype(int) - y[face].astype(int)), 75) > 20
    return b


@pytest.mark.parametrize("ext", sorted(INPUTS))
def test_every_input_container_is_read(ext, tmp_path, fc):
    video, pix_fmt, audio, sample_fmt = INPUTS[ext]
    src = tmp_path / f"in{ext}"
    write_clip(src, video, pix_fmt, audio, sample_fmt or "fltp")
    dst = tmp_path / "out.mp4"
    report = translate_video(src, dst, fc, VideoConfig(preset="ultrafast", crf=10))
    expected = [] if audio is None else [
        "aac" if audio in ("aac", "pcm_s16le") else {"libopus": "opus",
                                                    "libmp3lame": "mp3"}[audio]]
    check_round_trip(src, dst, expected)
    assert report.frames == N and report.face_frames >= N - 1


@pytest.mark.parametrize("ext", sorted(set(CONTAINERS)))
def test_every_output_container_is_written(ext, mp4, tmp_path, fc, caplog):
    dst = tmp_path / f"out{ext}"
    translate_video(mp4, dst, fc, VideoConfig(preset="ultrafast", crf=10))
    audio = {".webm": ["opus"], ".avi": ["mp3"], ".gif": []}.get(ext, ["aac"])
    b = check_round_trip(mp4, dst, audio)
    assert b["codec"] == {".webm": "vp9", ".gif": "gif"}.get(ext, "h264")
    if ext in (".webm", ".avi"):  # re-encoded, and said so
        assert "re-encoded" in caplog.text
    if ext == ".gif":  # left out, and said so
        assert "holds no sound" in caplog.text


def test_other_codecs_where_the_container_holds_them(mp4, tmp_path, fc):
    for ext, codec, name in ((".mkv", "h265", "hevc"), (".mkv", "vp9", "vp9"),
                             (".mp4", "av1", "av1")):
        dst = tmp_path / f"out_{codec}{ext}"
        translate_video(mp4, dst, fc, VideoConfig(preset="ultrafast", crf=10, codec=codec))
        assert check_round_trip(mp4, dst, ["aac"])["codec"] in (name, "libdav1d", "libaom-av1")


@pytest.mark.parametrize("tags", [
    {"color_primaries": 1, "color_trc": 1, "colorspace": 1, "color_range": 1},  # BT.709 TV
    {"color_primaries": 6, "color_trc": 6, "colorspace": 6, "color_range": 2},  # 601 full range
])
def test_colour_tags_are_carried_and_colours_kept(tags, tmp_path, fc):
    src = tmp_path / "tagged.mp4"
    write_clip(src, tags=tags, audio=None)
    for ext in (".mp4", ".mkv", ".webm"):
        dst = tmp_path / f"out{ext}"
        translate_video(src, dst, fc, VideoConfig(preset="ultrafast", crf=10))
        b = check_round_trip(src, dst, [])
        assert {k: int(v) for k, v in b["tags"].items()} == tags, (ext, b["tags"])


def test_ten_bit_input_is_written_8_bit_with_a_note(tmp_path, fc, caplog):
    src = tmp_path / "deep.mkv"
    write_clip(src, "libx265", "yuv420p10le", audio=None)
    dst = tmp_path / "out.mp4"
    translate_video(src, dst, fc, VideoConfig(preset="ultrafast", crf=10))
    check_round_trip(src, dst, [])
    assert "yuv420p10le input is written 8-bit" in caplog.text


def test_a_late_starting_stream_is_trimmed_from_its_own_start(tmp_path, fc):
    """MPEG-TS streams start at 1.4 s: --start/--end count from there, and the output starts at
    0 with its audio in sync."""
    src = tmp_path / "late.ts"
    write_clip(src, n=50, offset=1.4)
    with av.open(str(src)) as c:
        assert c.start_time / 1e6 > 1.0
    dst = tmp_path / "cut.mp4"
    report = translate_video(src, dst, fc, VideoConfig(preset="ultrafast", start=0.4, end=1.4))
    assert report.frames == 25
    b = probe(dst)
    assert b["frames"] == 25 and b["first"] < 0.05
    assert abs(b["audio_s"] - 1.0) < 0.1


def test_impossible_pairs_and_bad_ranges_are_one_line_before_decoding(mp4, tmp_path,
                                                                      invert_model):
    from typer.testing import CliRunner

    from facecomp.frontends.cli import app

    runner = CliRunner()
    base = ["video", str(mp4), "--model", str(invert_model), "--device", "cpu"]
    cases = [(["-o", str(tmp_path / "a.xyz")], (".xyz", ".webm")),
             (["-o", str(tmp_path / "a.mp4"), "--codec", "vp9"], ("MP4", "vp9", "h264")),
             (["-o", str(tmp_path / "a.gif"), "--codec", "h264"], ("GIF", "gif")),
             (["-o", str(tmp_path / "a.webm"), "--codec", "h265"], ("WebM", "vp9")),
             (["-o", str(tmp_path / "a.mp4"), "--start", "60"], ("--start 60", "past the end")),
             (["-o", str(tmp_path / "a.mp4"), "--start", "0.4", "--end", "0.2"],
              ("--start/--end",)),
             (["-o", str(tmp_path / "a.mp4"), "--preset", "warp"], ("--preset", "ultrafast"))]
    for args, words in cases:
        r = runner.invoke(app, base + args)
        assert r.exit_code == 2, (args, r.output)
        one_error_line(r, *words)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("a.")]
    with pytest.raises(ConfigError, match="cannot hold"):
        plan_output(".avi", "vp9")
    with pytest.raises(ConfigError, match="`crf`"):
        plan_output(".mp4", crf=60)


def test_a_folder_of_videos(tmp_path, invert_model):
    from typer.testing import CliRunner

    from facecomp.frontends.cli import app

    folder = tmp_path / "clips"
    folder.mkdir()
    write_clip(folder / "a.mp4", audio=None)
    write_clip(folder / "b.mkv", audio=None)
    (folder / "notes.txt").write_text("not a video")
    (folder / "broken.mov").write_bytes(b"\0" * 100)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["video", str(folder), "-o", f"{out}/", "--model",
                                 str(invert_model), "--device", "cpu", "--preset", "ultrafast"])
    assert r.exit_code == 1, r.output  # one failed: said in one line, the others written
    assert sorted(p.name for p in out.iterdir()) == ["a.facecomp.mp4", "b.facecomp.mp4"]
    assert "broken.mov" in r.output and "2 written, 1 failed" in r.output
    assert probe(out / "b.facecomp.mp4")["frames"] == N


def test_a_start_past_a_few_seconds_seeks_and_keeps_sync(tmp_path, fc):
    src = tmp_path / "long.mp4"
    write_clip(src, n=100)
    dst = tmp_path / "cut.mkv"
    report = translate_video(src, dst, fc, VideoConfig(preset="ultrafast", start=2.4, end=3.2))
    b = probe(dst)
    assert report.frames == b["frames"] == 20 and b["first"] < 0.05
    assert abs(b["audio_s"] - 0.8) < 0.1


def test_title_languages_are_carried_subtitles_and_interlacing_are_said(mp4, tmp_path, fc, caplog):
    translate_video(mp4, tmp_path / "plain.mp4", fc, VideoConfig(preset="ultrafast"))
    assert "interlaced" not in caplog.text  # a progressive input has no such note
    src = tmp_path / "tagged.mkv"
    srt = tmp_path / "s.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:00,400\nBonjour\n\n")
    write_clip(src, title="Holiday 1998", languages=("fra", "eng"), interlaced=True,
               subtitles=srt)
    for ext in (".mkv", ".mp4"):
        dst = tmp_path / f"out{ext}"
        caplog.clear()
        translate_video(src, dst, fc, VideoConfig(preset="ultrafast", crf=10))
        with av.open(str(dst)) as c:
            assert c.metadata.get("title") == "Holiday 1998", (ext, c.metadata)
            assert c.streams.video[0].language == "fra", ext
            assert c.streams.audio[0].language == "eng", ext
        notes = [r.getMessage() for r in caplog.records if "interlaced input" in r.getMessage()]
        assert len(notes) == 1 and f"({N} frames)" in notes[0], caplog.text
        notes = [r.getMessage() for r in caplog.records if "not carried" in r.getMessage()]
        assert len(notes) == 1 and "subtitle stream 1" in notes[0], caplog.text
