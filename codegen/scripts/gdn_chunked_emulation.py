#!/usr/bin/env python3
# python3 codegen/scripts/gdn_chunked_emulation.py  (numpy, f64; ~1 min)
# Replays the index math of prefill_gdn_chunked_prep / _state / _output (tiles, smem and
# scratch layouts, the transposed-X solve, the padded last chunk, T = 1, Hv = 2*Hk and 3*Hk,
# a nonzero cached state, two consecutive prefill calls) against the recurrent gated delta rule.
import numpy as np

C, THREADS, ST_LANES, ST_THREADS, OCOLS = 64, 256, 16, 128, 32
WARPS = THREADS // 32
CPW = C // WARPS
PARTS = 32 // CPW
MS = next(m for m in range(C, C + 32) if (m + 1) % 32 == PARTS % 32)
TQ = C // 4
sig = lambda x: 1 / (1 + np.exp(-x))
sp = lambda x: np.log1p(np.exp(x))


def recurrent(qkv, bp, ap, alog, dtb, state, HK, HV, DK, DV):
    KEY = HK * DK
    T = qkv.shape[0]
    o = np.zeros((T, HV * DV))
    state = state.copy()
    for h in range(HV):
        kh = h // (HV // HK)
        S = state[h]
        for t in range(T):
            q = qkv[t, kh * DK:(kh + 1) * DK]; k = qkv[t, KEY + kh * DK:KEY + (kh + 1) * DK]
            v = qkv[t, 2 * KEY + h * DV:2 * KEY + (h + 1) * DV]
            q = q / np.sqrt(q @ q + 1e-6) / np.sqrt(DK); k = k / np.sqrt(k @ k + 1e-6)
            g = -np.exp(alog[h]) * sp(ap[t, h] + dtb[h]); be = sig(bp[t, h])
            S = np.exp(g) * S; u = be * (v - S.T @ k); S = S + np.outer(k, u); o[t, h * DV:(h + 1) * DV] = S.T @ q
        state[h] = S
    return o, state


