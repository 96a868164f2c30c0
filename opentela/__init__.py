"""opentela: one OpenAI-compatible pool out of LLM servers scattered over clusters.

Layout (data flows one way):

- ``overlay/``  libp2p host, identity, framing, stream pool (libp2p is imported by host.py and its
  narrow patches, fastpath.py, only)
- ``table/``    signed per-node records, deterministic merge, anti-entropy sync
- ``routing/``  pure matching over table snapshots (never writes the table)
- ``gateway/``  the HTTP edge (aiohttp inside trio), forwarding over peer streams
- ``worker/``   the local backend: health, model discovery, subprocess, serving forwarded requests
- ``platform/`` GPUs, Slurm (end time, drain, successor jobs)
- ``edge/``     ``--http-workers``: more processes, so more cores, on one entry's HTTP port
- ``access/``   who may join, claim and call: authority key, grants, join tokens, admission (pure)
- ``store/``    the node's one persistent store (SQLite, or PostgreSQL by URL): join tokens
- ``node.py``   composition root; ``cli.py`` flags; ``config.py`` the one config tree;
  ``closed_pool.py`` (``--authority``) and ``stop_budget.py`` (the bounded stop) are its parts
"""

__version__ = "0.1.0"
