"""Which floating-point path this machine trains on, and how to emulate a smaller CPU on a bigger one.

    print(rk.cpu.describe())      # e.g. "Intel Xeon ... | torch kernels AVX512 | bfloat16 fast: yes"
    env = {**os.environ, **rk.cpu.AVX2_ENV}   # run a subprocess as on an AVX2-only CPU

Why: float results of training differ between instruction sets (AVX2, AVX-512, AMX bfloat16, ARM),
so the course's tests compare exactly only what does not depend on them, assert the rest with
tolerances, and check the notebooks on another path than the one that made their outputs.
AVX2_ENV caps the three libraries that pick kernels by CPU: PyTorch's own (ATen), oneDNN
(convolutions) and MKL (matrix products, FFT). Measured on a Xeon with AMX: with all three capped,
training results and cleanlab's counts change the way they do on an AVX2-only AMD EPYC; with only
the first two, MKL's results (e.g. notebook 1's audit) stay those of the Xeon.
"""
import os
import platform

import torch

AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def model_name():
    """The CPU's model name from /proc/cpuinfo (Linux), else what the platform module knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def capped():
    """The AVX2_ENV variables set in this process (empty when running on the native path)."""
    return {k: os.environ[k] for k in AVX2_ENV if k in os.environ}


def describe(device="cpu"):
    """One line saying which kernels run: CPU model, torch's capability, caps in force, bfloat16 speed."""
    from .models import bf16_is_fast
    caps = capped()
    cap_text = ", capped by " + " ".join(f"{k}={v}" for k, v in caps.items()) if caps else ""
    return (f"{model_name()} | torch {torch.__version__}, kernels {torch.backends.cpu.get_cpu_capability()}"
            f"{cap_text} | {torch.get_num_threads()} threads | bfloat16 fast: "
            f"{'yes' if bf16_is_fast(device) else 'no'}")
