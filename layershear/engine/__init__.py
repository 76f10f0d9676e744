"""Engine stage: per-request log-likelihoods of a model with any blocks removed.

The seam is lm-eval's ``LM.loglikelihood(requests)``. Inside: layout and packing, prefix cache, step
reuse, stacking, fused kernels, compile, distributed.
"""
