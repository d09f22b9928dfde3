"""Inference services: the pure autoscaler, the service controller that turns a service
into replica jobs, and the autoscaling simulator."""
