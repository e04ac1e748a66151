"""vqtoolkit: VQ-VAE tokenizers for speech, images and video."""

__version__ = "0.1.0"
