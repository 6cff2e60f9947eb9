"""Benchmarks: cnn-serve side by side with TorchServe, LitServe and a naive FastAPI server."""
