"""Image files in and out: the one place that talks to Pillow and that changes colour order.

Conventions:

* Pixels at the package edges are RGB ``uint8`` arrays, HxWx3, C-contiguous; an alpha channel,
  when there is one, travels separately as an HxW ``uint8`` array.
* Reading applies the EXIF orientation, so faces come out upright, and returns the EXIF with its
  orientation tag reset to 1. Sources that are not 8-bit RGB are converted here: 16-bit samples
  are scaled with ``round(v / 257)``; CMYK goes through its embedded ICC profile to sRGB when it
  has one; only RGB ICC profiles are kept (a grey or CMYK profile does not describe RGB pixels).
* Every failure a user can cause is an :class:`InputError`, :class:`OutputError` or
  :class:`ConfigError` with a one-line message naming the file; a wrong array passed by calling
  code is a :class:`ValueError`. No other exception leaves :func:`read_image` or
  :func:`decode_image`, whatever the bytes (``MemoryError`` and ``KeyboardInterrupt`` excepted).
* Pillow's decompression-bomb limit is a process-global setting, so decoding sets it under a
  module lock: reads are serialised across threads (use processes to decode in parallel).
* Files are written through :func:`atomic_path`: a temporary file in the same folder, fsync'ed
  and renamed into place, so an output is either complete or absent.
"""

from __future__ import annotations

import errno
import functools
import io
import logging
import os
import secrets
import stat
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np
from PIL import Image, ImageOps, features

from facecomp.errors import ConfigError, FaceCompError, InputError, OutputError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
DEFAULT_MAX_PIXELS: int = 200_000_000

_WRITE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP",
                  ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}
_ALPHA_FORMATS = frozenset({"PNG", "WEBP", "TIFF"})
_ORIENTATION = 0x0112
_JPEG_MAX_EXIF = 65533
_TMP_PREFIX = ".facecomp-tmp-"
_PILLOW_LOCK = threading.Lock()
_E = TypeVar("_E", bound=FaceCompError)


@dataclass(frozen=True, eq=False)
class LoadedImage:
    """A decoded image, upright, with the metadata needed to write a look-alike output."""

    rgb: np.ndarray            # HxWx3 uint8, upright (EXIF orientation already applied)
    alpha: np.ndarray | None   # HxW uint8 if the file had an alpha channel or transparency
    format: str                # Pillow format name of the source: "JPEG", "PNG", "WEBP", ...
    path: Path | None
    icc_profile: bytes | None  # an RGB ICC profile, passed on to the output
    exif: bytes | None         # EXIF with orientation reset to 1, or None
    n_frames: int              # >1 for animations and multi-page files (frame 0 is loaded)
    mode: str = "RGB"          # Pillow mode of the source ("RGB", "L", "CMYK", ...)
    orientation: int = 1       # the source's EXIF orientation (rgb is already upright)

    def __post_init__(self) -> None:
        _check_pixels(self.rgb, self.alpha)


# ---------------------------------------------------------------------------------------------
# Finding files


def is_image_path(path: Path) -> bool:
    """Whether ``path`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name.

    Skips hidden files and our own outputs (names containing ``.facecomp.``).
    """
    folder = Path(folder)
    try:
        with os.scandir(folder) as entries:
            names = [e.name for e in entries
                     if is_image_path(Path(e.name)) and not e.name.startswith(".")
                     and ".facecomp." not in e.name.lower() and e.is_file()]
    except OSError as exc:
        if isinstance(exc, NotADirectoryError):
            raise _error(InputError, folder, "is a file, not a folder; pass a folder of images") \
                from exc
        raise _read_error(folder, exc, "folder") from exc
    return [folder / name for name in sorted(names)]


