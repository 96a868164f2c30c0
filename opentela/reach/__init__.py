"""Reaching nodes that cannot be dialed: which nodes are private, which relays carry their
streams, the relay service, and the dial-back check that tells a node it is private."""
