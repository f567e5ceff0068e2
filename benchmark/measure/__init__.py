"""Measurement: the memory profiler and its phases, the NVML sampler, FLOP counts, the typed result
record and the results file. Knows nothing of training or of the methods."""
