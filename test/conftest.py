"""Shared fixtures: where the real data lives, how to run the package's own Python."""
import os
from pathlib import Path
import signal
import subprocess
import sys

import pytest

from ssvif_ros.dataset_paths import list_pairs, shared_data_dir

REPO = Path(__file__).resolve().parents[1]
DATA = shared_data_dir()
MSRS = DATA / 'msrs'
VIFB = DATA / 'vifb'
ROADSCENE = DATA / 'roadscene'
PYTHON = sys.executable

# A shell starts background jobs with SIGINT ignored, and children inherit an ignored signal
# (but not a handler): tests that stop a node or player with SIGINT would then wait in vain.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config, items):
    """Skip the ``gpu``-marked tests when torch sees no CUDA device (torch imported only then)."""
    gpu = [item for item in items if item.get_closest_marker('gpu')]
    if not gpu:
        return
    import torch
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason='needs a CUDA device (torch.cuda.is_available() is False)')
        for item in gpu:
            item.add_marker(skip)


def need(path: Path, what: str) -> Path:
    """Skip the calling test with a clear reason when ``path`` is absent."""
    if not path.exists():
        pytest.skip(f'{what} not found at {path}: real data lives in ../shared/data beside the '
                    'checkout (or set SSVIF_DATA); see the README')
    return path


@pytest.fixture
def msrs_dir() -> Path:
    """The MSRS sample (../shared/data/msrs), or skip."""
    return need(MSRS, 'MSRS sample data')


@pytest.fixture
def vifb_dir() -> Path:
    """The VIFB benchmark copy (../shared/data/vifb), or skip."""
    return need(VIFB, 'VIFB benchmark data')


@pytest.fixture(scope='session')
def roadscene_dir() -> Path:
    """The RoadScene pairs (../shared/data/roadscene: vi/, ir/), or skip."""
    return need(ROADSCENE, 'RoadScene data')


@pytest.fixture
def msrs_subset(tmp_path, msrs_dir):
    """Factory: a folder in MSRS layout with links to the first ``n`` real train pairs."""
    def make(n=8, split='train', name='msrs_subset'):
        root = tmp_path / name
        for sub in ('vi', 'ir'):
            (root / sub).mkdir(parents=True)
        for vi, ir in list_pairs(msrs_dir / split)[:n]:
            os.symlink(vi, root / 'vi' / vi.name)
            os.symlink(ir, root / 'ir' / ir.name)
        return root
    return make


@pytest.fixture
def msrs_boxes(tmp_path, msrs_dir):
    """Factory: MSRS-layout folder (vi, ir, boxes) linking the first n real train pairs."""
    def make(n=8, name='msrs_boxes', split='train'):
        root = tmp_path / name
        for sub in ('vi', 'ir', 'boxes'):
            (root / sub).mkdir(parents=True)
        for vi, ir in list_pairs(msrs_dir / split)[:n]:
            box = f'{vi.stem}.txt'
            for src, dst in ((vi, root / 'vi' / vi.name), (ir, root / 'ir' / ir.name),
                             (msrs_dir / split / 'boxes' / box, root / 'boxes' / box)):
                os.symlink(src, dst)
        return root
    return make


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A real 256 KiB file system (tmpfs) that four MSRS pairs overflow; skipped without mount.

    Yields (mount point, a function that remounts it read-only: an unwritable output).
    """
    mnt = tmp_path / 'tiny_tmpfs'
    mnt.mkdir()
    try:
        res = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', str(mnt)],
                             capture_output=True, text=True, timeout=30)
    except OSError as exc:
        pytest.skip(f'no mount command to make a full disk: {exc}')
    if res.returncode != 0:
        pytest.skip('cannot mount a small tmpfs to make a full disk (needs root): '
                    f'{res.stderr.strip()}')

    def read_only():
        subprocess.run(['mount', '-o', 'remount,ro', str(mnt)], check=True, timeout=30)
    try:
        yield mnt, read_only
    finally:
        subprocess.run(['umount', '-l', str(mnt)], timeout=30)
