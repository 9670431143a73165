"""ssvif_train: self-supervised segmentation-aware fusion training (SSVIF). Never imports rclpy."""
__version__ = '0.1.0'
