"""Multimodal VAE models as Pyro programs with encoder guides."""
from pyromm.models.joint_encoder import EncoderHead, JointEncoder, JointEncoderVAE
from pyromm.models.jnf import JNF, ProjectedEncoder, UnimodalFlowPosterior
from pyromm.models.mmvae import MMVAE, MMVAEObjective
from pyromm.models.mmvae_plus import MMVAEPlus, MMVAEPlusObjective
from pyromm.models.modality import Modality
from pyromm.models.multimodal_vae import MultimodalVAE, independent_vaes, mmvm_vae
from pyromm.models.priors import MMVMPrior, standard_normal
from pyromm.models.shared_vae import AGGREGATIONS, SharedLatentVAE

__all__ = [
    "MMVAEPlus",
    "MMVAEPlusObjective",
    "MMVAE",
    "MMVAEObjective",
    "EncoderHead",
    "JointEncoder",
    "JointEncoderVAE",
    "JNF",
    "ProjectedEncoder",
    "UnimodalFlowPosterior",
    "AGGREGATIONS",
    "SharedLatentVAE",
    "Modality", "MultimodalVAE", "independent_vaes", "mmvm_vae", "MMVMPrior", "standard_normal"]
