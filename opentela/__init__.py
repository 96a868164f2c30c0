"""opentela: one OpenAI-compatible pool out of LLM servers scattered over clusters.

Layout (data flows one way):

- ``overlay/``  libp2p host, identity, framing, stream pool (the only libp2p importer is host.py)
- ``table/``    signed per-node records, deterministic merge, anti-entropy sync
- ``routing/``  pure matching over table snapshots (never writes the table)
- ``gateway/``  the HTTP edge (aiohttp inside trio), forwarding over peer streams
- ``worker/``   the local backend: health, model discovery, subprocess, serving forwarded requests
- ``platform/`` GPUs (and, later, Slurm)
- ``node.py``   composition root; ``cli.py`` flags; ``config.py`` the one config tree
"""

__version__ = "0.1.0"
