"""One parameter table: the params file, the doc table and the launch file agree with it.

``ssvif_ros/node_params.py`` is the source; ``python -m ssvif_ros.node_params --write``
regenerates ``config/fusion.yaml`` and the table in ``doc/node.md``. The launch file is checked
as text (launch and launch_ros need a full ROS install; test/test_launch.py runs it there).
"""
import ast
from pathlib import Path

import pytest
import yaml

from ssvif_ros import node_params
from ssvif_ros.node_params import defaults, make_config, PARAM_NAMES, PARAMETERS

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / 'launch' / 'fusion.launch.py'


def test_params_file_is_the_generated_one_and_holds_every_default():
    text = (REPO / 'config' / 'fusion.yaml').read_text()
    assert text == node_params.yaml_text(), \
        'config/fusion.yaml differs from the table: run python -m ssvif_ros.node_params --write'
    values = yaml.safe_load(text)['/**/fusion_node']['ros__parameters']
    assert tuple(values) == PARAM_NAMES
    assert values == defaults()
    for p in PARAMETERS:  # doubles keep their decimal point, so ROS declares them as doubles
        assert type(values[p.name]) is type(p.default), p.name
    make_config(values)  # the shipped defaults are valid


def test_doc_table_is_the_generated_one():
    doc = (REPO / 'doc' / 'node.md').read_text()
    assert node_params.markdown_table() in doc, \
        'doc/node.md parameter table differs: run python -m ssvif_ros.node_params --write'
    table = doc[doc.index(node_params.TABLE_BEGIN):doc.index(node_params.TABLE_END)]
    rows = [ln for ln in table.splitlines() if ln.startswith('| `')]
    assert [r.split('|')[1].strip(' `') for r in rows] == list(PARAM_NAMES)
    assert doc.count(node_params.TABLE_BEGIN) == 1


def test_make_config_refuses_unknown_and_names_the_parameter():
    values = defaults()
    values['slopp'] = 0.1
    with pytest.raises(ValueError, match='slopp: not a fusion_node parameter'):
        make_config(values)
    values = defaults()
    values['thermal_lo'] = 'cold'
    with pytest.raises(ValueError, match='thermal_lo'):
        make_config(values)


@pytest.mark.parametrize('given,words', [
    ('abc', "slop: 'abc' is not a number"), ('true', 'slop: True is not a number'),
    ('9', 'slop: 9 is outside [0.0, 1.0]'), ('.nan', 'slop: nan is outside')])
def test_a_value_that_is_not_a_number_is_said_to_be_so(given, words):
    values = defaults()
    values.update(node_params.parse_assignments([f'slop:={given}']))
    with pytest.raises(ValueError) as info:
        make_config(values)
    assert words in str(info.value)


def _launch_tree():
    return ast.parse(LAUNCH.read_text())


def test_launch_backend_choices_come_from_the_table():
    tree = _launch_tree()
    imports = {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
               for a in n.names}
    assert ('ssvif_ros.node_params', 'backend_choices') in imports
    # no second copy of the backend names in the launch file
    literals = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)}
    assert not {'onnxruntime', 'tensorrt', 'maxluma'} & literals
    assert node_params.backend_choices()[0] == ''  # '' keeps the params file's value


def _declared_arguments(tree):
    """(name, default) of the launch file's argument table and its PREFIX."""
    prefix, table = None, None
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id == 'PREFIX':
                prefix = ast.literal_eval(node.value)
            if node.targets[0].id == 'args' and isinstance(node.value, ast.List):
                table = [elt.elts[0].value for elt in node.value.elts]
    return prefix, table


def test_launch_arguments_are_prefixed_and_the_environment_is_the_nodes_only():
    tree = _launch_tree()
    prefix, names = _declared_arguments(tree)
    assert prefix == 'fusion_' and names
    for generic in ('model', 'backend', 'namespace', 'params_file', 'respawn'):
        assert generic in names  # declared as fusion_<name>: a parent's <name> is not read
    calls = {n.func.id if isinstance(n.func, ast.Name) else n.func.attr
             for n in ast.walk(tree) if isinstance(n, ast.Call)}
    # nothing that changes the launch's own environment (it would reach every later process)
    assert not {'SetEnvironmentVariable', 'AppendEnvironmentVariable'} & calls
    assert 'LifecycleNode' in calls and 'Shutdown' in calls
    # launch sends no ChangeState: a request to a respawned node can be lost (see the test below)
    assert 'ChangeState' not in calls and 'OnProcessStart' not in calls
    keywords = {k.arg for n in ast.walk(tree) if isinstance(n, ast.Call)
                and getattr(n.func, 'id', '') == 'LifecycleNode' for k in n.keywords}
    assert {'additional_env', 'on_exit', 'respawn'} <= keywords
    # every LaunchConfiguration read goes through the prefix
    reads = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
             and getattr(n.func, 'id', '') == 'LaunchConfiguration']
    assert reads and all(isinstance(r.args[0], ast.BinOp) for r in reads)


def test_launch_lets_the_node_configure_itself_on_every_start():
    # Every start of the process, a respawn too, is configured and activated by the node itself
    # (its autostart parameter, from the fusion_autostart argument): a ChangeState sent by
    # launch to a respawned node while the dead one's service is still known is lost.
    text = LAUNCH.read_text()
    assert "overrides = {'autostart': autostart," in text
    assert "autostart = parse_bool('autostart', _arg(context, 'autostart'))" in text
    assert 'autostart' in PARAM_NAMES
    # A start that failed (exit 2) shuts launch down instead of respawning it every 2 s.
    assert 'EXIT_START_FAILED' in text and node_params.EXIT_START_FAILED == 2
    # A Shutdown is only emitted while launch is not shutting down already (Ctrl-C): a second
    # one stops launch_ros's ROS adapter twice and ros2 launch exits 1.
    assert 'context.is_shutdown' in text and 'exit_context.is_shutdown' in text
