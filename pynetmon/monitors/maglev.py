"""Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
Balancer", NSDI 2016, section 3.4), with weights: the lookup table the `lb` monitor's kernel side indexes
by a connection's hash.

Each backend walks its own permutation of the table's slots (offset and skip from two hashes of its
name) and, in turns, takes its next preferred slot that is still free. A turn is earned in proportion to
the weight (each round a backend gains `weight` credit and takes one slot per `max(weight)` credit), so
slot counts follow the weights; with equal weights they differ by at most one. Removing a backend frees
only its slots in the ideal case; Maglev moves a few more, far fewer than `hash % n` would.

>>> table = maglev_table([("10.0.0.1:80", 1), ("10.0.0.2:80", 1)], 7)
>>> sorted(set(table))
[0, 1]
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

NO_BACKEND = -1
"""The whole table holds this when no backend has a weight above zero."""


def is_prime(n: int) -> bool:
    """True for a prime `n` (trial division: table sizes are at most a few hundred thousand)."""
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


def _offset_skip(name: str, size: int) -> tuple[int, int]:
    digest = hashlib.blake2b(name.encode(), digest_size=16).digest()
    h1, h2 = int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little")
    return h1 % size, h2 % (size - 1) + 1


def maglev_table(backends: Sequence[tuple[str, int]], size: int) -> list[int]:
    """The lookup table of `size` slots (a prime, so that every skip walks all slots): for each slot the
    index into `backends` ((name, weight) pairs, names unique) of the backend that owns it, or
    NO_BACKEND everywhere when no weight is above zero. The result depends on the names and weights
    only, not on the order the backends are given in."""
    if not is_prime(size):
        raise ValueError(f"the table size must be a prime, not {size}")
    names = [name for name, _ in backends]
    if len(set(names)) != len(names):
        raise ValueError("backend names must be unique")
    if any(w < 0 for _, w in backends):
        raise ValueError("weights must not be negative")
    live = sorted((name, w, i) for i, (name, w) in enumerate(backends) if w > 0)
    table = [NO_BACKEND] * size
    if not live:
        return table
    perms = [_offset_skip(name, size) for name, _, _ in live]
    nxt = [0] * len(live)
    credit = [0] * len(live)
    top = max(w for _, w, _ in live)
    filled = 0
    while True:
        for k, (_, weight, index) in enumerate(live):
            credit[k] += weight
            while credit[k] >= top:
                credit[k] -= top
                offset, skip = perms[k]
                slot = (offset + nxt[k] * skip) % size
                while table[slot] != NO_BACKEND:
                    nxt[k] += 1
                    slot = (offset + nxt[k] * skip) % size
                table[slot] = index
                nxt[k] += 1
                filled += 1
                if filled == size:
                    return table
