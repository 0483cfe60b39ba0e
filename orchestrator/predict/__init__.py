"""Predicting: the gRPC client of the model server, its circuit breaker and the raw prediction."""
