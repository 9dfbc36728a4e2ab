"""What the hardware offers: peak FLOP/s by device kind, free memory, the compute dtype.

    peak_flops(device_kind, dtype)  dense peak FLOP/s of one device, or None when unknown
    free_memory_bytes(device)       what the device's allocator (or, on CPU, the host) has free
    compute_dtype(name)             "auto" -> "bfloat16" on GPU/TPU, "float32" on CPU

MFU (model FLOPs utilisation, PaLM, Chowdhery et al. 2022, appendix B) = the model's analytic
FLOPs per second / (peak FLOP/s per device x devices). The table holds vendor datasheet numbers
for *dense* matrix maths (NVIDIA quotes tensor-core figures "with sparsity", twice the dense
rate: the numbers here are halved). An unknown device (CPU included) gets None, never a guess,
and MFU is then left out.

`float32` is the peak that float32 matrix products run at under JAX's default precision, which
trades precision for speed (docs.jax.dev, "Matmul precision"): TF32 tensor cores on NVIDIA
Ampere and later, one bfloat16 pass on TPU. A run that asks for more precision
(jax_default_matmul_precision=highest) runs slower than this peak, so its MFU reads low.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

TERA = 1e12

# (pattern matched against device_kind, lower case; first match wins) -> {dtype: TFLOP/s dense}
# NVIDIA: datasheets' tensor-core "with sparsity" figures / 2; fp32 = TF32 tensor core.
#   H100: "NVIDIA H100 Tensor Core GPU" datasheet — SXM BF16 1,979*, TF32 989*; PCIe BF16
#         1,513*, TF32 756*; NVL BF16 1,671*, TF32 835* (* with sparsity)
#   H200: "NVIDIA H200 Tensor Core GPU" datasheet — SXM BF16 1,979*, TF32 989*; NVL BF16
#         1,671*, TF32 835*
#   A100: "NVIDIA A100 Tensor Core GPU" datasheet — BF16 312, TF32 156 dense (40 and 80 GB,
#         SXM and PCIe alike)
#   L4:   "NVIDIA L4 Tensor Core GPU" datasheet — BF16 242*, TF32 120*
#   A10:  "NVIDIA A10 Tensor Core GPU" datasheet — BF16 125, TF32 62.5 dense. The A10G (AWS
#         G5) is a different part with lower tensor throughput and no NVIDIA datasheet: absent.
# TPU: Google Cloud TPU docs, "Peak compute per chip (bf16)" (one JAX device per chip on these
#   generations): v4 275, v5e 197, v5p 459, v6e (Trillium) 918 TFLOP/s. Google publishes no
#   float32 figure; float32 matmuls run as one bf16 pass by default, hence the same number.
_PEAKS: tuple[tuple[str, dict[str, float]], ...] = (
    (r"h100.*pcie", {"bfloat16": 756.5, "float32": 378.0}),
    (r"h100.*nvl", {"bfloat16": 835.5, "float32": 417.5}),
    (r"h100", {"bfloat16": 989.5, "float32": 494.5}),  # SXM5 ("NVIDIA H100 80GB HBM3")
    (r"h200.*nvl", {"bfloat16": 835.5, "float32": 417.5}),
    (r"h200", {"bfloat16": 989.5, "float32": 494.5}),  # SXM
    (r"a100", {"bfloat16": 312.0, "float32": 156.0}),
    (r"\bl4\b", {"bfloat16": 121.0, "float32": 60.0}),
    (r"\ba10\b(?!g)", {"bfloat16": 125.0, "float32": 62.5}),
    (r"tpu v4$", {"bfloat16": 275.0, "float32": 275.0}),
    (r"tpu v5 ?lite|tpu v5e", {"bfloat16": 197.0, "float32": 197.0}),
    (r"tpu v5p|tpu v5$", {"bfloat16": 459.0, "float32": 459.0}),
    (r"tpu v6 ?lite|tpu v6e", {"bfloat16": 918.0, "float32": 918.0}),
)


def peak_flops(device_kind: str, dtype: str) -> float | None:
    """Dense peak FLOP/s of one device of `device_kind` (jax's `device.device_kind`) computing
    in `dtype` ("bfloat16" | "float32"); None for a device or dtype not in the table."""
    kind = device_kind.strip().lower()
    for pattern, peaks in _PEAKS:
        if re.search(pattern, kind):
            tflops = peaks.get(dtype)
            return None if tflops is None else tflops * TERA
    return None


def mfu(flops_per_second: float | None, device_kind: str, dtype: str,
        num_devices: int) -> float | None:
    """Achieved / (peak x devices), or None when the peak is unknown."""
    peak = peak_flops(device_kind, dtype)
    if peak is None or not flops_per_second:
        return None
    return flops_per_second / (peak * num_devices)


def free_memory_bytes(device) -> int:
    """Free bytes on `device` (its allocator's limit minus use), or the host's available
    memory (/proc/meminfo MemAvailable) for devices without allocator stats (CPU)."""
    stats: dict[str, Any] | None = None
    with contextlib.suppress(Exception):  # backends without stats
        stats = device.memory_stats()
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) * 1024


def accelerated(backend: str | None = None) -> bool:
    """Whether `backend` (default: jax's default backend) is a GPU or TPU."""
    if backend is None:
        import jax

        backend = jax.default_backend()
    return backend in ("gpu", "cuda", "rocm", "tpu")


def compute_dtype(name: str, backend: str | None = None) -> str:
    """The concrete compute dtype of `model.dtype`: "auto" is bfloat16 on GPU/TPU (tensor
    cores, MXUs) and float32 on CPU (where bfloat16 is emulated and slower)."""
    if name != "auto":
        return name
    return "bfloat16" if accelerated(backend) else "float32"
