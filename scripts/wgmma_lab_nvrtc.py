#!/usr/bin/env python3
"""Compiles scripts/wgmma_lab_kernel.cuh's configurations with NVRTC and ptxas for sm_90a, here,
without a GPU (the pip wheels nvidia-cuda-nvrtc and nvidia-cuda-nvcc: libnvrtc and ptxas; the
wheel has no cicc, so nvcc cannot build the lab itself here). Prints each kernel's registers
and any spill or serialisation warning; exits non-zero on an error.
  LD_LIBRARY_PATH=<cu13>/lib python3 scripts/wgmma_lab_nvrtc.py <cu13 dir>"""
import ctypes
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
# The configurations scripts/wgmma_lab.cu runs: (warpgroups, BN, stages, split-K, smem image,
# wgmma groups in flight).
CONFIGS = [(2, 80, 6, 1, 1), (2, 80, 6, 1, 0), (2, 80, 6, 1, 2), (2, 80, 4, 1, 1), (2, 96, 6, 1, 1),
           (2, 128, 5, 1, 1), (2, 160, 5, 2, 1), (2, 80, 6, 4, 1), (2, 40, 6, 2, 1), (2, 160, 5, 8, 1),
           (2, 80, 6, 4, 0), (1, 120, 8, 1, 1), (1, 240, 5, 2, 1), (1, 80, 8, 1, 1), (1, 160, 6, 2, 1),
           (1, 80, 8, 4, 1), (1, 40, 8, 2, 1)]
CONFIGS = [c + (1,) for c in CONFIGS] + [(2, 80, 6, 1, 1, 2), (2, 80, 8, 1, 1, 2), (2, 80, 6, 4, 1, 2),
                                        (2, 160, 5, 8, 1, 2)]


def main() -> None:
    cu = sys.argv[1]
    with tempfile.TemporaryDirectory() as tmp:
        ops = os.path.join(tmp, "ops.cuh")
        subprocess.run([sys.executable, os.path.join(HERE, "wgmma_lab_ops.py"), ops,
                        *sorted({str(c[1]) for c in CONFIGS})], check=True)
        kernel = open(os.path.join(HERE, "wgmma_lab_kernel.cuh")).read()
        device = open(os.path.join(HERE, "lab_device.cuh")).read()
        kernel = kernel.replace('#include "wgmma_lab_ops.cuh"', "").replace('#include "lab_device.cuh"', "")
        src = device + open(ops).read() + kernel
        src = src.replace("#pragma once", "")
        for c in CONFIGS:
            src += ("template __global__ void gemm_wgmma<%d, %d, %d, %d, %d, %d>(const unsigned short*, "
                    "const unsigned short*, float*, int, int, int);\n" % c)
        lib = ctypes.CDLL(os.path.join(cu, "lib", "libnvrtc.so.13"))
        prog = ctypes.c_void_p()
        if lib.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), b"wgmma_lab.cu", 0, None, None):
            sys.exit("nvrtcCreateProgram failed")
        opts = [b"--gpu-architecture=compute_90a", b"-std=c++17", b"-default-device"]
        rc = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
        n = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
        log = ctypes.create_string_buffer(n.value)
        lib.nvrtcGetProgramLog(prog, log)
        if log.value.strip():
            print(log.value.decode())
        if rc:
            sys.exit(f"NVRTC failed ({rc})")
        lib.nvrtcGetPTXSize(prog, ctypes.byref(n))
        ptx = ctypes.create_string_buffer(n.value)
        lib.nvrtcGetPTX(prog, ptx)
        path = os.path.join(tmp, "lab.ptx")
        open(path, "wb").write(ptx.value)
        p = subprocess.run([os.path.join(cu, "bin", "ptxas"), "-arch=sm_90a", "-v", "-o",
                            os.path.join(tmp, "lab.cubin"), path], capture_output=True, text=True)
        for line in p.stderr.splitlines():
            if re.search(r"entry function|Used \d+ registers|warn|spill stores, [1-9]|error", line):
                print(line.strip())
        if p.returncode:
            sys.exit(f"ptxas failed ({p.returncode})")


if __name__ == "__main__":
    main()
