"""Running a sweep: the runner, the isolated child processes and their launchers, the recipe each method
runs under, data preparation, the model factory and the plain-PyTorch floors. Imports methods and
everything below; nothing below imports it."""
