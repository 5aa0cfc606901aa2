"""Pure replica model of an SGLang server (no I/O; time is injected).

Used by the HTTP emulator (``saga.emulator.server``) in real time and by the cluster simulator
in virtual time. See ``docs/emulator.md`` for how it maps to SGLang's real behaviour.
"""

from saga.emulator.core.config import ReplicaConfig, TimingParams
from saga.emulator.core.errors import (
    DuplicateRequest,
    DuplicateSession,
    EmulatorError,
    ExceedsCapacity,
    InvalidRequest,
    PromptTooLong,
    UnknownSession,
)
from saga.emulator.core.radix import RadixCache
from saga.emulator.core.replica import ReplicaModel
from saga.emulator.core.replica_state import Counters
from saga.emulator.core.request import (
    VOCAB_SIZE,
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    Event,
    Finished,
    FirstToken,
    KVEvent,
    Load,
    Request,
    TokensGenerated,
    chain_page_keys,
    output_token_ids,
)

__all__ = [
    "VOCAB_SIZE",
    "AllBlocksCleared",
    "BlockRemoved",
    "BlockStored",
    "Counters",
    "DuplicateRequest",
    "DuplicateSession",
    "EmulatorError",
    "Event",
    "ExceedsCapacity",
    "Finished",
    "FirstToken",
    "InvalidRequest",
    "KVEvent",
    "Load",
    "PromptTooLong",
    "RadixCache",
    "ReplicaConfig",
    "ReplicaModel",
    "Request",
    "TimingParams",
    "TokensGenerated",
    "UnknownSession",
    "chain_page_keys",
    "output_token_ids",
]
