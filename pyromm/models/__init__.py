"""Multimodal VAE models as Pyro programs with encoder guides."""
from pyromm.models.joint_encoder import EncoderHead, JointEncoder, JointEncoderVAE
from pyromm.models.jnf import JNF, ProjectedEncoder, UnimodalFlowPosterior
from pyromm.models.mmvae import MMVAE
from pyromm.models.mmvae_plus import MMVAEPlus
from pyromm.models.modality import Modality
from pyromm.models.multimodal_vae import ConditionalPrior, MultimodalVAE, independent_vaes, mmvm_vae
from pyromm.models.mvae import MVAE
from pyromm.models.mvtcae import MVTCAE
from pyromm.models.priors import MMVMPrior, standard_normal
from pyromm.models.shared_vae import AGGREGATIONS, SharedLatentVAE

__all__ = [
    "AGGREGATIONS",
    "ConditionalPrior",
    "EncoderHead",
    "JNF",
    "JointEncoder",
    "JointEncoderVAE",
    "MMVAE",
    "MMVAEPlus",
    "MMVMPrior",
    "MVAE",
    "MVTCAE",
    "Modality",
    "MultimodalVAE",
    "ProjectedEncoder",
    "SharedLatentVAE",
    "UnimodalFlowPosterior",
    "independent_vaes",
    "mmvm_vae",
    "standard_normal",
]
