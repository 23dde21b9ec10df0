"""A steady change along each video track: the generator's change filtered over time.

A generator answers small differences between frames (codec noise, a pixel of motion) with
different blotches, so the change it makes comes and goes from frame to frame even on a still
face (see facecomp.measure.flicker for the measure). The crops are aligned to the face, so the change
lives in a face-fixed frame; per track this keeps a running average of the crop-space change
``translated - crop``:

    carried = warp(steady_{t-1}, flow of the crop from t-1 to t)  (what is left of head motion)
    w       = a + (1 - a) * (1 - exp(-(e / reset)^2)),  a = 1 - exp(-dt / tau)
    steady_t = carried + w * (change_t - carried)

where ``e`` is how much the input crop itself changed at each pixel after that motion (an eye
closing, a mouth opening, a hand passing, the light): there the new change is taken at once, so
real changes do not lag or leave ghosts, and only the flicker over a face that stays the same
is averaged away. The crop's flow is DIS optical flow (OpenCV) on the small crops, about a
millisecond a face. A new track, a gap in a track or a change of direction starts afresh.

The same flow lets a frame skip the generator (``every``): where fewer than REUSE_CHANGED_SHARE
of the face's pixels changed by the reset level since the last frame, the last change, coarse
and fine band, is carried along the flow instead (the fine band with a cubic warp, which keeps
its detail). The generator still runs at least every ``every`` frames and at once where the
face changed. Plan every crop of a batch first (:meth:`SteadyChange.plan`, input crops only),
run the generator on those that need it, then apply the steps in order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

#: Input change (levels, after a small blur) at which a pixel's change is mostly taken afresh.
RESET_LEVEL = 10.0
#: A track seen again after this many time constants starts afresh.
GAP_TAUS = 4.0
#: Only the change coarser than this Gaussian sigma (share of the crop's side) is averaged; the
#: finer part (grain, edges) is each frame's own, so repeated warps never blur it.
BAND_SHARE = 1 / 80
#: A frame may reuse the last change (see ``every``) only while fewer than this share of the
#: face's pixels changed by more than the reset level since the last frame.
REUSE_CHANGED_SHARE = 0.02


@dataclass
class Step:
    """What :meth:`SteadyChange.plan` learnt of one track's new crop: how it moved since the
    track's last crop, how much it changed, and whether the generator must run on it."""

    track_id: int
    x: np.ndarray  # (S, S, 3) float32, the input crop
    t: float
    generate: bool
    fresh: bool  # the track starts afresh: the generator's change as it comes
    maps: tuple[np.ndarray, np.ndarray] | None = None  # where each pixel was in the last crop
    changed: np.ndarray | None = None  # (S, S) input change after motion, levels
    dt: float = 0.0


@dataclass
class _Seen:
    gray: np.ndarray  # (S, S) uint8, the last input crop
    x: np.ndarray  # (S, S, 3) float32, the same
    time: float
    direction: str
    reused: int  # frames in a row that reused the change


@dataclass
class _Change:
    coarse: np.ndarray  # (S, S, 3) float32, the steady coarse change
    fine: np.ndarray  # (S, S, 3) float32, the last frame's fine change