def kernels(qkv, bp, ap, alog, dtb, state, HK, HV, DK, DV):
    """The three launches; state (flat, [HV][DK][DV]) is updated in place, returns o."""
    T = qkv.shape[0]
    KEY, VAL, CONV = HK * DK, HV * DV, 2 * HK * DK + HV * DV
    VPK = HV // HK
    NC = -(-T // C)
    # scratch, flat, sized for round_up(T, C) tokens like the runtime (NaN: reads of unwritten data show)
    Tp = NC * C
    u = np.full(Tp * HV * DV, np.nan); w = np.full(Tp * HV * DK, np.nan); kd = np.full(Tp * HV * DK, np.nan)
    qg = np.full(Tp * HV * DK, np.nan); p = np.full(Tp * HV * C, np.nan); gam_out = np.full(Tp * HV, np.nan)
    sc = np.full(Tp * HV * DK * DV // C, np.nan)
    qkvf = qkv.reshape(-1)
    o = np.full(T * VAL, np.nan)
    # ---- prep: grid (HV, NC)
    for h in range(HV):
        for c in range(NC):
            c0 = c * C; n = min(C, T - c0); kh = h // VPK; hc = c * HV + h
            KS = DK + 1
            Ks = np.full(C * KS, np.nan); M = np.full(C * MS, np.nan)
            gam = np.zeros(C); bet = np.zeros(C); qsc = np.zeros(C)
            na = -np.exp(alog[h])
            for r in range(C):
                if r < n:
                    row = qkvf[(c0 + r) * CONV:(c0 + r + 1) * CONV]
                    kv = row[KEY + kh * DK:KEY + kh * DK + DK]; qv = row[kh * DK:kh * DK + DK]
                    Ks[r * KS:r * KS + DK] = kv / np.sqrt(kv @ kv + 1e-6)
                    qsc[r] = 1 / np.sqrt(qv @ qv + 1e-6) / np.sqrt(DK)
                    bet[r] = sig(bp[c0 + r, h]); gam[r] = na * sp(ap[c0 + r, h] + dtb[h])
                else:
                    Ks[r * KS:r * KS + DK] = 0
            gam = np.cumsum(gam); gam_c = gam[C - 1]
            bek = bet * np.exp(gam)
            gam_out[hc * C:hc * C + C] = gam
            K2 = lambda r: Ks[r * KS:r * KS + DK]
            # 1. A tiles
            for it in range(TQ * TQ):
                tr, tc = it // TQ, it % TQ
                for i in range(4):
                    for j in range(4):
                        r, s = tr + TQ * i, tc + TQ * j
                        if s < r: M[r * MS + s] = bet[r] * (K2(tr + TQ * i) @ K2(tc + TQ * j)) * np.exp(gam[r] - gam[s])
            # 2. Kd, Qg rows
            for r in range(C):
                tail = np.exp(gam_c - gam[r]); qs = qsc[r] * np.exp(gam[r]) if r < n else 0.0
                qrow = qkvf[(c0 + (r if r < n else 0)) * CONV + kh * DK:][:DK]
                kd[(hc * C + r) * DK:][:DK] = K2(r) * tail
                qg[(hc * C + r) * DK:][:DK] = qrow * qs if r < n else 0.0
            # 3. solve: lanes (warp, lane) -> column j, part; X[r][j] stored at M[j][r]
            for r in range(1, C):
                new = {}
                for warp in range(WARPS):
                    sums = np.zeros(32)
                    for lane in range(32):
                        j = warp * CPW + lane % CPW; part = lane // CPW
                        sm = 0.0
                        if j < r:
                            if part == 0: sm = M[r * MS + j]
                            for s in range(j + 1 + part, r, PARTS): sm += M[r * MS + s] * M[j * MS + s]
                        sums[lane] = sm
                    off = CPW
                    while off < 32:  # butterfly over the lanes sharing a column
                        sums = sums + sums[np.arange(32) ^ off]; off <<= 1
                    for lane in range(32):
                        j = warp * CPW + lane % CPW; part = lane // CPW
                        if j < r and part == 0: new[j * MS + r] = -sums[lane]
                for k_, v_ in new.items(): M[k_] = v_  # (warp-local: reads above never touch these)

            def x_times(NQ, tr, src, stride, tc, scale):
                acc = np.zeros((4, 4)); s_end = min(n, tr + TQ * 3 + 1)
                for s in range(s_end):
                    a = [(M[s * MS + tr + TQ * i] if s < tr + TQ * i else (1.0 if s == tr + TQ * i else 0.0)) for i in range(4)]
                    b = [scale[s] * src(s * stride + tc + NQ * j) for j in range(4)]
                    acc += np.outer(a, b)
                return acc
            vbase = c0 * CONV + 2 * KEY + h * DV
            for it in range(TQ * (DV // 4)):
                tr, tc = it // (DV // 4), it % (DV // 4)
                acc = x_times(DV // 4, tr, lambda e: qkvf[vbase + e], CONV, tc, bet)
                for i in range(4):
                    for j in range(4): u[(hc * C + tr + TQ * i) * DV + tc + (DV // 4) * j] = acc[i, j]
            for it in range(TQ * (DK // 4)):
                tr, tc = it // (DK // 4), it % (DK // 4)
                acc = x_times(DK // 4, tr, lambda e: Ks[e], KS, tc, bek)
                for i in range(4):
                    for j in range(4): w[(hc * C + tr + TQ * i) * DK + tc + (DK // 4) * j] = acc[i, j]
            for it in range(TQ * TQ):
                tr, tc = it // TQ, it % TQ
                for i in range(4):
                    r = tr + TQ * i; qr = qkvf[(c0 + (r if r < n else 0)) * CONV + kh * DK:][:DK]
                    for j in range(4):
                        s = tc + TQ * j
                        p[(hc * C + r) * C + s] = qsc[r] * (qr @ K2(s)) * np.exp(gam[r] - gam[s]) if (s <= r and r < n) else 0.0
    # ---- state pass: HV*DV/ST_COLS blocks of ST_THREADS; ST_LANES lanes per column
    ST_COLS = ST_THREADS // ST_LANES; KPL = DK // ST_LANES
    kg = np.arange(ST_LANES)
    for blk in range(HV * DV // ST_COLS):
        for cl in range(ST_COLS):
            gc = blk * ST_COLS + cl; h, col = gc // DV, gc % DV
            keys = kg[:, None] + ST_LANES * np.arange(KPL)[None, :]  # [lane][i]
            st = h * DK * DV + col
            S = state[st + keys * DV]
            for c in range(NC):
                n = min(C, T - c * C); hc = c * HV + h
                sc[(hc * DV + col) * DK + keys] = S
                acc = np.zeros_like(S)
                for r in range(n):
                    part = (w[hc * C * DK + kg[:, None] + r * DK + ST_LANES * np.arange(KPL)[None, :]] * S).sum(1)
                    part[0] -= u[hc * C * DV + col + r * DV]
                    vn = -part.sum()
                    u[hc * C * DV + col + r * DV] = vn
                    acc += kd[hc * C * DK + kg[:, None] + r * DK + ST_LANES * np.arange(KPL)[None, :]] * vn
                S = np.exp(gam_out[hc * C + C - 1]) * S + acc
            state[st + keys * DV] = S
    # ---- output: grid (HV*DV/OCOLS, NC)
    OSL, OXC, OSS = DV // OCOLS, OCOLS // 2, OCOLS + 1
    for bx in range(HV * OSL):
        for c in range(NC):
            h, col0 = bx // OSL, (bx % OSL) * OCOLS
            c0 = c * C; n = min(C, T - c0); hc = c * HV + h
            Ss = np.full(DK * OSS, np.nan)
            for e in range(DK * OCOLS):
                key, col = e % DK, e // DK
                Ss[key * OSS + col] = sc[(hc * DV + col0) * DK + col * DK + key]
            for it in range(TQ * OXC):
                tr, tc = it // OXC, it % OXC
                acc = np.zeros((4, 2))
                for i in range(4):
                    qrow = qg[hc * C * DK + (tr + TQ * i) * DK:][:DK]
                    for j in range(2):
                        acc[i, j] = qrow @ Ss[np.arange(DK) * OSS + tc + OXC * j]
                s_end = min(n, tr + TQ * 3 + 1)
                for s in range(s_end):
                    a = [p[hc * C * C + (tr + TQ * i) * C + s] for i in range(4)]
                    b = [u[hc * C * DV + col0 + s * DV + tc + OXC * j] for j in range(2)]
                    acc += np.outer(a, b)
                for i in range(4):
                    r = tr + TQ * i
                    if r >= n: continue
                    for j in range(2): o[(c0 + r) * VAL + h * DV + col0 + tc + OXC * j] = acc[i, j]
    return o.reshape(T, VAL)


def case(HK, HV, DK, DV, Ts, seed):
    rng = np.random.default_rng(seed)
    KEY, VAL = HK * DK, HV * DV
    CONV = 2 * KEY + VAL
    Tall = sum(Ts)
    qkv = rng.standard_normal((Tall, CONV)); bp = rng.standard_normal((Tall, HV)); ap = rng.standard_normal((Tall, HV))
    alog = np.log(rng.uniform(1, 5, HV)); dtb = rng.standard_normal(HV)
    state0 = rng.standard_normal((HV, DK, DV))
    ref_o, ref_S = recurrent(qkv, bp, ap, alog, dtb, state0, HK, HV, DK, DV)
    state = state0.reshape(-1).copy(); outs = []; t0 = 0
    for T in Ts:  # consecutive prefill calls continue the state
        sl = slice(t0, t0 + T)
        outs.append(kernels(qkv[sl], bp[sl], ap[sl], alog, dtb, state, HK, HV, DK, DV)); t0 += T
    o = np.concatenate(outs)
    do = np.abs(o - ref_o).max(); ds = np.abs(state.reshape(HV, DK, DV) - ref_S).max()
    print(f"Hk={HK} Hv={HV} dk={DK} dv={DV} calls T={Ts}: o diff {do:.1e}, S diff {ds:.1e}, nan {int(np.isnan(o).sum())}")
    return max(do, ds)


worst = max([
    case(1, 2, 32, 64, [150], 1),
    case(1, 3, 32, 32, [1], 2),
    case(1, 3, 32, 32, [150, 1], 3),
    case(2, 4, 32, 32, [64, 70], 4),
    case(1, 1, 128, 128, [70], 5),
])
print("max difference", worst)
assert worst < 1e-9
