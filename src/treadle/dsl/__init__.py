"""What users write: steps and pipelines, and the graph they make."""

from treadle.dsl.building import OutputHandle, Traced
from treadle.dsl.graph import Graph, Node
from treadle.dsl.pipeline import Pipeline, format_param, pipeline
from treadle.dsl.step import Resources, Step, StepOptions, step, unmapped

__all__ = [
    "Graph",
    "Node",
    "OutputHandle",
    "Pipeline",
    "Resources",
    "Step",
    "StepOptions",
    "Traced",
    "format_param",
    "pipeline",
    "step",
    "unmapped",
]
