"""Bridges from treadle to other platforms: Kubeflow Pipelines (`integrations.kfp`) and
Kubernetes manifests for model servers (`integrations.kubernetes`).

Each module imports its platform's library only when it is used, so treadle itself does
not depend on them.
"""
