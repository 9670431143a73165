"""ssvif_ros.runtime: the malloc tuning every ROS process of the package applies at start."""
import os
import subprocess
import sys

import pytest

# Decode-like work on a 640 x 480 frame: a 3.7 MB float32 image and one temporary, 50 times;
# prints whether tune_malloc applied and the minor page faults of those 50 frames.
_FRAMES = '''
import resource
import numpy as np
from ssvif_ros.runtime import tune_malloc
applied = tune_malloc()
def frame():
    a = np.ones((480, 640, 3), np.float32)  # H x W x 3
    return float((a * 2.0)[0, 0, 0])
frame()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    frame()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
'''


def _run_frames(tuning: str):
    env = dict(os.environ, SSVIF_MALLOC_TUNING=tuning)
    res = subprocess.run([sys.executable, '-c', _FRAMES], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    applied, faults = res.stdout.split()
    return applied == 'True', int(faults)


@pytest.mark.skipif(not sys.platform.startswith('linux'),
                    reason='glibc malloc tuning is Linux-only')
def test_tuned_malloc_recycles_frame_buffers_instead_of_faulting_them_in():
    applied, tuned_faults = _run_frames('1')
    assert applied
    off, default_faults = _run_frames('0')
    assert not off
    # Default glibc maps and unmaps every frame-sized buffer: each frame faults its ~1800
    # pages in again. Tuned, the buffers stay on the heap and are reused without faults.
    assert default_faults > 50 * 900
    assert tuned_faults < default_faults / 20
