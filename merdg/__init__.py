"""MER-DG: modality-wise entropy regularization for multimodal domain generalization.

The torch parts (``merdg.entropy``, ``merdg.regularizer``, ``merdg.models``, ``merdg.methods``)
import neither Ray nor MLflow, so the MER loss can be used in any training loop.
"""

__version__ = "0.1.0"
