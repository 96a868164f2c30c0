"""The worker side: the local backend, its health, its subprocess, and serving forwarded requests."""
