"""Fusion models (registry + ``create_model``) and SSVIF's segmentation branches."""
