"""ssvif_ros: segmentation-aware visible-infrared fusion for ROS 2.

Importing this package is light: the node (``ssvif_ros.fusion_node``) imports rclpy, the torch
backend imports torch; nothing else does.
"""
__version__ = '0.1.0'
