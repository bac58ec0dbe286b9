"""What a saved model is: its format, signature, flavors and reference profile."""

from treadle.models.flavors import FLAVORS, LoadedModel, UntrustedModelError
from treadle.models.format import Manifest
from treadle.models.profile import profile_frame
from treadle.models.signature import ColumnSpec, Signature, SignatureError, infer_signature

__all__ = [
    "FLAVORS",
    "ColumnSpec",
    "LoadedModel",
    "Manifest",
    "Signature",
    "SignatureError",
    "UntrustedModelError",
    "infer_signature",
    "profile_frame",
]
