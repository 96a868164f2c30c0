"""More cores for one entry node's HTTP port: ``--http-workers`` processes beside the node."""
