"""Replays the index math of the causal conv that the tensor-core delta rule's prep computes with
`prefill.gdn_fused_conv` (`gdn_tc_prep_load`, codegen/src/prefill/kernels.rs) and of the conv-state
update in the state pass (`gdn_advance_conv_state`), in pure Python, for a prompt run as one or
several pieces. Checked against a direct causal conv of [conv state | the pieces' inputs]: every
staged q, k and v value of every (v-head, chunk) block, each smem cell written once, rows past the
prompt zero, and the conv state after each piece.
"""

import math
import random

CONV_K, CHUNK, THREADS, RSEG, BATCH = 4, 64, 256, 16, 3


def silu(x):
    return x / (1.0 + math.exp(-x))


def dims(hk, hv, dk, dv):
    key_dim = hk * dk
    conv_dim = 2 * key_dim + hv * dv
    # the fused input projection's row: [qkv | z | b | a]
    return key_dim, conv_dim, conv_dim + hv * dv + 2 * hv


def prep_staging(x, t, conv_w, conv_state, h, c, hk, hv, dk, dv):
    """The smem tiles (as dicts {(row, col): value}) one prep block stages."""
    key_dim, conv_dim, proj_cols = dims(hk, hv, dk, dv)
    kh, c0 = h // (hv // hk), c * CHUNK
    n = min(CHUNK, t - c0)
    ch_count = 2 * dk + dv
    items = ch_count * (CHUNK // RSEG)
    tiles = {"q": {}, "k": {}, "v": {}}

    def place(it):
        j, r0 = it % ch_count, it // ch_count * RSEG
        if j < dk:
            return kh * dk + j, r0, "q", j
        if j < 2 * dk:
            return key_dim + kh * dk + j - dk, r0, "k", j - dk
        return 2 * key_dim + h * dv + j - 2 * dk, r0, "v", j - 2 * dk

    for tid in range(THREADS):
        for i0 in range(tid, items, BATCH * THREADS):
            wins = []
            for b in range(BATCH):
                it = i0 + b * THREADS
                if it >= items:
                    wins.append(None)
                    continue
                ch, r0, _, _ = place(it)
                win = []
                for i in range(RSEG + CONV_K - 1):
                    p = c0 + r0 - (CONV_K - 1) + i
                    if p < 0:
                        win.append(conv_state[ch * (CONV_K - 1) + (CONV_K - 1 + p)])
                    elif p - c0 < n:
                        win.append(x[p * proj_cols + ch])
                    else:
                        win.append(0.0)
                wins.append((win, [conv_w[ch * CONV_K + i] for i in range(CONV_K)]))
            for b in range(BATCH):
                it = i0 + b * THREADS
                if it >= items:
                    continue
                ch, r0, tile, col = place(it)
                win, wc = wins[b]
                for r in range(RSEG):
                    acc = sum(wc[i] * win[r + i] for i in range(CONV_K))
                    y = silu(acc) if r0 + r < n else 0.0
                    assert (r0 + r, col) not in tiles[tile], "a cell written twice"
                    tiles[tile][(r0 + r, col)] = y
    return tiles


def advance_conv_state(x, t, conv_state, conv_dim, proj_cols, grid_threads):
    for start in range(grid_threads):
        for ch in range(start, conv_dim, grid_threads):
            for i in range(CONV_K - 1):
                p = t - (CONV_K - 1) + i
                conv_state[ch * (CONV_K - 1) + i] = (
                    x[p * proj_cols + ch] if p >= 0 else conv_state[ch * (CONV_K - 1) + CONV_K - 1 + p]
                )


def run(hk, hv, dk, dv, pieces, seed):
    rng = random.Random(seed)
    key_dim, conv_dim, proj_cols = dims(hk, hv, dk, dv)
    conv_w = [rng.uniform(-1, 1) for _ in range(conv_dim * CONV_K)]
    state = [rng.uniform(-1, 1) for _ in range(conv_dim * (CONV_K - 1))]
    history = [[state[ch * (CONV_K - 1) + i] for i in range(CONV_K - 1)] for ch in range(conv_dim)]
    for t in pieces:
        x = [rng.uniform(-2, 2) for _ in range(t * proj_cols)]
        for ch in range(conv_dim):
            history[ch] += [x[p * proj_cols + ch] for p in range(t)]
        for c in range((t + CHUNK - 1) // CHUNK):
            for h in range(hv):
                tiles = prep_staging(x, t, conv_w, state, h, c, hk, hv, dk, dv)
                kh, n = h // (hv // hk), min(CHUNK, t - c * CHUNK)
                for tile, base, width in (("q", kh * dk, dk), ("k", key_dim + kh * dk, dk), ("v", 2 * key_dim + h * dv, dv)):
                    assert len(tiles[tile]) == CHUNK * width, "every cell of the tile written"
                    for r in range(CHUNK):
                        for col in range(width):
                            got = tiles[tile][(r, col)]
                            if r >= n:
                                assert got == 0.0
                                continue
                            ch, pos = base + col, len(history[base + col]) - t + c * CHUNK + r
                            want = silu(sum(conv_w[ch * CONV_K + i] * history[ch][pos - (CONV_K - 1) + i] for i in range(CONV_K)))
                            assert abs(got - want) < 1e-12, (tile, r, col, got, want)
        # the state pass: 128 blocks of 128 threads cover any channel count here in one step
        advance_conv_state(x, t, state, conv_dim, proj_cols, grid_threads=128 * 128)
        for ch in range(conv_dim):
            assert state[ch * (CONV_K - 1) : ch * (CONV_K - 1) + CONV_K - 1] == history[ch][-(CONV_K - 1) :]


def test_one_piece_at_chunk_edges_with_gqa():
    for t in (1, 2, 3, 4, 63, 64, 65, 130):
        run(hk=2, hv=6, dk=32, dv=32, pieces=[t], seed=t)


def test_pieces_continue_the_conv_state():
    run(hk=2, hv=6, dk=32, dv=32, pieces=[1, 2, 70, 3], seed=7)


def test_128_wide_heads():
    run(hk=1, hv=1, dk=128, dv=128, pieces=[65, 2], seed=3)
