"""Design rules on imports: ssvif_train never imports rclpy; light modules stay light."""
import subprocess
import sys


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
