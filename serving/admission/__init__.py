"""Admission: the one step that decides which model versions the model server loads and serves.

`state` is the plain file admission publishes its decisions in (read by the orchestrator), `checks` the
checks a version folder must pass, `admitter` the decisions (admit, refuse, serve, pin, roll back),
`loader` what the model server is made to load (models.config, reloads, a version's bring-up and probes),
`control` the model server's gRPC ModelService and PredictionService as admission drives them, `errors`
admission's own error, `bucket` its link to a cluster's bucket (decisions pushed as the served config, ops
requests taken). Run as its own process: `python -m serving.admission`.
"""
