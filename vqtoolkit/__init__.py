"""vqtoolkit: VQ-VAE tokenizers for speech, images and video.

The Python API, imported on first use so `import vqtoolkit` (and `vqt --help`) does not load torch:

    from vqtoolkit import VectorQuantizer, GaussianBottleneck, PixelCNN, load_model, tokenize, decode

See docs/api.md; every example there runs as a test (tests/test_api.py).
"""

import importlib

__version__ = "0.1.0"

_API = {
    # building blocks (vqtoolkit.nn)
    "VectorQuantizer": "vqtoolkit.nn.quantize",
    "ResidualVQ": "vqtoolkit.nn.quantize",
    "GaussianBottleneck": "vqtoolkit.nn.gaussian",
    "PixelCNN": "vqtoolkit.nn.pixelcnn",
    "sample": "vqtoolkit.nn.pixelcnn_sampling",
    "Autoencoder": "vqtoolkit.model",
    "build_model": "vqtoolkit.model",
    # recipes, runs and codes
    "Recipe": "vqtoolkit.config",
    "load_recipe": "vqtoolkit.config",
    "load_model": "vqtoolkit.rundir",
    "Tokenizer": "vqtoolkit.inference.tokenizer",
    "read_codes": "vqtoolkit.inference.codes",
    "VQTError": "vqtoolkit.errors",
    # one-call helpers
    "fit": "vqtoolkit.api",
    "evaluate": "vqtoolkit.api",
    "tokenize": "vqtoolkit.api",
    "decode": "vqtoolkit.api",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'vqtoolkit' has no attribute '{name}'")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *_API})