# ---------------------------------------------------------------------------------------------
# Reading


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Read an image file into a :class:`LoadedImage` (see the module docstring for conventions).

    Raises :class:`InputError` for anything wrong with the file, :class:`ConfigError` for a bad
    ``max_pixels``.
    """
    path = Path(path)
    _check_max_pixels(max_pixels)
    try:
        if path.is_dir():
            raise _error(InputError, path, "is a folder, not an image file; pass an image file")
        with open(path, "rb") as fp:
            if os.fstat(fp.fileno()).st_size == 0:
                raise _error(InputError, path, "the file is empty; re-export or re-download it")
            return _decode(fp, path, path, max_pixels)
    except OSError as exc:
        raise _read_error(path, exc) from exc


def decode_image(data: bytes, name: str = "<bytes>",
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Decode an encoded image held in memory; ``name`` is used in error messages."""
    _check_max_pixels(max_pixels)
    if len(data) == 0:
        raise _error(InputError, name, "the file is empty; re-export or re-download it")
    return _decode(io.BytesIO(data), name, None, max_pixels)


def _decode(fp: BinaryIO, name: str | Path, path: Path | None, max_pixels: int) -> LoadedImage:
    """Open, size-check and load frame 0 under our own decompression-bomb limit."""
    with _PILLOW_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # Pillow's complaints about damaged metadata: logged
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        saved_limit = Image.MAX_IMAGE_PIXELS
        try:
            Image.MAX_IMAGE_PIXELS = None  # the header is checked below, with its size
            try:
                im = Image.open(fp, formats=_read_formats())
            except MemoryError:
                raise
            except Exception as exc:  # Pillow raises many kinds on bad headers
                reason = "unknown format" if isinstance(exc, Image.UnidentifiedImageError) \
                    else _reason(exc)
                raise _error(InputError, name, f"not an image Pillow can read ({reason}); "
                             "convert it to JPEG or PNG") from exc
            with im:
                width, height = im.size
                if width * height > max_pixels:
                    raise _bomb_error(name, f"{width}x{height} pixels", max_pixels)
                if width <= 0 or height <= 0:
                    raise _error(InputError, name, f"the image is {width}x{height} pixels; "
                                 "pass an image with pixels")
                Image.MAX_IMAGE_PIXELS = max_pixels  # for frames and tiles met while decoding
                try:
                    return _load(im, path)
                except (MemoryError, FaceCompError):
                    raise
                except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                    raise _bomb_error(name, "a frame or tile", max_pixels) from exc
                except Exception as exc:
                    raise _error(InputError, name, "the image data is truncated or corrupt "
                                 f"({_reason(exc)}); re-export or re-download it") from exc
        finally:
            Image.MAX_IMAGE_PIXELS = saved_limit
            for warning in caught:
                log.warning("%s: %s", name, " ".join(str(warning.message).split()))


def _load(im: Image.Image, path: Path | None) -> LoadedImage:
    im.load()
    source_format = im.format or "unknown"
    icc = im.info.get("icc_profile") or None
    orientation = _orientation(im)
    upright = ImageOps.exif_transpose(im) if orientation in range(2, 9) else im
    exif = _upright_exif(im)  # edits im's EXIF in place, so only after the transpose
    rgb, alpha, icc = _to_rgb(upright, icc)
    return LoadedImage(rgb=rgb, alpha=alpha, format=source_format, path=path,
                       icc_profile=icc, exif=exif, n_frames=_frame_count(im), mode=im.mode,
                       orientation=orientation)


