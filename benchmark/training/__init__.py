"""The trainer (epochs, evaluation, selection), the ranking metrics and step tracing. Imports models,
data, config and the shared utilities; knows nothing of any method or of the profiler."""
