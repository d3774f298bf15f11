"""The block pool's bookkeeping: reservations, sharing, the prefix index and its LRU eviction."""

import numpy as np
import pytest

from tinygpt.paged_cache import BlockPool, block_keys


def make_pool(n_blocks=4, block_size=2):
    return BlockPool(n_layer=2, n_head=3, head_dim=4, n_blocks=n_blocks, block_size=block_size)


def test_layout_holds_keys_transposed_within_a_block():
    pool = make_pool(n_blocks=5, block_size=8)
    assert pool.keys.shape == (2, 5, 3, 4, 8)  # [layer, block, head, dim, slot]
    assert pool.values.shape == (2, 5, 3, 8, 4)  # [layer, block, head, slot, dim]


def test_reservations_bound_what_can_be_taken():
    pool = make_pool(n_blocks=4)
    assert pool.reserve(3) and pool.unreserved() == 1
    assert not pool.reserve(2)  # refused whole, nothing changes
    assert pool.unreserved() == 1
    blocks = [pool.take() for _ in range(3)]
    assert len(set(blocks)) == 3 and pool.reserved == 0 and pool.blocks_in_use() == 3
    for block in blocks:
        pool.release(block)
    assert pool.blocks_in_use() == 0 and pool.unreserved() == 4


def test_shared_block_is_freed_by_its_last_holder_only():
    pool = make_pool()
    pool.reserve(1)
    block = pool.take()
    pool.hold(block)
    pool.release(block)
    assert pool.blocks_in_use() == 1
    pool.release(block)
    assert pool.blocks_in_use() == 0 and pool.unreserved() == 4


def test_prefix_keys_name_everything_up_to_the_block_end():
    a = block_keys([1, 2, 3, 4, 5], block_size=2, count=2)
    b = block_keys([1, 2, 3, 4, 9], block_size=2, count=2)
    c = block_keys([7, 2, 3, 4], block_size=2, count=2)
    assert a == b  # the fifth id is past both blocks
    assert a[0] != c[0] and a[1] != c[1]  # same second block, different history
    assert len(set(a)) == 2


def test_released_indexed_blocks_stay_cached_until_evicted_least_recent_first():
    pool = make_pool(n_blocks=3)
    keys = block_keys(list(range(6)), block_size=2, count=3)
    pool.reserve(3)
    blocks = [pool.take() for _ in range(3)]
    for block, key in zip(blocks, keys):
        pool.index(block, key)
    for block in (blocks[1], blocks[0], blocks[2]):  # released in this order: blocks[1] is the oldest
        pool.release(block)
    assert pool.blocks_in_use() == 0 and pool.unreserved() == 3
    assert pool.cached_prefix(keys) == blocks
    pool.reserve(1)
    assert pool.take() == blocks[1]  # evicted first
    assert pool.cached_prefix(keys) == blocks[:1]  # the chain now breaks at the second block


def test_holding_an_idle_cached_block_takes_it_out_of_reach_of_reservations():
    pool = make_pool(n_blocks=2)
    key = block_keys([5, 6], block_size=2, count=1)
    pool.reserve(1)
    block = pool.take()
    pool.index(block, key[0])
    pool.release(block)
    found = pool.cached_prefix(key)
    assert found == [block] and pool.idle(found) == 1
    pool.hold(block)
    assert pool.unreserved() == 1 and pool.idle(found) == 0


def test_copy_moves_the_first_slots_of_every_layer():
    pool = make_pool(n_blocks=2, block_size=4)
    rng = np.random.default_rng(0)
    pool.keys[:, 0] = rng.standard_normal(pool.keys[:, 0].shape)
    pool.values[:, 0] = rng.standard_normal(pool.values[:, 0].shape)
    pool.copy(0, 1, slots=3)
    np.testing.assert_array_equal(pool.keys[:, 1, :, :, :3], pool.keys[:, 0, :, :, :3])
    np.testing.assert_array_equal(pool.values[:, 1, :, :3], pool.values[:, 0, :, :3])
    assert not pool.keys[:, 1, :, :, 3].any() and not pool.values[:, 1, :, 3].any()


@pytest.mark.parametrize("n_blocks", [1, 7])
def test_every_block_can_be_taken_once(n_blocks):
    pool = make_pool(n_blocks=n_blocks)
    pool.reserve(n_blocks)
    assert sorted(pool.take() for _ in range(n_blocks)) == list(range(n_blocks))