def _to_rgb(im: Image.Image,
            icc: bytes | None) -> tuple[np.ndarray, np.ndarray | None, bytes | None]:
    """Pixels as (RGB uint8, alpha uint8 or None) plus the ICC profile that still applies."""
    mode = im.mode
    if mode.startswith("I;16"):   # 16-bit grey, any byte order
        grey = (np.asarray(im).astype(np.uint32) + 128) // 257
    elif mode == "I":             # 32-bit int: Pillow's container for 16-bit grey sources
        grey = (np.clip(np.asarray(im), 0, 65535).astype(np.uint32) + 128) // 257
    elif mode == "F":             # float: [0, 1] if it fits there, else Pillow's [0, 255]
        values = np.nan_to_num(np.asarray(im, dtype=np.float32), nan=0.0, posinf=255, neginf=0)
        scale = 255.0 if values.size and 0.0 <= values.min() and values.max() <= 1.0 else 1.0
        grey = np.clip(np.rint(values * scale), 0, 255)
    else:
        grey = None
    if grey is not None:
        rgb = np.repeat(grey.astype(np.uint8)[:, :, None], 3, axis=2)
        return rgb, None, _rgb_profile(icc)
    if mode == "CMYK" and icc is not None:
        converted = _cmyk_to_srgb(im, icc)
        if converted is not None:
            return np.array(converted), None, None
    if mode == "La":
        im = im.convert("LA")
    if im.has_transparency_data:
        rgba = np.asarray(im if im.mode == "RGBA" else im.convert("RGBA"))
        return np.ascontiguousarray(rgba[:, :, :3]), np.ascontiguousarray(rgba[:, :, 3]), \
            _rgb_profile(icc)
    return np.array(im if mode == "RGB" else im.convert("RGB")), None, _rgb_profile(icc)


def _cmyk_to_srgb(im: Image.Image, icc: bytes) -> Image.Image | None:
    """Colour-manage CMYK through its own profile; None (use Pillow's naive formula) on failure."""
    try:
        from PIL import ImageCms
        return ImageCms.profileToProfile(im, ImageCms.ImageCmsProfile(io.BytesIO(icc)),
                                         ImageCms.createProfile("sRGB"), outputMode="RGB")
    except MemoryError:
        raise
    except Exception as exc:
        log.debug("CMYK ICC conversion failed (%s); using the plain formula", _reason(exc))
        return None


def _rgb_profile(icc: bytes | None) -> bytes | None:
    """The profile if it describes RGB data (ICC header bytes 16..20), else None."""
    return icc if icc is not None and icc[16:20] == b"RGB " else None


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_ORIENTATION, 1)
        return value if isinstance(value, int) else 1
    except MemoryError:
        raise
    except Exception:  # a broken EXIF block should not lose the picture
        return 1


def _upright_exif(im: Image.Image) -> bytes | None:
    """The source EXIF with orientation 1, or None. TIFF tags are not EXIF and are not kept."""
    if im.format == "TIFF":
        return None
    try:
        exif = im.getexif()
        if not exif:
            return None
        if _ORIENTATION in exif:
            exif[_ORIENTATION] = 1
        return exif.tobytes()
    except MemoryError:
        raise
    except Exception as exc:
        log.debug("dropping unreadable EXIF (%s)", _reason(exc))
        return None


def _frame_count(im: Image.Image) -> int:
    try:
        return max(1, int(getattr(im, "n_frames", 1)))
    except MemoryError:
        raise
    except Exception as exc:  # a broken later frame does not spoil frame 0
        log.debug("cannot count frames (%s)", _reason(exc))
        return 1


@functools.cache
def _read_formats() -> tuple[str, ...]:
    """Every format Pillow can open except EPS, whose loader runs Ghostscript on the file."""
    Image.init()
    return tuple(sorted(f for f in Image.OPEN if f != "EPS"))


def _check_max_pixels(max_pixels: int) -> None:
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ConfigError(f"`max_pixels` must be a positive whole number, got {max_pixels!r}")


# ---------------------------------------------------------------------------------------------
# Writing


