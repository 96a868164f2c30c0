"""Replicas on demand: the head submits, hands over and cancels Slurm jobs for catalogued models (``fleet.yaml``)."""
