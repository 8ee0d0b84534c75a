"""Maglev tables (pure): every slot owned, shares follow the weights, order does not matter, and removing
a backend moves few slots of the others."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pynetmon.monitors.maglev import NO_BACKEND, is_prime, maglev_table

SIZE = 1009
names = st.lists(st.from_regex(r"10\.0\.[0-9]{1,2}\.[0-9]{1,3}:[0-9]{2,4}", fullmatch=True), min_size=1,
                 max_size=12, unique=True)


@given(names)
def test_equal_weights_fill_every_slot_and_differ_by_at_most_one(backends):
    table = maglev_table([(n, 1) for n in backends], SIZE)
    counts = [table.count(i) for i in range(len(backends))]
    assert sum(counts) == SIZE and NO_BACKEND not in table
    assert max(counts) - min(counts) <= 1


@given(st.lists(st.integers(1, 20), min_size=1, max_size=8))
def test_shares_follow_the_weights(weights):
    backends = [(f"10.0.0.{i}:80", w) for i, w in enumerate(weights)]
    table = maglev_table(backends, SIZE)
    total = sum(weights)
    for i, w in enumerate(weights):
        # each round hands out one slot per max(weight) credit: off by at most one round's slots
        assert abs(table.count(i) - SIZE * w / total) <= len(weights) + 1


@given(names, st.randoms())
def test_order_does_not_matter(backends, rnd):
    pairs = [(n, 1 + i % 3) for i, n in enumerate(backends)]
    shuffled = pairs[:]
    rnd.shuffle(shuffled)
    by_name = {n: i for i, (n, _) in enumerate(shuffled)}
    a = maglev_table(pairs, SIZE)
    b = maglev_table(shuffled, SIZE)
    assert [pairs[i][0] for i in a] == [shuffled[i][0] for i in b]
    assert all(by_name[pairs[i][0]] == j for i, j in zip(a, b, strict=True))


@settings(max_examples=50)
@given(st.lists(st.integers(0, 255), min_size=3, max_size=10, unique=True), st.data())
def test_removing_one_backend_moves_few_other_slots(octets, data):
    backends = [(f"10.1.2.{o}:8080", 1) for o in octets]
    gone = data.draw(st.integers(0, len(backends) - 1))
    before = maglev_table(backends, 4099)
    after = maglev_table([(n, 0 if i == gone else w) for i, (n, w) in enumerate(backends)], 4099)
    assert gone not in after
    kept = [s for s in range(4099) if before[s] != gone]
    moved = sum(before[s] != after[s] for s in kept)
    # `hash % n` would move 1 - 1/(n-1) of them. Maglev usually moves 1-3%, but two backends that draw
    # the same skip walk shifted copies of one permutation and may move more (hypothesis found 16% of
    # three backends, [68, 148, 0]): never half of what `hash % n` moves
    n = len(backends)
    assert moved <= 0.5 * (1 - 1 / (n - 1)) * len(kept)


def test_removing_one_backend_moves_one_percent_on_average():
    rnd = random.Random(13)
    shares = []
    for _ in range(100):
        backends = [(f"10.1.2.{o}:8080", 1) for o in rnd.sample(range(256), rnd.randrange(3, 11))]
        gone = rnd.randrange(len(backends))
        before = maglev_table(backends, 4099)
        after = maglev_table([(n, 0 if i == gone else w) for i, (n, w) in enumerate(backends)], 4099)
        kept = [s for s in range(4099) if before[s] != gone]
        shares.append(sum(before[s] != after[s] for s in kept) / len(kept))
    assert sum(shares) / len(shares) < 0.02 and sorted(shares)[94] < 0.05


def test_zero_weights_and_bad_sizes():
    assert maglev_table([("a", 0), ("b", 0)], 7) == [NO_BACKEND] * 7
    assert maglev_table([], 7) == [NO_BACKEND] * 7
    assert set(maglev_table([("a", 0), ("b", 3)], 7)) == {1}  # weight 0: drained
    with pytest.raises(ValueError, match="prime"):
        maglev_table([("a", 1)], 4096)
    with pytest.raises(ValueError, match="unique"):
        maglev_table([("a", 1), ("a", 2)], 7)
    assert [n for n in range(30) if is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]
