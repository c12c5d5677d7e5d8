"""facerestore: batch blind face restoration with diffusion priors."""

__version__ = "0.1.0"
