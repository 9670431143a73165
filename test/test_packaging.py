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


def test_colcon_test_finds_a_pytest_dependency():
    # colcon-core's pytest step matches a package whose setup() declares pytest in
    # extras_require['test']; without it colcon test falls back to unittest and runs none of
    # these tests. colcon reads the setup() options as run_setup does.
    code = ('import distutils.core, json\n'
            "d = distutils.core.run_setup('setup.py', stop_after='init')\n"
            "print(json.dumps({'extras': d.extras_require}))\n")
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    import json
    opts = json.loads(res.stdout.strip().splitlines()[-1])
    assert 'pytest' in opts['extras']['test']
    xml = (REPO / 'package.xml').read_text()
    for dep in ('python3-pytest', 'launch_pytest', 'ros2lifecycle'):
        assert f'<test_depend>{dep}</test_depend>' in xml, dep
