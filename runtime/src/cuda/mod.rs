//! The CUDA backend: runs a plan's generated kernels through cudarc.
