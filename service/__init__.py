"""cnn-serve: the HTTP service for PyTorch CNN image classifiers."""

__version__ = "0.1.0"
