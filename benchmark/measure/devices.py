"""The GPUs an estimate can be asked for, and the peaks MFU is measured against: one table.

Dense peaks from the vendors' data sheets (no sparsity), SXM/flagship variants. ``fp32`` is the
plain FP32 rate: PyTorch runs fp32 matmuls without TF32 unless told (``allow_tf32`` is off for
matmuls by default). Memory is what ``torch.cuda.get_device_properties`` reports, in GiB.
"""

from __future__ import annotations

from dataclasses import dataclass

TERA = 1e12


@dataclass(frozen=True)
class GPU:
    name: str  # the --gpu name
    match: tuple[str, ...]  # substrings of torch.cuda.get_device_name() that mean this card
    bf16: float  # FLOP/s, dense tensor cores
    fp16: float
    fp32: float
    bandwidth: float  # bytes/s of device memory
    memory_gib: float

    def peak(self, precision: str) -> float:
        """Peak FLOP/s of the precision a run computes in (``train.precision``)."""
        return {"bf16": self.bf16, "fp16": self.fp16}.get(precision, self.fp32)


GPUS: dict[str, GPU] = {g.name: g for g in (
    GPU("h100-80gb", ("H100",), 989.4 * TERA, 989.4 * TERA, 66.9 * TERA, 3.35e12, 79.1),
    GPU("h200", ("H200",), 989.4 * TERA, 989.4 * TERA, 66.9 * TERA, 4.8e12, 139.8),
    GPU("a100-80gb", ("A100-SXM4-80GB", "A100-PCIE-80GB", "A100 80GB", "A100-80GB"), 312 * TERA, 312 * TERA, 19.5 * TERA, 2.039e12, 79.2),
    GPU("a100-40gb", ("A100-SXM4-40GB", "A100-PCIE-40GB", "A100 40GB", "A100"), 312 * TERA, 312 * TERA, 19.5 * TERA,
        1.555e12, 39.4),
    GPU("l40s", ("L40S",), 362.05 * TERA, 362.05 * TERA, 91.6 * TERA, 0.864e12, 44.4),
    GPU("rtx-4090", ("4090",), 165.2 * TERA, 165.2 * TERA, 82.6 * TERA, 1.008e12, 23.6),
    GPU("a10", ("A10",), 125 * TERA, 125 * TERA, 31.2 * TERA, 0.6e12, 22.1),
)}


def gpu_named(name: str) -> GPU | None:
    return GPUS.get(name.lower())


def gpu_of(device_name: str) -> GPU | None:
    """The table's card for a torch device name ("NVIDIA H100 80GB HBM3"), the most specific match first."""
    hits = [(len(m), g) for g in GPUS.values() for m in g.match if m in device_name]
    return max(hits, key=lambda h: h[0])[1] if hits else None
