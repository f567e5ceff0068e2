"""The environment variables the sweep hands its children, named once (a leaf: imports nothing)."""

ENV_PARENT = "IISAN_BENCH_PARENT_PID"  # the process a run dies with (the benchmark, or the zygote)
ENV_IMPORTS = "IISAN_BENCH_IMPORTS"  # comma list of modules a child imports first (e.g. test methods)
