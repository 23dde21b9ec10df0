"""JPEG in, JPEG out, with the background left alone: only the 8x8 blocks under changed pixels
are encoded again.

A JPEG stores each 8x8 block of each component as quantised DCT coefficients. Decoding a photo,
changing its faces and encoding the whole picture again would requantise every block (and
Pillow's encoder would also change the chroma subsampling and quantisation tables). Instead,
:func:`write_like` reads the source's coefficients (``jpeglib``, libjpeg's own DCT access),
encodes the new picture once with the source's quantisation tables and sampling factors, and
takes from that encoding only the blocks whose pixels changed; every other block keeps the
source's coefficients bit for bit, and the file keeps the source's markers (EXIF, ICC profile,
XMP, comments).

Convention: ``changed`` is an (H, W) bool mask in the upright image's frame; a component
sampled at (h, v) of the largest factors (hmax, vmax) has blocks of 8*hmax/h x 8*vmax/v pixels.
What stays bit-identical: every pixel whose blocks (luma and, with subsampled chroma, the
16x16 chroma block around it) hold no changed pixel, except that a decoder which interpolates
chroma ("fancy upsampling", libjpeg's default) blends a chroma block's neighbours into the
pixels on its edge, so a 1-pixel rim next to a re-encoded chroma block may differ by a level.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def available() -> bool:
    try:
        import jpeglib  # noqa: F401
    except ImportError:
        return False
    return True


def keeps_blocks(source) -> str | None:
    """Why a JPEG written from ``source`` (a LoadedImage) cannot keep its blocks, or None when
    it can: the source must be a YCbCr or greyscale JPEG file read as it is stored (no EXIF
    turn, no colour conversion)."""
    if source is None or source.format != "JPEG" or source.path is None:
        return "the source is not a JPEG file"
    if source.mode not in ("RGB", "L"):
        return f"the source is a {source.mode} JPEG"
    if source.orientation != 1:
        return "the source was stored turned (EXIF orientation), so every block moves"
    if not available():
        return "jpeglib is not installed"
    return None


def write_like(tmp: Path, rgb: np.ndarray, source) -> tuple[bool, float]:
    """Write ``rgb`` to ``tmp`` as a JPEG that keeps every block of ``source``'s file whose
    pixels did not change. Returns (written, share of the luma blocks re-encoded); not written
    when the source file cannot be read the same way again (then the caller encodes afresh)."""
    import jpeglib

    from .stages.blend import is_grey

    if rgb.shape != source.rgb.shape:
        return False, 1.0
    changed = np.any(rgb != source.rgb, axis=2)
    try:
        orig = jpeglib.read_dct(str(source.path))
        orig.load()
    except Exception as e:  # a file jpeglib reads differently from Pillow: encode afresh
        log.info("%s: cannot read its DCT blocks (%s); encoded afresh", source.path, e)
        return False, 1.0
    grey = orig.num_components == 1
    if (orig.height, orig.width) != rgb.shape[:2] or orig.num_components not in (1, 3) \
            or orig.has_black:
        return False, 1.0
    factors = np.asarray(orig.samp_factor).reshape(-1, 2)  # (h, v) per component
    comps = ["Y"] if grey else ["Y", "Cb", "Cr"]
    share = 0.0  # of the luma blocks, encoded again
    if changed.any():
        fd, name = tempfile.mkstemp(suffix=".jpg", dir=tmp.parent, prefix=".facecomp-dct-")
        os.close(fd)
        try:
            if grey:
                pixels = np.ascontiguousarray(rgb[..., :1]) if is_grey(rgb) else \
                    np.round(rgb @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)[..., None]
                sp = jpeglib.from_spatial(pixels, jpeglib.JCS_GRAYSCALE)
            else:
                sp = jpeglib.from_spatial(np.ascontiguousarray(rgb), jpeglib.JCS_RGB)
                sp.samp_factor = np.asarray(orig.samp_factor)
            sp.write_spatial(name, qt=orig.qt, quant_tbl_no=orig.quant_tbl_no)
            new = jpeglib.read_dct(name)
            new.load()
        finally:
            Path(name).unlink(missing_ok=True)
        hmax, vmax = factors[:, 0].max(), factors[:, 1].max()
        for c, (fh, fv) in zip(comps, factors):
            old_blocks, new_blocks = getattr(orig, c), getattr(new, c)
            if old_blocks.shape != new_blocks.shape:
                return False, 1.0
            touched = _blocks_touched(changed, 8 * hmax // fh, 8 * vmax // fv,
                                      old_blocks.shape[:2])
            old_blocks[touched] = new_blocks[touched]
            setattr(orig, c, old_blocks)
            if c == "Y":
                share = float(touched.mean())
    orig.write_dct(str(tmp))
    return True, share


def _blocks_touched(changed: np.ndarray, bw: int, bh: int, grid: tuple[int, int]) -> np.ndarray:
    """(rows, cols) bool: which blocks of bw x bh pixels (on a grid of ``grid`` blocks, which
    may reach past the image) hold a changed pixel."""
    rows, cols = grid
    padded = np.zeros((rows * bh, cols * bw), bool)
    h, w = min(changed.shape[0], rows * bh), min(changed.shape[1], cols * bw)
    padded[:h, :w] = changed[:h, :w]
    return padded.reshape(rows, bh, cols, bw).any(axis=(1, 3))
