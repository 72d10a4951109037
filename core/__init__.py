"""Pneumonia screening library: the public API.

``Predictor`` turns image bytes into a ``ScreeningResult``; ``registry`` lists the
models and their cards. Everything else is reachable through its module.
Names are imported lazily so that light modules (imaging, data) load without TensorFlow.
"""
from importlib import import_module

_EXPORTS = {
    "Predictor": "core.predictor",
    "ScreeningResult": "core.predictor",
    "ImageError": "core.imaging",
    "NotChestXRayError": "core.quality",
    "PreprocessSpec": "core.imaging",
    "registry": "core.registry",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'core' has no attribute '{name}'")
    module = import_module(_EXPORTS[name])
    return module if module.__name__ == f"core.{name}" else getattr(module, name)
