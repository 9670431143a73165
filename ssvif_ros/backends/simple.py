"""The two model-free backends: identity and maxluma."""
from __future__ import annotations

import numpy as np

from ssvif_ros import imaging
from ssvif_ros.backends.base import Backend


class IdentityBackend(Backend):
    """fused = visible, all class ids 0: the cost of everything around inference."""

    name = 'identity'

    def infer(self, vis, ir):
        """Return the visible image (as uint8 RGB) and a zero class map."""
        v = imaging.visible_to_uint8(vis)  # no copy for a uint8 RGB frame
        return v, np.zeros(v.shape[:2], np.uint8)


class MaxLumaBackend(Backend):
    """The trivial rule every learned model is judged against (Y replaced by max(Y, IR))."""

    name = 'maxluma'

    def infer(self, vis, ir):
        """Visible with its luma replaced by max(luma, thermal); zero class map.

        Takes the single thermal plane (H x W) as the node passes it; no channel expansion.
        """
        v = np.asarray(vis)
        v = v if v.dtype.kind == 'f' else imaging.visible_to_float(v)  # H x W x 3 float
        fused = imaging.to_uint8(imaging.max_luma_fusion(v, ir))        # H x W x 3 uint8
        return fused, np.zeros(fused.shape[:2], np.uint8)
