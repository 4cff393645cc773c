"""Benchmarks a user reruns: latency, camera rates, soak, the GPU check (`python -m bench.NAME`)."""
