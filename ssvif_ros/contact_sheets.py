"""Contact sheets: image tiles in rows with a label strip per tile (and a class legend).

``ssvif-eval fusion`` writes one of sources and methods (:func:`contact_sheet`); the demo and
``ssvif-bag eval`` write one of class maps (:func:`write_class_sheet`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from ssvif_ros import imaging

TILE_HEIGHT = 180


def tile(img: Optional[np.ndarray], height: int) -> np.ndarray:
    """An RGB uint8 tile of ``height`` rows (grey placeholder for a missing image)."""
    if img is None:
        return np.full((height, height, 3), 96, dtype=np.uint8)
    x = img  # uint8 (checked when read)
    if x.ndim == 2:
        x = np.repeat(x[:, :, None], 3, axis=2)
    w = max(1, round(x.shape[1] * height / x.shape[0]))
    return imaging.resize(x, (w, height))


def label_strip(width: int, text: str) -> np.ndarray:
    """A white 22-row strip of ``width`` with ``text`` in black (cut to fit)."""
    import cv2
    strip = np.full((22, width, 3), 255, dtype=np.uint8)
    cv2.putText(strip, text[:max(1, width // 8)], (3, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def contact_sheet(path: Path, stems: Sequence[str], methods: Sequence[str],
                  tiles: Dict[str, Dict[str, np.ndarray]]) -> None:
    """Rows = images, columns = vi | ir | methods; a header strip names each column."""
    cols = ['vi', 'ir'] + list(methods)
    rows = []
    for s in stems:
        cells = [tile(tiles.get(s, {}).get(c), TILE_HEIGHT) for c in cols]
        rows.append([np.concatenate([label_strip(t.shape[1], f'{s} {c}'), t], axis=0)
                     for t, c in zip(cells, cols)])
    if not rows:
        return
    width = max(sum(t.shape[1] + 4 for t in r) for r in rows)
    lines = []
    for r in rows:
        line = np.concatenate([np.pad(t, ((0, 4), (0, 4), (0, 0)), constant_values=255)
                               for t in r], axis=1)
        lines.append(np.pad(line, ((0, 0), (0, width - line.shape[1]), (0, 0)),
                            constant_values=255))
    imaging.write_image(path, np.concatenate(lines, axis=0))


def legend(width: int, class_names: Sequence[str], pal: np.ndarray) -> np.ndarray:
    """A white strip with one colour swatch and name per class (background left out)."""
    import cv2
    strip = np.full((26, width, 3), 255, dtype=np.uint8)
    x = 6
    for i, name in enumerate(class_names):
        if i == 0:
            continue
        strip[6:20, x:x + 14] = pal[i]
        cv2.putText(strip, name, (x + 18, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                    cv2.LINE_AA)
        x += 30 + 9 * len(name)
    return strip


def write_class_sheet(path, rows, class_names: Sequence[str], pal: np.ndarray,
                      alpha: float = 0.55) -> None:
    """A contact sheet of class maps: per row visible | thermal | fused | classes over fused.

    ``rows``: ``(title, vis uint8 H x W x 3, ir uint8 H x W, fused uint8 H x W x 3, ids H x W)``;
    background (id 0) is left uncoloured so the objects stand out. A legend heads the sheet.
    """
    lines = []
    for title, vis, ir, fused, ids in rows:
        over = imaging.class_overlay(fused, ids, pal, alpha, keep_background=True)
        cells = [(vis, 'visible'), (ir, 'thermal'), (fused, 'fused'), (over, 'classes')]
        tiles = []
        for img, what in cells:
            t = tile(img, TILE_HEIGHT)
            tiles.append(np.pad(np.concatenate([label_strip(t.shape[1], f'{title} {what}'), t]),
                                ((0, 4), (0, 4), (0, 0)), constant_values=255))
        lines.append(np.concatenate(tiles, axis=1))
    if not lines:
        return
    width = max(ln.shape[1] for ln in lines)
    lines = [np.pad(ln, ((0, 0), (0, width - ln.shape[1]), (0, 0)), constant_values=255)
             for ln in lines]
    imaging.write_image(path, np.concatenate([legend(width, class_names, pal)] + lines))
