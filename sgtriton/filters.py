"""The FIR taps StyleGAN resamples with, as plain numbers (no torch, no Triton).

The configuration needs the default ``resample_filter`` and the kernels need the taps they fuse;
both import them from here, so declaring a configuration never imports a kernel module. The taps
become the float filter tensor in :func:`sgtriton.ops.upfirdn2d.setup_filter`.
"""

#: StyleGAN's resampling filter (NVlabs ``resample_filter``): the binomial ``[1, 3, 3, 1]``.
STYLEGAN_FILTER = (1, 3, 3, 1)
