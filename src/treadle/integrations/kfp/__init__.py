"""Kubeflow Pipelines: compile a treadle pipeline to a KFP v2 pipeline YAML, and submit
it to a Kubeflow Pipelines endpoint."""

from treadle.integrations.kfp.compiler import Compiled, KfpOptions, check_image, compile_pipeline
from treadle.integrations.kfp.params import Probed, probe
from treadle.integrations.kfp.submit import submit

__all__ = ["Compiled", "KfpOptions", "Probed", "check_image", "compile_pipeline", "probe", "submit"]
