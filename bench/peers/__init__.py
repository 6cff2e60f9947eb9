"""The peer servers the benchmark runs beside cnn-serve, doing the same work per image."""
