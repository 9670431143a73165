"""Build script of the ament_python package ssvif_ros (colcon and pip both use it)."""
from glob import glob
import os

from setuptools import find_packages, setup

package_name = 'ssvif_ros'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*', 'bench', 'bench.*']),
    package_data={'ssvif_ros': ['models/*/*']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        (os.path.join('share', package_name, 'launch'), glob('launch/*.launch.py')),
        (os.path.join('share', package_name, 'config'),
         glob('config/*.yaml') + glob('config/*.xml')),
        (os.path.join('share', package_name, 'config', 'train'), glob('config/train/*.yaml')),
    ],
    install_requires=['setuptools'],
    # colcon test runs pytest only when a test dependency on pytest is declared (else unittest,
    # which finds none of these tests). extras_require, as the current ament_python template;
    # tests_require is gone from setuptools (>= 72 warns that it is an unknown option).
    extras_require={'test': ['pytest']},
    zip_safe=True,
    maintainer='ssvif_ros maintainers',
    maintainer_email='maintainers@ssvif-ros.invalid',
    description='Segmentation-aware visible-infrared image fusion for ROS 2 (SSVIF).',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'ssvif-train = ssvif_train.cli:main',
            'ssvif-export = ssvif_train.export:main',
            'ssvif-calibrate = ssvif_train.calibrate:main',
            'ssvif-eval = ssvif_ros.eval_cli:main',
            'ssvif-bench = ssvif_ros.bench_cli:main',
            'ssvif-fuse = ssvif_ros.fuse_cli:main',
            'ssvif-bag = ssvif_ros.bag_cli:main',
            'ssvif-bag-extract = ssvif_ros.bag_extract:main',
            'ssvif-register = ssvif_ros.register_cli:main',
            'fusion_node = ssvif_ros.fusion_node:main',
            'pair_publisher = ssvif_ros.tools.pair_publisher:main',
            'fused_recorder = ssvif_ros.tools.fused_recorder:main',
            'ssvif_demo = ssvif_ros.demo:main',
        ],
    },
)
