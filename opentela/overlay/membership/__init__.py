"""Who is in the pool, and who just failed: SWIM with the Lifeguard refinements.

Layout (one mechanism per module; ◇ = pure, no I/O, clock and randomness passed in):

- ``state.py``      ◇ ``Membership``: the state machine; inputs in, effects out
- ``suspicion.py``  ◇ Lifeguard suspicion timeout and its confirmations
- ``awareness.py``  ◇ local health score that stretches our own timeouts
- ``queue.py``      ◇ retransmit-limited broadcast queue for piggybacked news
- ``messages.py``   ◇ message dataclasses and the versioned msgpack codec
- ``transport.py``  the ``Transport`` contract; ``MemoryNetwork`` simulator for tests
- ``runtime.py``    trio driver over libp2p: feeds ``Membership``, carries out its effects
"""

from .messages import (
    Ack,
    Alive,
    Dead,
    Left,
    Message,
    MessageError,
    Nack,
    Ping,
    PingReq,
    Suspect,
    Update,
    decode,
    encode,
)
from .state import (
    Effect,
    Member,
    MemberDown,
    MemberLeft,
    Membership,
    MembershipConfig,
    MemberState,
    MemberSuspect,
    MemberUp,
    Refuted,
    Send,
)

__all__ = [
    "Ack",
    "Alive",
    "Dead",
    "Effect",
    "Left",
    "Member",
    "MemberDown",
    "MemberLeft",
    "MemberState",
    "MemberSuspect",
    "MemberUp",
    "Membership",
    "MembershipConfig",
    "Message",
    "MessageError",
    "Nack",
    "Ping",
    "PingReq",
    "Refuted",
    "Send",
    "Suspect",
    "Update",
    "decode",
    "encode",
]