class SteadyChange:
    """Per track, the running average of the generator's change (see the module).

    ``tau``: time constant in seconds (0: off, the change of each frame as it comes);
    ``reset``: input change in levels at which a pixel's change is taken afresh;
    ``every``: the generator runs on a track at least every ``every`` frames; in between, a
    frame whose face stayed the same (fewer than REUSE_CHANGED_SHARE of its pixels changed by
    ``reset``) takes the last frame's change carried along the face's motion, coarse and fine
    band alike, without running the generator (1: it runs on every frame).
    ``region``: (S, S) bool, where in the crop that share is counted (the face; the
    background around a moving head changes in any case); the whole crop if None.

    Call :meth:`plan` on each crop of a track in order, run the generator on the crops whose
    step says ``generate``, then :meth:`apply` the steps in the same order.
    """

    def __init__(self, tau: float, reset: float = RESET_LEVEL, every: int = 1,
                 region: np.ndarray | None = None) -> None:
        if tau < 0 or reset <= 0 or every < 1:
            raise ValueError(f"tau must be >= 0, reset > 0 and every >= 1, got {tau}, {reset}, "
                             f"{every}")
        self.tau = tau
        self.reset = reset
        self.every = every
        self.region = region
        self._seen: dict[int, _Seen] = {}
        self._change: dict[int, _Change] = {}
        self._dis = None
        self._grid: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, track_id: int, crop: np.ndarray, translated: np.ndarray, t: float,
                 direction: str = "") -> np.ndarray:
        """The steady translated crop (S, S, 3) uint8 for this track at time ``t``: plan and
        apply in one, the generator having run."""
        return self.apply(self.plan(track_id, crop, t, direction), translated)

    def plan(self, track_id: int, crop: np.ndarray, t: float, direction: str = "") -> Step:
        """The next crop of a track: its motion since the track's last crop and whether the
        generator must run on it."""
        x = crop.astype(np.float32)
        if self.tau <= 0:
            return Step(track_id, x, t, generate=True, fresh=True)
        gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
        prev = self._seen.get(track_id)
        dt = t - prev.time if prev is not None else math.inf
        if (prev is None or prev.direction != direction or prev.gray.shape != gray.shape
                or not 0 < dt <= GAP_TAUS * self.tau):
            self._seen[track_id] = _Seen(gray, x, t, direction, 0)
            return Step(track_id, x, t, generate=True, fresh=True)
        if self._dis is None:
            self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
        flow = self._dis.calc(gray, prev.gray, None)  # where each pixel of t was at t-1
        gx, gy = self._mesh(gray.shape[0])
        maps = (gx + flow[..., 0], gy + flow[..., 1])
        before = cv2.remap(prev.x, *maps, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        e = cv2.GaussianBlur(np.abs(x - before).mean(axis=2), (0, 0), 1.5)
        generate = prev.reused + 1 >= self.every
        if not generate:
            moved = e > self.reset
            share = float(moved[self.region].mean() if self.region is not None else moved.mean())
            generate = share >= REUSE_CHANGED_SHARE
        self._seen[track_id] = _Seen(gray, x, t, direction, 0 if generate else prev.reused + 1)
        return Step(track_id, x, t, generate, fresh=False, maps=maps, changed=e, dt=dt)

    def apply(self, step: Step, translated: np.ndarray | None) -> np.ndarray:
        """The steady translated crop for a planned step; ``translated`` is the generator's
        output for it, or None where the step did not ask for one."""
        x = step.x
        prev = self._change.get(step.track_id)
        if translated is None and (step.generate or prev is None):
            raise ValueError("this step needs the generator's output")
        if self.tau <= 0:
            return translated
        if step.fresh or prev is None:
            self._change[step.track_id] = _Change(*_bands(translated, x))
            return translated
        carried = cv2.remap(prev.coarse, *step.maps, cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
        if translated is None:  # the face stayed the same: its last change, moved with it
            steady = carried
            # cubic: a linear warp by half a pixel halves the finest detail (wrinkles, grain)
            fine = cv2.remap(prev.fine, *step.maps, cv2.INTER_CUBIC,
                             borderMode=cv2.BORDER_REPLICATE)
        else:
            coarse, fine = _bands(translated, x)
            a = 1.0 - math.exp(-step.dt / self.tau)
            w = a + (1.0 - a) * (1.0 - np.exp(-np.square(step.changed / self.reset)))
            steady = carried + w[..., None] * (coarse - carried)
        self._change[step.track_id] = _Change(steady, fine)
        return np.clip(x + steady + fine + 0.5, 0, 255).astype(np.uint8)

    def _mesh(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        if size not in self._grid:
            gy, gx = np.mgrid[0:size, 0:size].astype(np.float32)
            self._grid[size] = (gx, gy)
        return self._grid[size]

    def keep_only(self, track_ids: set[int]) -> None:
        """Forget tracks that ended."""
        for store in (self._seen, self._change):
            for k in [k for k in store if k not in track_ids]:
                del store[k]


def _bands(translated: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The generator's change ``translated - x``: its coarse band (Gaussian sigma BAND_SHARE
    of the crop's side, the part averaged over time) and the rest, the fine band."""
    change = translated.astype(np.float32) - x
    coarse = cv2.GaussianBlur(change, (0, 0), BAND_SHARE * x.shape[0])
    return coarse, change - coarse
