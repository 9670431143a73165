"""Design rules on imports: the layers of doc/architecture.md, and light modules stay light.

The first tests import modules in a fresh interpreter and look at ``sys.modules``; the graph
tests read every file of ssvif_ros and ssvif_train (imports at any level, function bodies
included) and check the directions between the layers.
"""
from pathlib import Path
import subprocess
import sys

REPO = Path(__file__).resolve().parents[1]


def _modules_after(code):
    res = subprocess.run([sys.executable, '-c', code + '\nimport sys\n'
                          'print(",".join(sorted(sys.modules)))'],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return set(res.stdout.strip().split(','))


def test_training_package_never_imports_rclpy():
    mods = _modules_after('import ssvif_train.cli, ssvif_train.trainer, ssvif_train.export, '
                          'ssvif_train.deploy, ssvif_train.data, ssvif_train.losses\n'
                          'from ssvif_train.models.registry import available_models\n'
                          'available_models()')
    assert 'rclpy' not in mods and not any(m.startswith('rclpy.') for m in mods)


def test_tools_and_onnxruntime_backend_do_not_import_torch():
    mods = _modules_after('import ssvif_ros.imaging, ssvif_ros.metrics, ssvif_ros.eval_cli, '
                          'ssvif_ros.fuse_cli, ssvif_ros.bench_cli\n'
                          'from ssvif_ros.backends import create_backend\n'
                          "b = create_backend('onnxruntime', '')\n"
                          'import numpy as np\n'
                          'b.infer(np.zeros((64, 64, 3), np.float32), '
                          'np.zeros((64, 64, 3), np.float32))')
    assert 'torch' not in mods


def test_imaging_is_light():
    mods = _modules_after('import ssvif_ros.imaging')
    assert not {'torch', 'cv2', 'rclpy', 'skimage'} & mods


def test_bag_tools_import_neither_rclpy_nor_torch_until_they_talk_to_ros():
    """ssvif-bag's parser, bag writer and report code load without ROS or torch."""
    mods = _modules_after('import ssvif_ros.bag_cli, ssvif_ros.bag_make, ssvif_ros.bag_eval, '
                          'ssvif_ros.bag_live\n'
                          'ssvif_ros.bag_cli.build_parser()')
    assert not {'rclpy', 'torch'} & mods


# ---------------------------------------------------------------------------------------------
# The module import graph of ssvif_ros and ssvif_train, read from the source (doc/architecture.md)

PACKAGES = ('ssvif_ros', 'ssvif_train')
# The ROS-free, torch-free core: every other layer may import these, they import no layer above.
CORE = ('ssvif_ros.imaging', 'ssvif_ros.metrics', 'ssvif_ros.fusion_metrics',
        'ssvif_ros.seg_metrics', 'ssvif_ros.labels', 'ssvif_ros.pairing', 'ssvif_ros.frames',
        'ssvif_ros.model_card', 'ssvif_ros.dataset_paths', 'ssvif_ros.synthetic',
        'ssvif_ros.contact_sheets', 'ssvif_ros.progress')
TORCH_ALLOWED = ('ssvif_train', 'ssvif_ros.backends.torch_backend')
ROS_PACKAGES = ('rclpy', 'rclpy_lifecycle', 'launch', 'launch_ros', 'launch_testing', 'rosbag2_py',
                'sensor_msgs', 'std_msgs', 'diagnostic_msgs', 'lifecycle_msgs',
                'builtin_interfaces', 'rcl_interfaces')


def _is_under(name, prefixes):
    return any(name == p or name.startswith(p + '.') for p in prefixes)


def _module_files():
    """{module name: path} of every .py file of the two packages."""
    import os
    out = {}
    for pkg in PACKAGES:
        for root, dirs, files in os.walk(REPO / pkg):
            dirs[:] = [d for d in dirs if not d.startswith(('.', '__'))]
            for f in files:
                if f.endswith('.py'):
                    rel = (Path(root) / f).relative_to(REPO).with_suffix('')
                    parts = list(rel.parts)
                    if parts[-1] == '__init__':
                        parts = parts[:-1]
                    out['.'.join(parts)] = Path(root) / f
    return out


def _imports(path, module, is_package):
    """Every module name ``path`` imports, at any level (module top, functions, classes)."""
    import ast
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:  # relative import: resolve against this module's package
                pkg = module.split('.') if is_package else module.split('.')[:-1]
                pkg = pkg[:len(pkg) - node.level + 1]
                base = '.'.join(pkg + ([base] if base else []))
            names.add(base)
            names.update(f'{base}.{a.name}' for a in node.names)  # "from pkg import module"
    return names


def _graph():
    """(files, {module: set of package modules it imports}, {module: all imported names})."""
    files = _module_files()
    edges, raw = {}, {}
    for mod, path in files.items():
        raw[mod] = _imports(path, mod, path.name == '__init__.py')
        edges[mod] = {n for n in raw[mod] if n in files and n != mod}
    return files, edges, raw


def _cycles(edges):
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def _ros_layer(raw):
    """Modules that talk ROS: they import rclpy or launch (message types alone do not count)."""
    return {m for m, names in raw.items()
            if any(_is_under(n, ('rclpy', 'launch', 'launch_ros')) for n in names)}


def _node_and_tools(files, raw):
    """The node and tool modules: the ROS layer, ssvif_ros.tools, the CLIs and the demo."""
    tools = {m for m in files
             if _is_under(m, ('ssvif_ros.tools', 'ssvif_ros.fusion_node', 'ssvif_ros.demo'))
             or m.startswith(('ssvif_ros.bag_', 'ssvif_ros.eval_')) or m.endswith('_cli')}
    return (tools | _ros_layer(raw)) - set(CORE)


def test_the_graph_is_read_from_the_real_files():
    files, edges, raw = _graph()
    # the reader must see what the rules are about, else every rule below passes vacuously
    assert {'ssvif_ros.imaging', 'ssvif_train.trainer', 'ssvif_ros.backends.torch_backend',
            'ssvif_ros.fusion_node'} <= set(files)
    assert 'ssvif_train.network' in edges['ssvif_train.trainer']           # top level
    assert 'torch' in raw['ssvif_ros.backends.torch_backend']               # inside a function
    assert 'ssvif_train.deploy' in edges['ssvif_ros.backends.torch_backend']
    assert 'ssvif_ros.imaging' in edges['ssvif_train.data']                 # from pkg import mod
    assert 'rclpy' in raw['ssvif_ros.fusion_node']
    assert 'ssvif_ros.fusion_node' in _node_and_tools(files, raw)
    assert _cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c']]


def test_no_import_cycle_between_files():
    _, edges, _ = _graph()
    cycles = _cycles(edges)
    assert not cycles, f'files importing each other (at any level): {cycles}'


def test_torch_only_in_training_and_the_torch_backend():
    _, _, raw = _graph()
    bad = sorted(m for m, names in raw.items() if not _is_under(m, TORCH_ALLOWED)
                 and any(_is_under(n, ('torch', 'torchvision')) for n in names))
    assert not bad, f'torch imported outside ssvif_train and the torch backend: {bad}'


def test_only_the_torch_backend_imports_the_training_package():
    _, edges, _ = _graph()
    bad = sorted(f'{m} -> {n}' for m, ns in edges.items() for n in ns
                 if m.startswith('ssvif_ros') and _is_under(n, ('ssvif_train',))
                 and m != 'ssvif_ros.backends.torch_backend')
    assert not bad, f'ssvif_ros importing the training package: {bad}'


def test_training_and_core_never_import_ros():
    files, _, raw = _graph()
    bad = sorted(m for m, names in raw.items()
                 if (_is_under(m, ('ssvif_train',)) and any(_is_under(n, ROS_PACKAGES)
                                                            for n in names))
                 or (m in CORE and any(_is_under(n, ('rclpy',)) for n in names)))
    assert not bad, f'ROS imported by training or rclpy by a core module: {bad}'


def test_core_and_training_do_not_import_node_or_tool_modules():
    files, edges, raw = _graph()
    upper = _node_and_tools(files, raw)
    lower = [m for m in files if m in CORE or _is_under(m, ('ssvif_train',))]
    bad = sorted(f'{m} -> {n}' for m in lower for n in edges[m] if n in upper)
    assert not bad, f'core or training importing node/tool modules: {bad}'


def test_the_core_modules_exist():
    files, _, _ = _graph()
    missing = [m for m in CORE if m not in files]
    assert not missing, f'core modules named in this test are missing: {missing}'
