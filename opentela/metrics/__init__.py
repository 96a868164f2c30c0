"""Prometheus metrics: what a node counts about its requests, its replicas and its pool, and the text it serves at ``/metrics``."""
