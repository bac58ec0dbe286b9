"""Model serving: the model server, traffic across revisions, deployments."""
