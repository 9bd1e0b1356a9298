"""Kernels of the inverse convolution (Triton) and their PyTorch twins.

- ``wavefront``: the kernel convention and the PyTorch twin (anti-diagonal solve, its transpose,
  the causal convolution, the weight gradient);
- ``triton_inverse_conv``: the Triton kernels ``solve``, ``conv``, ``dy``, ``dw`` (triton is
  imported only when they are first used);
- ``inverse_conv``: the autograd function with its backend choice, and the dense reference.

Nothing is imported here, so ``import zoo.kernels`` never needs triton.
"""
