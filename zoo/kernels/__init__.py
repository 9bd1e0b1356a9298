"""Kernels of the inverse convolution (Triton) and their PyTorch twins."""
