"""Time the node's alignment score and ``ssvif-register``'s estimate on real pairs.

Usage: ``python bench/registration_speed.py [--frames N] [--repeat N]``. Uses RoadScene pairs
from ``../shared/data`` (or ``$SSVIF_DATA``) at 640 x 480, single-threaded. Prints the best of
``--repeat`` runs of :func:`ssvif_ros.registration.alignment_score` on one registered pair (as
the worker holds it: float32 RGB and thermal in [0, 1], with the warp's valid mask) and one
:func:`ssvif_ros.registration.estimate` over N pairs. Targets: score < 5 ms per checked pair
(with ``alignment_check_every: 30`` at 30 Hz, under 0.2 ms per frame on average); estimate
< 1 s per pair.
"""
import argparse
import os
from pathlib import Path
import sys
import time

for _var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
    os.environ[_var] = '1'

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssvif_ros import imaging, registration  # noqa: E402
from ssvif_ros.dataset_paths import list_pairs_in, shared_data_dir  # noqa: E402

SIZE = (640, 480)


def main():
    """Print the two timings."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--frames', type=int, default=24)
    ap.add_argument('--repeat', type=int, default=20)
    args = ap.parse_args()
    import cv2
    cv2.setNumThreads(1)
    root = shared_data_dir() / 'roadscene'
    files = list_pairs_in(root / 'vi', root / 'ir')[::8][:args.frames]
    pairs = [(imaging.resize(imaging.read_image(v, 'rgb'), SIZE),
              imaging.resize(imaging.read_image(t, 'gray'), SIZE)) for v, t in files]
    hom = (1.0, 0.0, 12.0, 0.0, 1.0, -8.0, 0.0, 0.0, 1.0)
    vis = imaging.visible_to_float(pairs[0][0])  # 480 x 640 x 3 float32
    ir = imaging.warp_homography(imaging.normalize_thermal(pairs[0][1]), hom, SIZE)
    best = float('inf')
    for _ in range(args.repeat):
        t = time.perf_counter()
        registration.alignment_score(vis, ir, registration.valid_mask(hom, SIZE, SIZE))
        best = min(best, time.perf_counter() - t)
    print(f'alignment_score 640x480: {best * 1e3:.2f} ms (target < 5 ms)')
    t = time.perf_counter()
    reg = registration.estimate(pairs)
    dt = time.perf_counter() - t
    print(f'estimate over {len(pairs)} pairs: {dt:.2f} s, {dt / len(pairs):.3f} s per pair '
          f'(target < 1 s per pair); model {reg.model}, {reg.inliers} of {reg.matches} matches')


if __name__ == '__main__':
    main()
