"""A synthetic RGB-thermal night road scene, for demos, benchmarks and tests without data.

:func:`synthetic_scene` draws one frame pair; :func:`write_synthetic_folder` writes a sequence in
the MSRS layout. Used where the shared data (:mod:`ssvif_ros.dataset_paths`) is absent: the
pair publisher, ``ssvif-bench``, the demo and the tests.
"""
from __future__ import annotations

from pathlib import Path
from typing import Tuple

import numpy as np

from ssvif_ros import imaging


def synthetic_scene(index: int, width: int = 640, height: int = 480,
                    seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """A night road scene as an RGB-thermal pair: (RGB uint8 H x W x 3, thermal uint8 H x W).

    Dim visible image: dark blue sky, grey road with lane marks, a lit building, and pedestrians
    in dark clothes that barely stand out from the road; thermal image: cold sky, road warmer
    than the sky, and pedestrians and a car's engine bright. Pedestrians walk across the road
    with ``index`` (one step per frame), so consecutive frames differ. Deterministic in
    ``(index, seed)``; sensor noise differs per frame.
    """
    rng = np.random.default_rng(seed * 100003 + index)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)  # H x W each
    v = yy / max(height - 1, 1)
    u = xx / max(width - 1, 1)
    horizon = 0.45
    rgb = np.zeros((height, width, 3), np.float32)
    th = np.zeros((height, width), np.float32)
    sky = v < horizon
    rgb[sky] = np.stack([0.05 + 0.05 * v[sky], 0.06 + 0.05 * v[sky], 0.15 + 0.1 * v[sky]], -1)
    th[sky] = 0.08
    # Road: a trapezoid widening towards the bottom; grass on both sides.
    depth = np.clip((v - horizon) / (1 - horizon), 0, 1)
    half = 0.08 + 0.45 * depth
    road = (~sky) & (np.abs(u - 0.5) < half)
    grass = (~sky) & ~road
    rgb[road] = 0.18 + 0.06 * depth[road, None]
    th[road] = 0.35 + 0.1 * depth[road]
    rgb[grass] = np.stack([0.05 + 0 * depth[grass], 0.12 + 0.05 * depth[grass],
                           0.05 + 0 * depth[grass]], -1)
    th[grass] = 0.25
    # Dashed centre line (visible only: paint has the road's temperature).
    dash = road & (np.abs(u - 0.5) < 0.004 + 0.01 * depth) & (((v * 40) % 2) < 1)
    rgb[dash] = 0.7
    # A building with lit windows on the left above the horizon.
    bld = (u > 0.05) & (u < 0.3) & (v > 0.15) & (v < horizon)
    rgb[bld] = 0.12
    th[bld] = 0.3
    win = bld & (((u * 60) % 3) < 1.2) & (((v * 50) % 3) < 1.2)
    rgb[win] = np.array([0.9, 0.8, 0.45], np.float32)
    th[win] = 0.45
    # A parked car on the right: dark in visible, warm engine in thermal.
    car = (u > 0.68) & (u < 0.86) & (v > 0.58) & (v < 0.7)
    rgb[car] = np.array([0.1, 0.1, 0.12], np.float32)
    th[car] = 0.5
    th[car & (u > 0.8)] = 0.85
    # Pedestrians: ellipses (body) plus a head, walking across the road.
    for k, (y0, speed, phase) in enumerate(((0.62, 0.004, 0.1), (0.75, -0.003, 0.7),
                                            (0.55, 0.002, 0.4))):
        x0 = (phase + speed * index) % 1.0
        scale = 0.5 + (y0 - horizon)
        body = (((u - x0) / (0.018 * scale)) ** 2 + ((v - y0) / (0.07 * scale)) ** 2) < 1
        head = (((u - x0) / (0.012 * scale)) ** 2
                + ((v - (y0 - 0.085 * scale)) / (0.016 * scale)) ** 2) < 1
        person = body | head
        rgb[person] = np.array([0.2, 0.19, 0.2], np.float32) + 0.01 * k
        th[person] = 0.92 - 0.05 * k
    rgb += rng.normal(0.0, 0.012, rgb.shape).astype(np.float32)
    th += rng.normal(0.0, 0.02, th.shape).astype(np.float32)
    return imaging.to_uint8(rgb), imaging.to_uint8(th)


def write_synthetic_folder(folder, count: int, width: int = 640, height: int = 480) -> Path:
    """Write ``count`` synthetic pairs as ``folder/vi/NNNNN.png`` and ``folder/ir/NNNNN.png``."""
    folder = Path(folder)
    for i in range(count):
        rgb, th = synthetic_scene(i, width, height)
        imaging.write_image(folder / 'vi' / f'{i:05d}.png', rgb)
        imaging.write_image(folder / 'ir' / f'{i:05d}.png', th)
    return folder
