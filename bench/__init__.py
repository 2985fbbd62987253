"""Benchmarks: memory tiers, cold start and latency, LiteRT against TensorFlow in one run."""
