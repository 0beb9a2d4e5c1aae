"""Where models run and in which precision: one place for the device and dtype choice of every model step."""

from __future__ import annotations

from functools import lru_cache

import torch


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' = the GPU when there is one, else the CPU; anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matrix products run in hardware on `device`: CUDA with bf16 support, or a CPU with AVX512-BF16
    or AMX. Elsewhere bf16 is emulated and slower than fp32 (measured 8x slower on an AVX2-only CPU)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' = bf16 where the hardware has it (`native_bf16`), else fp32; or 'bfloat16' / 'float32'."""
    if dtype == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    if dtype in ("bfloat16", "bf16"):
        return torch.bfloat16
    if dtype in ("float32", "fp32"):
        return torch.float32
    raise ValueError(f"unknown dtype {dtype!r}: use 'auto', 'bfloat16' or 'float32'")
