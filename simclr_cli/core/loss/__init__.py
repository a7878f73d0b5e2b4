"""The NT-Xent loss: a readable reference, fused Triton and chunked kernels, gradient caching."""
