"""Shine's orchestrator: the Flask service that turns a photo into a skin report.

It never imports TensorFlow; the model runs behind gRPC (see serving/). The package root imports
nothing, so export/ can reuse the face and region code without pulling in Flask.
"""
