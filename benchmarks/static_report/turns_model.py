"""What the fused attention backward's dQ turns cost (kernels/attention/backward.py,
attention_backward_fused_kernel): a list-scheduling model of its programs against the same
programs running free (as with atomic dQ adds, which are not deterministic).

Programs take tickets in launch order: per (batch, head), its key blocks from the last to
the first. Each starts on the earliest free slot of `slots` (SMs x CTAs an SM) and walks its
query blocks in order, one time unit a tile; its tile at query block i waits for the next
key block's tile at i (its predecessor in i's dQ order), if that key block sees i. Under a
causal mask with BLOCK_M <= BLOCK_N the programs then move in step and the turns cost
nothing (with taller tiles, the key blocks that start at one block of queries queue there
one after another); without one, each
key block of a (batch, head) starts one tile after the next, so a launch pays about one
tile per key block of a head once per wave of programs: little on long sequences of many
heads, up to half on a single wave. Tiles of BLOCK_M x BLOCK_N, causal offset 0, no GQA;
not modelled: tiles of unequal cost (masked ones, the tail), memory, the polling itself."""
from __future__ import annotations

import heapq
from dataclasses import dataclass


@dataclass(frozen=True)
class TurnsPrediction:
    free_time: float  # in tile times
    turns_time: float

    @property
    def efficiency(self) -> float:
        """The free-running time over the time with turns (1: the turns cost nothing)."""
        return self.free_time / self.turns_time


def _first_query_block(key_block: int, block_m: int, block_n: int, causal: bool) -> int:
    return (key_block * block_n) // block_m if causal else 0


def _last_key_block(query_block: int, block_m: int, block_n: int, n_key_blocks: int, causal: bool) -> int:
    return min(((query_block + 1) * block_m - 1) // block_n, n_key_blocks - 1) if causal else n_key_blocks - 1


def predict_turns(heads: int, length: int, block_m: int, block_n: int, slots: int, causal: bool) -> TurnsPrediction:
    """Modelled times of a fused backward launch over `heads` (batch x heads) of L = S =
    `length`, with and without its turns."""
    n_q, n_k = -(-length // block_m), -(-length // block_n)
    times = {}
    for turns in (False, True):
        free_slots = [0.0] * slots
        end = 0.0
        for _ in range(heads):
            finished = {}  # (key block, query block) -> when its tile ended, this head
            for key_block in reversed(range(n_k)):
                clock = heapq.heappop(free_slots)
                for query_block in range(_first_query_block(key_block, block_m, block_n, causal), n_q):
                    if turns and key_block < _last_key_block(query_block, block_m, block_n, n_k, causal):
                        clock = max(clock, finished[key_block + 1, query_block])
                    clock += 1
                    finished[key_block, query_block] = clock
                heapq.heappush(free_slots, clock)
                end = max(end, clock)
        times[turns] = end
    return TurnsPrediction(times[False], times[True])
