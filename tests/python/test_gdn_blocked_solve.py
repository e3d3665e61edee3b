"""Replays the index math of `gdn_solve_x_blocked` (codegen/src/prefill/kernels.rs, the
tensor-core delta rule's prep) in pure Python: X = (I + A)^-1 for a strictly lower A of one
chunk, solved in 16 x 16 blocks with the kernel's lane mapping and smem strides, including the
block products it parks in M's upper triangle. Checked against plain forward substitution.
"""

import random

C, SB, WARPS = 64, 16, 8
MS, XS = 67, 68  # the kernel's row strides of M (A below the diagonal) and Xs (X, row-major)


def blocked_solve(a):
    m = [float("nan")] * (C * MS)  # unwritten smem reads as NaN
    for r in range(C):
        for s in range(r):
            m[r * MS + s] = a[r][s]
    xs = [float("nan")] * (C * XS)
    for r in range(C):
        for c in range(C):
            xs[r * XS + c] = 1.0 if r == c else 0.0
    # Diagonal blocks: 2 warps per block, 8 columns per warp, 4 lanes (parts) per column.
    for warp in range(WARPS):
        b0 = SB * (warp >> 1)
        for r in range(b0 + 1, b0 + SB):
            sums = []
            for lane in range(32):
                j, part = b0 + 8 * (warp & 1) + (lane & 7), lane >> 3
                acc = 0.0
                if j < r:
                    if part == 0:
                        acc = m[r * MS + j]
                    for c in range(j + 1 + part, r, 4):
                        acc += m[r * MS + c] * xs[c * XS + j]
                sums.append(acc)
            # shfl_xor 8 then 16: every lane ends with the sum over its column's 4 parts
            sums = [sums[ln] + sums[ln ^ 8] for ln in range(32)]
            sums = [sums[ln] + sums[ln ^ 16] for ln in range(32)]
            for lane in range(32):
                j, part = b0 + 8 * (warp & 1) + (lane & 7), lane >> 3
                if j < r and part == 0:
                    xs[r * XS + j] = -sums[lane]
    # Block rows 1..3: T_j into M's upper triangle at block (j, i), then X_ij = -X_ii T_j.
    for i in range(1, C // SB):
        for e in range(i * SB * SB):
            j, rr, cc = e // (SB * SB), e // SB % SB, e % SB
            acc = 0.0
            for c in range(SB * j, SB * i):
                acc += m[(SB * i + rr) * MS + c] * xs[c * XS + SB * j + cc]
            m[(SB * j + rr) * MS + SB * i + cc] = acc
        for e in range(i * SB * SB):
            j, rr, cc = e // (SB * SB), e // SB % SB, e % SB
            acc = 0.0
            for c in range(rr + 1):
                acc += xs[(SB * i + rr) * XS + SB * i + c] * m[(SB * j + c) * MS + SB * i + cc]
            xs[(SB * i + rr) * XS + SB * j + cc] = -acc
    return [[xs[r * XS + c] for c in range(C)] for r in range(C)]


def forward_substitution(a):
    # (I + A) X = I column by column: X[r][j] = -(A[r][j] + sum_{j<s<r} A[r][s] X[s][j])
    x = [[1.0 if r == c else 0.0 for c in range(C)] for r in range(C)]
    for j in range(C):
        for r in range(j + 1, C):
            x[r][j] = -(a[r][j] + sum(a[r][s] * x[s][j] for s in range(j + 1, r)))
    return x


def test_blocked_solve_matches_forward_substitution():
    rng = random.Random(7)
    for scale in (0.05, 0.3):
        a = [[rng.gauss(0.0, scale) if s < r else 0.0 for s in range(C)] for r in range(C)]
        got, want = blocked_solve(a), forward_substitution(a)
        worst = max(abs(got[r][c] - want[r][c]) for r in range(C) for c in range(C))
        assert worst < 1e-9, f"scale {scale}: max difference {worst}"
        # X is unit lower triangular: every entry was written (no NaN), zeros above.
        assert all(got[r][c] == (1.0 if r == c else 0.0) for r in range(C) for c in range(r, C))
