"""A non-editable install (wheel, colcon build) contains and imports every module."""
import os
from pathlib import Path
import shutil
import subprocess
import sys
import zipfile

REPO = Path(__file__).resolve().parents[1]


def test_wheel_contains_and_imports_every_module(tmp_path):
    # A copy of the sources: setuptools reuses a build/ folder, whose stale copies of modules
    # would hide a package the wheel leaves out.
    src = tmp_path / 'src'
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        '.git', '.venv', 'build', '*.egg-info', 'runs', 'out', '__pycache__', '.pytest_cache'))
    res = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps',
                          '--no-build-isolation', '-q', '-w', str(tmp_path / 'dist'), str(src)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    wheel = next((tmp_path / 'dist').glob('ssvif_ros-*.whl'))
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = sorted(str(p.relative_to(REPO)) for pkg in ('ssvif_ros', 'ssvif_train')
                     for p in (REPO / pkg).rglob('*.py'))
    missing = [m for m in modules if m not in names]
    assert not missing, f'left out of the wheel: {missing}'
    assert 'ssvif_ros/models/default/model.onnx' in names
    assert 'ssvif_ros/models/default/model.json' in names
    site = tmp_path / 'site'
    zipfile.ZipFile(wheel).extractall(site)
    dotted = [m[:-3].replace(os.sep, '.').removesuffix('.__init__') for m in modules]
    code = ('import importlib, sys\n'
            f'site = {str(site)!r}\n'
            f'for name in {dotted!r}:\n'
            '    mod = importlib.import_module(name)\n'
            '    assert mod.__file__.startswith(site), (name, mod.__file__)\n'
            'print(len(sys.modules))\n')
    env = dict(os.environ, PYTHONPATH=str(site))
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
