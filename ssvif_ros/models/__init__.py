"""Models shipped inside the package; ``default`` is what the node and tools use by default."""
import os

_HERE = os.path.dirname(os.path.abspath(__file__))


def default_model_dir() -> str:
    """Folder of the embedded default model (model.onnx, model.json, model.pt).

    Raises FileNotFoundError when the package was installed without it.
    """
    path = os.path.join(_HERE, 'default')
    if not os.path.isfile(os.path.join(path, 'model.json')):
        raise FileNotFoundError(f'the embedded default model is missing from {path}; '
                                'reinstall ssvif_ros or pass a model explicitly')
    return path
