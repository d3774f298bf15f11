"""The KV cache of many sequences at once: a pool of fixed-size blocks, each sequence holding a list of them.

The idea of vLLM's paged attention. Memory follows the tokens in flight, not slots x context: a sequence
takes a block of ``block_size`` positions when it reaches one, and gives its blocks back when it ends. Blocks
are shared read-only between sequences whose tokens agree: the prompt of ``n`` continuations is computed once,
and a prompt that starts with a recent prompt's blocks reuses them (prefix reuse, keyed by the token ids of
everything up to the block's end). A block nobody holds any more keeps its keys and values, indexed by that
key, until the pool needs it back (least recently released first).

Admission works on reservations: a request reserves, up front, every block it may ever need (its prompt and
its whole token budget), so a running sequence never finds the pool empty and a request is never half-admitted.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

BLOCK_SIZE = 16  # positions per block: a sequence wastes under one block; attention scores a block per pass


def block_keys(ids: Sequence[int], block_size: int, count: int) -> list[bytes]:
    """The prefix keys of the first ``count`` full blocks of ``ids``: key i names ids[: (i+1) * block_size]
    (a chain: each key hashes the previous key and the block's own ids). BLAKE2b: a collision would hand one
    prompt another prompt's keys and values, silently."""
    keys, previous = [], b""
    for i in range(count):
        block = np.asarray(ids[i * block_size:(i + 1) * block_size], np.int64).tobytes()
        previous = hashlib.blake2b(previous + block, digest_size=16).digest()
        keys.append(previous)
    return keys


class BlockPool:
    """Keys and values of every layer, in blocks (``keys``, ``values``: see :meth:`layer_views`).

    keys:   float32 [n_layer, n_blocks, n_head, head_dim, block_size] (transposed within a block: attention
            scores all the keys of a block at once)
    values: float32 [n_layer, n_blocks, n_head, block_size, head_dim]

    Not thread-safe: the scheduler, which owns the compute, is its only user.
    """

    def __init__(self, n_layer: int, n_head: int, head_dim: int, n_blocks: int, block_size: int = BLOCK_SIZE):
        self.block_size = block_size
        self.n_blocks = n_blocks
        self.keys = np.zeros((n_layer, n_blocks, n_head, head_dim, block_size), np.float32)
        self.values = np.zeros((n_layer, n_blocks, n_head, block_size, head_dim), np.float32)
        self._holders = np.zeros(n_blocks, np.int64)  # how many sequences hold each block
        self._free = list(range(n_blocks - 1, -1, -1))  # never used or evicted: a stack, block 0 first
        self._cached: OrderedDict[int, None] = OrderedDict()  # held by nobody, still indexed: LRU order
        self._key_of: dict[int, bytes] = {}
        self._block_of: dict[bytes, int] = {}
        self.reserved = 0  # blocks promised to admitted requests and not yet taken

    # ---- accounting --------------------------------------------------------------------------------
    def unreserved(self) -> int:
        """Blocks a new reservation may claim: free or evictable, minus those already promised."""
        return len(self._free) + len(self._cached) - self.reserved

    def reserve(self, count: int) -> bool:
        """Promise ``count`` blocks to a request if the pool has them; False (and nothing changes) if not."""
        if count > self.unreserved():
            return False
        self.reserved += count
        return True

    def unreserve(self, count: int) -> None:
        self.reserved -= count

    def blocks_in_use(self) -> int:
        """Blocks held by at least one sequence."""
        return int(np.count_nonzero(self._holders))

    # ---- blocks ----------------------------------------------------------------------------------
    def take(self) -> int:
        """A reserved block for one sequence's exclusive use (the caller held a reservation for it)."""
        self.reserved -= 1
        if self._free:
            block = self._free.pop()
        else:  # evict the least recently released cached prefix
            block, _ = self._cached.popitem(last=False)
            del self._block_of[self._key_of.pop(block)]
        self._holders[block] = 1
        return block

    def hold(self, block: int) -> None:
        """One more sequence holds ``block`` (shared read-only)."""
        if self._holders[block] == 0:
            del self._cached[block]
        self._holders[block] += 1

    def release(self, block: int) -> None:
        """A sequence lets go of ``block``; with no holder left it stays cached if indexed, else is freed."""
        self._holders[block] -= 1
        if self._holders[block] == 0:
            if block in self._key_of:
                self._cached[block] = None
            else:
                self._free.append(block)

    def index(self, block: int, key: bytes) -> None:
        """Record that ``block`` (full) holds the prefix named ``key``, for later prompts to reuse."""
        if key not in self._block_of and block not in self._key_of:
            self._block_of[key] = block
            self._key_of[block] = key

    def cached_prefix(self, keys: list[bytes]) -> list[int]:
        """The blocks holding the longest run of ``keys`` from the first (not yet held: see :meth:`hold`)."""
        blocks = []
        for key in keys:
            block = self._block_of.get(key)
            if block is None:
                break
            blocks.append(block)
        return blocks

    def idle(self, blocks: list[int]) -> int:
        """How many of ``blocks`` nobody holds: holding them takes them out of what reservations can claim."""
        return sum(1 for block in blocks if self._holders[block] == 0)

    def copy(self, source: int, target: int, slots: int) -> None:
        """Copy the first ``slots`` positions of every layer's keys and values from block source to target."""
        self.keys[:, target, :, :, :slots] = self.keys[:, source, :, :, :slots]
        self.values[:, target, :, :slots] = self.values[:, source, :, :slots]
