"""Imported by a launched child (IISAN_BENCH_IMPORTS=launch_probe): says what the child sees, then exits 0."""

import json
import os
import sys

import torch

with open(os.environ["LAUNCH_PROBE_OUT"], "w") as fh:
    json.dump({"pid": os.getpid(), "alloc": os.environ.get("PYTORCH_CUDA_ALLOC_CONF"),
               "imports": os.environ.get("IISAN_BENCH_IMPORTS"),
               "cuda_initialized": torch.cuda.is_initialized()}, fh)
sys.stdout.flush()
os._exit(0)
