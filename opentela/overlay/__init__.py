"""The libp2p overlay: identity, host, framing and the stream pool."""
