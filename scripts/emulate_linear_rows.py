#!/usr/bin/env python3
"""Emulates templates/linear_rows.cu lane by lane, in float64 with numpy (no GPU):

    python3 scripts/emulate_linear_rows.py

the cp.async map that stages x in shared memory, the stages' buffers, each lane's fragment
reads, `mma.sync m16n8k16` by the PTX fragment layout (A rows g and g+8, k slots 2t, 2t+1,
2t+8, 2t+9; B columns g), the permuted k order that lets one 16-byte weight load feed two
steps, the parked partial tiles and the cluster's sum in rank order. Checks the result equals
x @ W.T (the planes summed) for shapes with row, feature and k tails, 1 to 8 warps along k,
1 to 7 cluster splits (any size, not only powers of two), one or two planes, two or three stages (docs/KERNELS.md "linear_rows").
Run it after changing the kernel's index math, before spending GPU time on it.
"""
import numpy as np
def mma(acc, fa, b0, b1):
    # fa[lane] = 4 regs of 2 values; A[16][16]: a0 (g, 2t..2t+1), a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..)
    A = np.zeros((16,16)); B = np.zeros((16,8))
    for lane in range(32):
        g, t = lane >> 2, lane & 3
        a = fa[lane]
        A[g, 2*t:2*t+2] = a[0]; A[g+8, 2*t:2*t+2] = a[1]; A[g, 2*t+8:2*t+10] = a[2]; A[g+8, 2*t+8:2*t+10] = a[3]
        B[2*t:2*t+2, g] = b0[lane]; B[2*t+8:2*t+10, g] = b1[lane]
    C = A @ B
    for lane in range(32):
        g, t = lane >> 2, lane & 3
        acc[lane][0:2] += C[g, 2*t:2*t+2]; acc[lane][2:4] += C[g+8, 2*t:2*t+2]
def run(N, K, rows, WN, S, PL, XST, NTW=4, BLOCK=256):
    WK = 8 // WN; BNB = WN*NTW*8; KC = (K+31)//32; KCS = (KC+S-1)//S; RSTR = BNB+4; XCH = PL*64*32
    rng = np.random.default_rng(N*K+rows)
    X = rng.standard_normal((rows, PL*K)).astype(np.float64); W = rng.standard_normal((N, K))
    xs_stride = PL*K + 8  # x_stride >= PL*K
    tiles = (N + BNB - 1)//BNB
    out = np.full((rows, N), np.nan)
    for my in range((rows+63)//64):
        m0 = my*64; mrows = min(64, rows-m0); mt_n = (mrows+15)//16
        for tb in range(tiles):
            reds = []
            for rank in range(S):
                tile = tb*S + rank
                c0e = rank*KCS; c1e = min(KC, c0e+KCS)
                nst = (c1e - c0e + WK - 1)//WK
                xs = np.full(XST*WK*XCH, np.nan)
                def stage_x(st):
                    if st >= nst: return
                    base = (st % XST)*WK*XCH
                    for tid in range(BLOCK):
                        for it in range(WK*PL*256//BLOCK):
                            e = tid + it*BLOCK
                            q, r, p, w = e & 3, (e >> 2) & 63, (e >> 8) % PL, (e >> 8)//PL
                            if r >= mrows: continue
                            cc = c0e + st*WK + w; kk = cc*32 + 8*q
                            ok = cc < c1e and kk < K
                            d = base + w*XCH + (p*64 + r)*32 + 8*q
                            xs[d:d+8] = X[m0+r, p*K+kk:p*K+kk+8] if ok else 0.0
                acc = {}  # (warp) -> [4][NTW][32 lanes][4]
                for warp in range(8): acc[warp] = np.zeros((4, NTW, 32, 4))
                for st in range(XST-1): stage_x(st)
                for st in range(nst):
                    stage_x(st + XST - 1)  # emulated after the barrier; buffer of st-1
                    for warp in range(8):
                        wn, wk = warp % WN, warp // WN
                        c = c0e + st*WK + wk
                        if c >= c1e: continue
                        n0 = tb*BNB + wn*NTW*8
                        xw = ((st % XST)*WK + wk)*XCH
                        for i in range(4):
                            if i >= mt_n: break
                            for p in range(PL):
                                fa_, fb_ = [], []
                                for lane in range(32):
                                    g, t = lane >> 2, lane & 3
                                    r0, r1 = 16*i+g, 16*i+g+8
                                    a0 = xs[xw + (p*64+r0)*32 + 8*t: xw + (p*64+r0)*32 + 8*t + 8] if r0 < mrows else np.zeros(8)
                                    a1 = xs[xw + (p*64+r1)*32 + 8*t: xw + (p*64+r1)*32 + 8*t + 8] if r1 < mrows else np.zeros(8)
                                    assert not np.isnan(a0).any() and not np.isnan(a1).any(), "read an unstaged x"
                                    fa_.append([a0[0:2], a1[0:2], a0[2:4], a1[2:4]]); fb_.append([a0[4:6], a1[4:6], a0[6:8], a1[6:8]])
                                for j in range(NTW):
                                    wv = []
                                    for lane in range(32):
                                        g, t = lane >> 2, lane & 3
                                        n = n0 + 8*j + g; nn = n if n < N else 0
                                        k0 = c*32 + 8*t
                                        wv.append(W[nn, k0:k0+8] if k0 < K else np.zeros(8))
                                    mma(acc[warp][i][j], fa_, [w_[0:2] for w_ in wv], [w_[2:4] for w_ in wv])
                                    mma(acc[warp][i][j], fb_, [w_[4:6] for w_ in wv], [w_[6:8] for w_ in wv])
                red = np.zeros((WK, 64, RSTR))
                for warp in range(8):
                    wn, wk = warp % WN, warp // WN
                    for i in range(mt_n):
                        for h in range(2):
                            for j in range(NTW):
                                for lane in range(32):
                                    g, t = lane >> 2, lane & 3
                                    col = wn*NTW*8 + 8*j + 2*t
                                    red[wk, 16*i+g+8*h, col:col+2] = acc[warp][i][j][lane][2*h:2*h+2]
                reds.append(red)
            CPB = (BNB//4 + S - 1)//S*4
            for rank in range(S):
                mine_c = max(0, min(CPB, BNB - rank*CPB))
                for e in range(mrows*(mine_c//4)):
                    r, cc = e // (mine_c//4), rank*CPB + (e % (mine_c//4))*4
                    ssum = np.zeros(4)
                    for q in range(S):
                        for w in range(WK): ssum += reds[q][w, r, cc:cc+4]
                    for q in range(4):
                        n = tb*BNB + cc + q
                        if n < N: out[m0+r, n] = ssum[q]
    ref = sum(X[:, p*K:(p+1)*K] for p in range(PL)) @ W.T
    err = np.abs(out - ref).max()
    print(f"N={N} K={K} rows={rows} WN={WN} S={S} PL={PL} XST={XST}: max err {err:.2e}")
    assert err < 1e-9
run(40, 104, 5, 1, 1, 2, 3)
run(72, 200, 19, 2, 2, 1, 2)
run(64, 256, 64, 8, 4, 2, 3)
run(33, 96, 1, 4, 1, 1, 3)
run(128, 520, 37, 4, 2, 2, 2)
run(40, 800, 9, 1, 3, 1, 2)
run(260, 1000, 17, 8, 7, 1, 3)
run(40, 128, 6, 4, 3, 2, 2)
