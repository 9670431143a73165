"""The two model-free backends: identity and maxluma."""
from __future__ import annotations

import numpy as np

from ssvif_ros import imaging
from ssvif_ros.backends.base import Backend


class IdentityBackend(Backend):
    """fused = visible, all class ids 0: the cost of everything around inference."""

    name = 'identity'

    def infer(self, vis, ir):
        """Return the visible image unchanged and a zero class map."""
        return vis, np.zeros(vis.shape[:2], np.uint8)


class MaxLumaBackend(Backend):
    """The trivial rule every learned model is judged against (Y replaced by max(Y, IR))."""

    name = 'maxluma'

    def infer(self, vis, ir):
        """Visible with its luma replaced by max(luma, thermal); zero class map.

        Takes the single thermal plane (H x W) as the node passes it; no channel expansion.
        """
        return imaging.max_luma_fusion(vis, ir), np.zeros(vis.shape[:2], np.uint8)
