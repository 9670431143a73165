"""Code style as ament_flake8 checks it (single quotes, 99 columns, import order, docstrings)."""
from pathlib import Path
import subprocess
import sys

REPO = Path(__file__).resolve().parents[1]


def test_flake8_clean():
    targets = ['ssvif_ros', 'ssvif_train', 'launch', 'test', 'bench', 'setup.py']
    res = subprocess.run([sys.executable, '-m', 'flake8', *targets], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f'flake8 found problems:\n{res.stdout}{res.stderr}'
