"""Benchmarks: cnn-serve side by side with TorchServe, Triton, LitServe and a naive FastAPI server."""