def write_image(path: str | Path, rgb: np.ndarray, alpha: np.ndarray | None = None, *,
                like: LoadedImage | None = None, quality: int = 95,
                overwrite: bool = False, keep_jpeg_blocks: bool = True) -> None:
    """Write ``rgb`` (and ``alpha`` where the format has one) in the format of the extension.

    ``like`` passes on the ICC profile and EXIF of a source image. ``quality`` (1..100) applies
    to JPEG and WebP; JPEG at 90 or more keeps full colour resolution (4:4:4). A JPEG written
    like a JPEG source keeps the source's blocks wherever its pixels are unchanged, with the
    source's quantisation, subsampling and markers (:mod:`facecomp.jpeg`; ``quality`` is then
    the source's), unless ``keep_jpeg_blocks`` is False. The write is atomic (see
    :func:`atomic_path`).
    """
    path = Path(path)
    fmt = _WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        kind = path.suffix or "files without an extension"
        raise _error(OutputError, path, f"cannot write {kind}; use one of "
                     f"{', '.join(sorted(_WRITE_FORMATS))}")
    _check_pixels(rgb, alpha)
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ConfigError(f"`quality` must be a whole number from 1 to 100, got {quality!r}")
    if alpha is not None and fmt not in _ALPHA_FORMATS:
        if (alpha < 255).any():
            log.warning("%s: %s has no transparency; the alpha channel is dropped", path, fmt)
        alpha = None
    pixels = np.dstack([rgb, alpha]) if alpha is not None else np.ascontiguousarray(rgb)
    options: dict[str, object] = {}
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = quality
    if fmt == "JPEG" and quality >= 90:
        options["subsampling"] = 0
    if fmt == "PNG":  # zlib level 3, not Pillow's 6: 2.4x faster on a 2 MP photo, 3 % larger
        options["compress_level"] = 3
    if fmt == "TIFF" and features.check("libtiff"):
        options["compression"] = "tiff_deflate"
    if like is not None and like.icc_profile:
        options["icc_profile"] = like.icc_profile
    if like is not None and like.exif:
        if fmt == "JPEG" and len(like.exif) > _JPEG_MAX_EXIF:
            log.warning("%s: the EXIF block is too large for JPEG and is dropped", path)
        elif fmt != "BMP":
            options["exif"] = like.exif
    from . import jpeg

    keep_blocks = fmt == "JPEG" and keep_jpeg_blocks and like is not None \
        and like.format == "JPEG"
    why = jpeg.keeps_blocks(like) if keep_blocks else None
    if keep_blocks and why is not None:
        log.info("%s: the whole picture is encoded again (%s)", path, why)
    with atomic_path(path, overwrite) as tmp:
        if keep_blocks and why is None:
            done, share = jpeg.write_like(tmp, rgb, like)
            if done:
                log.debug("%s: %.1f %% of the blocks encoded again", path, 100 * share)
                return
        Image.fromarray(pixels).save(tmp, format=fmt, **options)


def _check_pixels(rgb: np.ndarray, alpha: np.ndarray | None) -> None:
    """ValueError unless rgb is HxWx3 uint8 and alpha is None or HxW uint8 of the same size."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 \
            or rgb.shape[2] != 3 or 0 in rgb.shape:
        raise ValueError(f"rgb must be a non-empty HxWx3 uint8 array, got "
                         f"{getattr(rgb, 'shape', type(rgb).__name__)} {getattr(rgb, 'dtype', '')}")
    if alpha is not None and (not isinstance(alpha, np.ndarray) or alpha.dtype != np.uint8
                              or alpha.shape != rgb.shape[:2]):
        raise ValueError(f"alpha must be a {rgb.shape[0]}x{rgb.shape[1]} uint8 array, got "
                         f"{getattr(alpha, 'shape', type(alpha).__name__)} "
                         f"{getattr(alpha, 'dtype', '')}")


def check_output(path: str | Path, overwrite: bool = False) -> None:
    """An OutputError when ``path`` is a folder, or exists and may not be replaced; callers
    whose output comes after long work check it before starting (atomic_path checks it too)."""
    path = Path(path)
    if path.is_dir():
        raise _error(OutputError, path, "is a folder; give a file name for the output")
    if os.path.lexists(path) and not overwrite:
        raise _error(OutputError, path, "already exists; pass `overwrite=True` to replace it")


@contextmanager
def atomic_path(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place if the block succeeds.

    The temporary file is named ``.facecomp-tmp-*`` with the final extension, is fsync'ed before
    ``os.replace`` and is deleted on any exception. An existing ``path`` is refused unless
    ``overwrite`` (then its permission bits are kept). ``OSError`` from the filesystem, also
    from inside the block, becomes a one-line :class:`OutputError`.
    """
    path = Path(path)
    folder = path.parent
    tmp = folder / f"{_TMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}{path.suffix}"
    try:
        check_output(path, overwrite)
        if not folder.is_dir():
            raise _error(OutputError, path, f"the folder {folder} does not exist; create it first")
        # 0o666 less the umask, like any new file (mkstemp would make it 0o600).
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as exc:
        raise _write_error(path, exc) from exc
    try:
        yield tmp
        with open(tmp, "rb+") as fp:
            os.fsync(fp.fileno())
        if os.path.lexists(path):
            if not overwrite:  # appeared while we were writing
                raise _error(OutputError, path, "already exists; pass `overwrite=True` to replace it")
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        else:  # writers that replace the file themselves (safetensors) may leave it 0o600
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("%s: cannot remove the temporary file %s (%s)", path, tmp, exc.strerror)


