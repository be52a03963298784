"""The methods runs can name, each registered by its own module: ``METHODS[name]`` (``pyromm methods`` lists them).

Add one in a file of your own: subclass :class:`Method`, call :func:`register_method`, and name the file in the
config's ``plugins``."""
from pyromm.methods.method import METHODS, Method, register_method
from pyromm.methods import (  # noqa: F401  (each registers its methods)
    independent,
    mmvm,
    shared_latent,
    mvae,
    mvtcae,
    joint_encoder,
    mmvae,
    mmvae_plus,
    jnf,
)

__all__ = ["METHODS", "Method", "register_method"]
