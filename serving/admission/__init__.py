"""Admission: the one step that decides which model versions the model server loads and serves.

`state` is the plain file admission publishes its decisions in (read by the orchestrator), `checks` the
checks a version folder must pass, `admitter` the decisions and the config they become, `control` the
model server's gRPC ModelService and PredictionService as admission drives them, `bucket` its link to a
cluster's bucket (decisions pushed as the served config, ops requests taken). Run as its own process:
`python -m serving.admission`.
"""