def remove_stale_temporaries(folder: Path) -> int:
    """Delete the temporary files that a killed run left in ``folder`` (only call this where
    no other facecomp process is writing); returns how many there were."""
    n = 0
    for tmp in Path(folder).glob(f"{_TMP_PREFIX}*"):
        log.info("removing %s, left by an interrupted run", tmp)
        tmp.unlink(missing_ok=True)
        n += 1
    return n


def remove_orphaned_temporaries(folder: Path) -> int:
    """Delete the temporary files in ``folder`` whose writing process no longer runs (killed by
    SIGKILL or a power cut); safe beside other running facecomp processes, whose files carry
    their live process id. Returns how many were removed."""
    n = 0
    for tmp in Path(folder).glob(f"{_TMP_PREFIX}*"):
        pid = tmp.name[len(_TMP_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        log.info("removing %s, left by an interrupted run", tmp)
        tmp.unlink(missing_ok=True)
        n += 1
    return n


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but another user's
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------------------------------------
# Error messages


def _error(cls: type[_E], name: str | Path, message: str) -> _E:
    """``cls("<name>: <message>")`` squeezed onto one line."""
    return cls(" ".join(f"{name}: {message}".splitlines()))


def _reason(exc: BaseException) -> str:
    """A short, one-line account of an exception for use inside parentheses."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 100 else text[:97] + "..."


def _bomb_error(name: str | Path, what: str, max_pixels: int) -> InputError:
    return _error(InputError, name, f"{what} is over the limit of {max_pixels} pixels; "
                  "raise `max_pixels` if you trust this file")


def _read_error(path: Path, exc: OSError, what: str = "file") -> InputError:
    if isinstance(exc, FileNotFoundError):
        return _error(InputError, path, f"no such {what}; check the path")
    if isinstance(exc, PermissionError):
        return _error(InputError, path, "cannot read (permission denied); check its permissions")
    if isinstance(exc, IsADirectoryError):
        return _error(InputError, path, "is a folder, not an image file; pass an image file")
    return _error(InputError, path, f"cannot read ({exc.strerror or _reason(exc)})")


def _write_error(path: Path, exc: OSError) -> OutputError:
    if isinstance(exc, FileNotFoundError):
        return _error(OutputError, path,
                      f"the folder {path.parent} does not exist; create it first")
    if isinstance(exc, PermissionError):
        return _error(OutputError, path,
                      "cannot write here (permission denied); choose another folder")
    if exc.errno == errno.ENOSPC:
        return _error(OutputError, path, "no space left on the device; free some space")
    return _error(OutputError, path, f"cannot write ({exc.strerror or _reason(exc)})")
