"""A steady change along each video track: the generator's change filtered over time.

A generator answers small differences between frames (codec noise, a pixel of motion) with
different blotches, so the change it makes comes and goes from frame to frame even on a still
face (see facecomp.flicker for the measure). The crops are aligned to the face, so the change
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


@dataclass
class _State:
    gray: np.ndarray  # (S, S) uint8, the input crop
    crop: np.ndarray  # (S, S, 3) float32, the input crop
    change: np.ndarray  # (S, S, 3) float32, the steady coarse change
    time: float
    direction: str


class SteadyChange:
    """Per track, the running average of the generator's change (see the module).

    ``tau``: time constant in seconds (0: off, the change of each frame as it comes);
    ``reset``: input change in levels at which a pixel's change is taken afresh.
    """

    def __init__(self, tau: float, reset: float = RESET_LEVEL) -> None:
        if tau < 0 or reset <= 0:
            raise ValueError(f"tau must be >= 0 and reset > 0, got {tau}, {reset}")
        self.tau = tau
        self.reset = reset
        self._state: dict[int, _State] = {}
        self._dis = None
        self._grid: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, track_id: int, crop: np.ndarray, translated: np.ndarray, t: float,
                 direction: str = "") -> np.ndarray:
        """The steady translated crop (S, S, 3) uint8 for this track at time ``t``."""
        if self.tau <= 0:
            return translated
        x = crop.astype(np.float32)
        change = translated.astype(np.float32) - x
        coarse = cv2.GaussianBlur(change, (0, 0), BAND_SHARE * crop.shape[0])
        gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
        prev = self._state.get(track_id)
        dt = t - prev.time if prev is not None else math.inf
        if (prev is None or prev.direction != direction or prev.gray.shape != gray.shape
                or not 0 < dt <= GAP_TAUS * self.tau):
            self._state[track_id] = _State(gray, x, coarse, t, direction)
            return translated
        if self._dis is None:
            self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
        flow = self._dis.calc(gray, prev.gray, None)  # where each pixel of t was at t-1
        gx, gy = self._mesh(gray.shape[0])
        mx, my = gx + flow[..., 0], gy + flow[..., 1]
        carried = cv2.remap(prev.change, mx, my, cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
        before = cv2.remap(prev.crop, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        e = cv2.GaussianBlur(np.abs(x - before).mean(axis=2), (0, 0), 1.5)
        a = 1.0 - math.exp(-dt / self.tau)
        w = a + (1.0 - a) * (1.0 - np.exp(-np.square(e / self.reset)))
        steady = carried + w[..., None] * (coarse - carried)
        self._state[track_id] = _State(gray, x, steady, t, direction)
        return np.clip(x + steady + (change - coarse) + 0.5, 0, 255).astype(np.uint8)

    def _mesh(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        if size not in self._grid:
            gy, gx = np.mgrid[0:size, 0:size].astype(np.float32)
            self._grid[size] = (gx, gy)
        return self._grid[size]

    def keep_only(self, track_ids: set[int]) -> None:
        """Forget tracks that ended."""
        for k in [k for k in self._state if k not in track_ids]:
            del self._state[k]
