// Single-precision GEMM: the one matrix-multiply kernel every op and module goes through.
package dev.biflow.engine.kernels;

import java.util.Arrays;
import java.util.concurrent.atomic.AtomicInteger;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

/**
 * C = alpha * op(A) * op(B) + beta * C on row-major float arrays, op(X) = X or X^T.
 * op(A) is M x K, op(B) is K x N, C is M x N. lda/ldb/ldc are row strides of the arrays as
 * stored (so for transA, A is stored K x M with row stride lda >= M).
 *
 * <p>How it is fast (Goto/BLIS layout, vectors along the rows of C):
 * <ul>
 * <li>a KC x NC panel of op(B) is packed once into slivers NR = 2 vectors wide and shared by all
 *     threads (packed in parallel, read by all, never packed twice);</li>
 * <li>each thread packs alpha * op(A), one MR x KC sliver at a time, just before use: the sliver
 *     stays in L1 while the micro-kernel runs along that band of C, streaming the B panel. Its rows
 *     sit KC apart, so untransposed A packs with vector copies and the kernel's A loads have
 *     constant offsets;</li>
 * <li>the micro-kernel keeps an MR x NR tile of C in 2*MR vector accumulators for KC steps:
 *     12 x 2L where vectors are 512 bits wide (32 registers), 4 x 2L otherwise (AVX2 has 16;
 *     larger tiles there make C2 spill an accumulator every step);</li>
 * <li>large tall (M >= 2N) or very wide (N >= 2048) products with at least 256 columns per thread
 *     give each thread whole column blocks of C:
 *     it packs its own B panels (in its own L2) and runs the loop nest alone, one fork-join per
 *     GEMM (+20-30% at 2048^3, +2-30% on the 3136 x 512 x 128 layer, 2 threads, paired runs in
 *     one JVM, 3 JVMs each; neutral at 1024^3, see blocked); other products share each packed B panel, threads taking
 *     ranges of row slivers of C (column slivers when C has too few rows) from a shared counter.
 *     Every element is summed in the same order whichever thread computes it: same bits on 1 or N
 *     threads;</li>
 * <li>tiles that overhang M or N are computed into a scratch tile and merged; pack buffers are
 *     per thread and reused, so repeated small calls (attention heads) allocate nothing;</li>
 * <li>tiny products skip packing altogether.</li>
 * </ul>
 * beta == 0 overwrites C without reading it (NaN in C does not leak); alpha == 0 or K == 0 only
 * scales C and never reads A or B (BLAS semantics).
 *
 * <p>Measured on the dev host (2 vCPU Xeon, Cascade Lake, AVX-512: 150 GFLOP/s/core FMA peak
 * with 16-lane vectors, 85 with 8): kernel alone, packed operands, B panel from L2/L3: 12 x 2L
 * ~120 GFLOP/s, 8 x 2L ~110, 6 x 4L ~100; the inner loop is 24 FMAs, 14 loads and ~7 index ops,
 * no spills, no bounds checks (checked in the disassembly). Unrolling the k loop by two gained ~8%
 * but C1 then cannot compile the method ("out of virtual registers"), so it runs interpreted
 * until C2 is done: seconds of warm-up at 0.5 GFLOP/s; not worth it. The epilogue's one branch (read C
 * or not) may deoptimise the kernel once per JVM (unstable_if) when a path is first taken after C2
 * compiled it; zeroing or copying the bias into each tile so the kernel could always read C cost ~8%
 * on the transformer's K = 128 products, far more than that one recompilation.
 *
 * <p>Blocking can be overridden for experiments with -Dbiflow.gemm.mr (4 or 12) / .kc / .nc / .small /
 * .colchunks (column blocks per thread, 0: never split by columns) (read once at class load).
 */
public final class Gemm {
    private Gemm() {}

    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    /** Lanes per vector. */
    static final int L = S.length();
    /** Columns of the register tile: two vectors. */
    static final int NR = 2 * L;
    /**
     * Rows of the register tile on this machine: 12 (24 accumulators) where vectors are 512 bits,
     * which on x86 (AVX-512) and ARM (SVE) comes with 32 vector registers; else 4 (8 accumulators),
     * the largest tile that does not spill in AVX2's 16 registers.
     */
    static final int MR = Integer.getInteger("biflow.gemm.mr", L >= 16 ? 12 : 4) == 4 ? 4 : 12;
    /**
     * Depth of a packed panel: an MR x KC sliver of A sits in L1; fewer, longer passes over C. Also
     * the row stride of a packed A sliver, a constant so the kernel's A loads have fixed offsets.
     */
    static final int KC = Math.max(1, Integer.getInteger("biflow.gemm.kc", 256));
    /** Columns of B packed at a time: the shared KC x NC panel is streamed from L2. */
    static final int NC = roundUp(Math.max(NR, Integer.getInteger("biflow.gemm.nc", 1024)), NR);
    /**
     * m*n*k at or below which the unpacked loop is used: measured here, packing already wins at
     * 8 x 8 x 8 (it has ~1 us of fixed cost; the plain loop's cost grows much faster).
     */
    static final long SMALL = Long.getLong("biflow.gemm.small", 1024);
    /**
     * Minimum flops one thread should get before the work is split (~40 us of kernel time): waking
     * a pool thread costs ~10 us on an idle host and milliseconds on an oversubscribed one, where
     * splitting a 2-MFLOP attention GEMM in two made it 100x slower. Per-head attention GEMMs are
     * meant to be parallel across heads by the caller anyway (nested calls run serially).
     */
    private static final long MIN_FLOPS_PER_THREAD = 1L << 22;
    /** Column blocks per thread for large products (0: share each B panel between threads instead); see blocked. */
    static final int COL_CHUNKS = Math.max(0, Integer.getInteger("biflow.gemm.colchunks", 1));

    /**
     * C = alpha op(A) op(B) + beta C, then the epilogue (bias, GELU, gated residual: {@link GemmEpilogue}), the one
     * entry every GEMM of the engine goes through. Each epilogue is applied inside the GEMM rather than as a pass
     * over C after it: the bias becomes the start value beta C + bias, formed tile by tile in L1 just before the
     * micro-kernel adds the product (a serial pass left C cold in L3 by the time the kernel read it: ~30% of a
     * K = 128 layer's time); GELU and the (gated) residual are applied to each C tile while it is still in L1,
     * right after its last K panel. The bits are those of the passes: {@link #prefillBias}, the GEMM with beta = 1,
     * then {@link Gelu#forward} or {@link #gatedAdd} over C. beta == 0 never reads C.
     */
    public static void gemm(boolean transA, boolean transB, int m, int n, int k, float alpha,
                            float[] a, int aOff, int lda, float[] b, int bOff, int ldb,
                            float beta, float[] c, int cOff, int ldc, GemmEpilogue epi) {
        gemmWith(MR, true, transA, transB, m, n, k, alpha, a, aOff, lda, b, bOff, ldb, beta, c, cOff, ldc, epi);
    }

    /** Whether rows x n blocks of x (from xOff, rows lx apart) and c (from cOff, rows lc apart) share a float (one array, overlapping spans). */
    static boolean overlaps(float[] x, int xOff, int lx, int rows, float[] c, int cOff, int lc, int n) {
        if (x != c || rows == 0 || n == 0) return false;
        long xEnd = xOff + (long) (rows - 1) * lx + n, cEnd = cOff + (long) (rows - 1) * lc + n;
        return xOff < cEnd && cOff < xEnd;
    }

    /**
     * What is done to a finished tile of C while it is in L1, after its last K panel: the exact GELU in place,
     * and/or c = r + g * c (R rows ldr apart from rOff in C's coordinates; the gate optional, its row i / gRows
     * for C's row i). One record instead of a flag per epilogue: the tile-level form of a {@link GemmEpilogue}
     * (whose bias is not here: it is the GEMM's start value).
     */
    record TileEpilogue(boolean gelu, float[] r, int rOff, int ldr, float[] g, int gOff, int ldg, int gRows) {
        static final TileEpilogue NONE = new TileEpilogue(false, null, 0, 0, null, 0, 0, 1), GELU = new TileEpilogue(true, null, 0, 0, null, 0, 0, 1);

        boolean none() { return !gelu && r == null; }

        /** The same for the columns from j0 on of C (a column block computed as its own GEMM). */
        TileEpilogue shifted(int j0) {
            return r == null ? this : new TileEpilogue(gelu, r, rOff + j0, ldr, g, g == null ? gOff : gOff + j0, ldg, gRows);
        }

        /**
         * Applies it to the rows x n block of C at ci (row stride ldc) whose first element is C[i, j]. A block per
         * call, not a row: GELU's constants and loop set-up then cost once per tile (per 32-float row they cost
         * about half as much as the GELU itself).
         */
        void tile(float[] c, int ci, int ldc, int i, int j, int rows, int n) {
            if (gelu) Gelu.forwardRows(c, ci, ldc, rows, n);
            if (r == null) return;
            for (int row = 0; row < rows; row++) {
                int cr = ci + row * ldc, ri = rOff + (i + row) * ldr + j, q = 0;
                if (g == null) {
                    for (int end = S.loopBound(n); q < end; q += L)
                        FloatVector.fromArray(S, r, ri + q).add(FloatVector.fromArray(S, c, cr + q)).intoArray(c, cr + q);
                    for (; q < n; q++) c[cr + q] = r[ri + q] + c[cr + q];
                } else {
                    int gi = gOff + ((i + row) / gRows) * ldg + j;
                    for (int end = S.loopBound(n); q < end; q += L)
                        FloatVector.fromArray(S, r, ri + q).add(FloatVector.fromArray(S, g, gi + q).mul(FloatVector.fromArray(S, c, cr + q)))
                                .intoArray(c, cr + q);
                    for (; q < n; q++) c[cr + q] = r[ri + q] + g[gi + q] * c[cr + q];
                }
            }
        }
    }

    /** C[i, j] = beta C[i, j] + bias[j] (C not read when beta == 0): the start value a bias gives, as a pass. */
    static void prefillBias(int m, int n, float beta, float[] c, int cOff, int ldc, float[] bias, int biasOff) {
        for (int i = 0; i < m; i++) startRow(beta, c, cOff + i * ldc, bias, biasOff, n);
    }

    /**
     * C = R + G * C over an M x N block, the gated residual epilogue as a pass after a GEMM (a backend whose GEMM
     * cannot apply it per tile): R rows ldr apart from rOff; G null, or M / gRows rows of N, ldg apart from gOff,
     * row i / gRows scaling C's row i. The same roundings as the tile epilogue ({@code r + g * c}).
     */
    static void gatedAdd(int m, int n, float[] c, int cOff, int ldc, float[] r, int rOff, int ldr,
                                float[] g, int gOff, int ldg, int gRows) {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                float y = c[cOff + i * ldc + j];
                if (g != null) y = g[gOff + (i / gRows) * ldg + j] * y;
                c[cOff + i * ldc + j] = r[rOff + i * ldr + j] + y;
            }
    }

    /** One row of the start value: c[ci .. ci + n) = beta c + bias (one fma, or a copy when beta == 0). */
    private static void startRow(float beta, float[] c, int ci, float[] bias, int bo, int n) {
        if (beta == 0f) System.arraycopy(bias, bo, c, ci, n);
        else for (int j = 0; j < n; j++) c[ci + j] = Math.fma(beta, c[ci + j], bias[bo + j]);
    }

    /**
     * {@link #gemm} with the path chosen: tile height mr (4 or 12) and whether tiny products may skip packing.
     * Lets tests run both micro-kernels and the packed path at any size on any machine.
     */
    static void gemmWith(int mr, boolean allowSmall, boolean transA, boolean transB, int m, int n, int k,
                         float alpha, float[] a, int aOff, int lda, float[] b, int bOff, int ldb,
                         float beta, float[] c, int cOff, int ldc, GemmEpilogue epi) {
        if (epi == null) throw new IllegalArgumentException("gemm: the epilogue is null (use GemmEpilogue.NONE)");
        epi.check(m, n, c, cOff, ldc);
        TileEpilogue ep = switch (epi) {
            case GemmEpilogue.None _, GemmEpilogue.Bias _ -> TileEpilogue.NONE;
            case GemmEpilogue.Gelu _ -> TileEpilogue.GELU;
            case GemmEpilogue.GatedAdd(_, _, var r, var rOff, var ldr, var g, var gOff, var ldg, var gRows) ->
                    new TileEpilogue(false, r, rOff, ldr, g, gOff, ldg, g == null ? 1 : gRows);
        };
        run(mr, allowSmall, transA, transB, m, n, k, alpha, a, aOff, lda, b, bOff, ldb, beta, c, cOff, ldc, epi.bias(), epi.biasOff(), ep);
    }

    /** The GEMM with an optional bias as the start value (null: none) and the tile epilogue; epilogue checked. */
    private static void run(int mr, boolean allowSmall, boolean transA, boolean transB, int m, int n, int k,
                            float alpha, float[] a, int aOff, int lda, float[] b, int bOff, int ldb,
                            float beta, float[] c, int cOff, int ldc, float[] bias, int biasOff, TileEpilogue ep) {
        if (mr != 4 && mr != 12) throw new IllegalArgumentException("tile height must be 4 or 12, got " + mr);
        checkArgs(transA, transB, m, n, k, a, aOff, lda, b, bOff, ldb, c, cOff, ldc);
        if (m == 0 || n == 0) return;
        if (k == 0 || alpha == 0f || (allowSmall && (long) m * n * k <= SMALL)) {
            // no product, or a tiny one: form the start value in one pass, then it is plain beta = 1 arithmetic
            if (bias != null) {
                prefillBias(m, n, beta, c, cOff, ldc, bias, biasOff);
                beta = 1f;
            }
            if (k == 0 || alpha == 0f) scale(m, n, beta, c, cOff, ldc);
            else small(transA, transB, m, n, k, alpha, a, aOff, lda, b, bOff, ldb, beta, c, cOff, ldc);
            if (!ep.none()) ep.tile(c, cOff, ldc, 0, 0, m, n);
            return;
        }
        blocked(mr, transA, transB, m, n, k, alpha, a, aOff, lda, b, bOff, ldb, beta, c, cOff, ldc, bias, biasOff, ep);
    }

    // ---------------------------------------------------------------- argument checks

    private static void checkArgs(boolean transA, boolean transB, int m, int n, int k,
                                  float[] a, int aOff, int lda, float[] b, int bOff, int ldb,
                                  float[] c, int cOff, int ldc) {
        if (m < 0 || n < 0 || k < 0)
            throw new IllegalArgumentException("sizes must be >= 0, got m=" + m + " n=" + n + " k=" + k);
        // As stored: A is m x k (k x m when transposed), B is k x n (n x k when transposed).
        checkMatrix("a", "lda", a, aOff, lda, transA ? k : m, transA ? m : k);
        checkMatrix("b", "ldb", b, bOff, ldb, transB ? n : k, transB ? k : n);
        checkMatrix("c", "ldc", c, cOff, ldc, m, n);
    }

    static void checkMatrix(String name, String ldName, float[] x, int off, int ld, int rows, int cols) {
        if (x == null) throw new IllegalArgumentException(name + " is null");
        if (off < 0) throw new IllegalArgumentException(name + ": offset must be >= 0, got " + off);
        if (ld < cols)
            throw new IllegalArgumentException(ldName + " must be >= " + cols + " (the stored row length of "
                    + name + "), got " + ld);
        if (rows == 0 || cols == 0) return;
        long need = off + (long) (rows - 1) * ld + cols;
        if (need > x.length)
            throw new IllegalArgumentException(name + " is too short: " + rows + " x " + cols + " with " + ldName + "="
                    + ld + " at offset " + off + " needs " + need + " floats, array has " + x.length);
    }

    // ---------------------------------------------------------------- trivial cases

    /** C = beta * C, with beta == 0 writing zeros (NaN in C must not survive). */
    private static void scale(int m, int n, float beta, float[] c, int cOff, int ldc) {
        if (beta == 1f) return;
        for (int i = 0; i < m; i++) {
            int row = cOff + i * ldc;
            if (beta == 0f) Arrays.fill(c, row, row + n, 0f);
            else for (int j = 0; j < n; j++) c[row + j] *= beta;
        }
    }

    /**
     * Tiny products: no packing, no threads. Row i of C is built in place from alpha * row i of
     * op(A) (gathered once into scratch) times op(B): axpy over B's rows, or dot products with
     * B's rows when B is transposed.
     */
    private static void small(boolean transA, boolean transB, int m, int n, int k, float alpha,
                              float[] a, int aOff, int lda, float[] b, int bOff, int ldb,
                              float beta, float[] c, int cOff, int ldc) {
        float[] ar = Workspace.get().row(k);
        for (int i = 0; i < m; i++) {
            for (int p = 0; p < k; p++) ar[p] = alpha * (transA ? a[aOff + p * lda + i] : a[aOff + i * lda + p]);
            int row = cOff + i * ldc;
            if (transB) {
                for (int j = 0; j < n; j++) {
                    int br = bOff + j * ldb;
                    float s = 0f;
                    for (int p = 0; p < k; p++) s = Math.fma(ar[p], b[br + p], s);
                    c[row + j] = beta == 0f ? s : Math.fma(beta, c[row + j], s);
                }
            } else {
                if (beta == 0f) Arrays.fill(c, row, row + n, 0f);
                else if (beta != 1f) for (int j = 0; j < n; j++) c[row + j] *= beta;
                for (int p = 0; p < k; p++) {
                    float av = ar[p];
                    int br = bOff + p * ldb;
                    int j = 0;
                    if (n >= L) {
                        FloatVector va = FloatVector.broadcast(S, av);
                        for (; j <= n - L; j += L)
                            va.fma(FloatVector.fromArray(S, b, br + j), FloatVector.fromArray(S, c, row + j))
                              .intoArray(c, row + j);
                    }
                    for (; j < n; j++) c[row + j] = Math.fma(av, b[br + j], c[row + j]);
                }
            }
        }
    }

    // ---------------------------------------------------------------- the packed path

    private static void blocked(int mr, boolean transA, boolean transB, int m, int n, int k, float alpha,
                                float[] a, int aOff, int lda, float[] b, int bOff, int ldb,
                                float beta, float[] c, int cOff, int ldc, float[] bias, int biasOff, TileEpilogue ep) {
        int threads = Parallel.threads();
        int units = COL_CHUNKS * threads;
        // Only for tall products (a transformer layer: many token rows) and very wide ones: at 1024^3 the split
        // was neutral (median 1.02 over 6 paired JVMs, one at 0.84: static blocks cannot rebalance when the host
        // parks a thread), so square products below 2048 keep the shared panel and its dynamic row slivers.
        boolean split = m >= 2 * n || n >= 2048;
        if (split && units > 1 && n >= units * 8 * NR && 2.0 * m * n * k >= (double) threads * MIN_FLOPS_PER_THREAD && !Parallel.inside()) {
            // Column blocks per thread: each packs its own B panels (KC x n/units, in its own L2) and runs the whole
            // serial loop over them, so there is one fork-join per GEMM instead of two barriers per panel, and no
            // shared panel streamed from L3 by both cores. Bits as any split: each C element sums in the same order.
            int per = roundUp((n + units - 1) / units, NR);
            AtomicInteger next = new AtomicInteger();
            Parallel.forRange(threads, 1, (lo, hi) -> {
                for (int u = next.getAndIncrement(); u * per < n; u = next.getAndIncrement()) {
                    int j0 = u * per, nj = Math.min(per, n - j0);
                    panels(mr, transA, transB, m, nj, k, alpha, a, aOff, lda, b, transB ? bOff + j0 * ldb : bOff + j0, ldb,
                            beta, c, cOff + j0, ldc, bias, biasOff + j0, ep.shifted(j0), 1); // one thread, the whole loop nest
                }
            });
            return;
        }
        panels(mr, transA, transB, m, n, k, alpha, a, aOff, lda, b, bOff, ldb, beta, c, cOff, ldc, bias, biasOff, ep, threads);
    }

    /** The panel loop with the threads sharing each packed B panel (rows of C, or columns when rows are few). */
    private static void panels(int mr, boolean transA, boolean transB, int m, int n, int k, float alpha,
                               float[] a, int aOff, int lda, float[] b, int bOff, int ldb,
                               float beta, float[] c, int cOff, int ldc, float[] bias, int biasOff, TileEpilogue ep, int threads) {
        Workspace own = Workspace.get();
        int rowSlivers = (m + mr - 1) / mr;
        for (int jc = 0; jc < n; jc += NC) {
            int nc = Math.min(NC, n - jc);
            int colSlivers = (nc + NR - 1) / NR;
            for (int pc = 0; pc < k; pc += KC) {
                int kc = Math.min(KC, k - pc);
                float betaNow = pc == 0 ? beta : 1f;
                float[] biasNow = pc == 0 ? bias : null; // the start value is formed once, before the first panel
                TileEpilogue epNow = pc + kc >= k ? ep : TileEpilogue.NONE; // the epilogue once, after the last panel
                // Pack the shared panel of B, split across threads when it is big enough to pay.
                float[] bp = own.b(colSlivers * NR * kc);
                int jc0 = jc, pc0 = pc;
                int packGrain = Math.max(1, (int) ((1L << 16) / ((long) kc * NR)));
                shared(colSlivers, packGrain, threads, (lo, hi) -> {
                    for (int s = lo; s < hi; s++) packB(transB, b, bOff, ldb, pc0, kc, jc0 + s * NR, Math.min(NR, n - jc0 - s * NR), bp, s * NR * kc);
                });
                // Then compute: share rows of C among threads, or columns when there are few rows.
                long flopsPerRowSliver = 2L * mr * kc * nc;
                long flopsPerColSliver = 2L * m * kc * NR;
                if (rowSlivers >= 2 * threads || colSlivers < 2 * threads) {
                    int grain = (int) Math.max(1, Math.min(Integer.MAX_VALUE, MIN_FLOPS_PER_THREAD / flopsPerRowSliver));
                    shared(rowSlivers, grain, threads, (lo, hi) ->
                            macro(mr, transA, alpha, a, aOff, lda, pc0, kc, lo * mr, Math.min(m, hi * mr),
                                  bp, jc0, nc, 0, colSlivers, betaNow, c, cOff, ldc, biasNow, biasOff, epNow));
                } else {
                    int grain = (int) Math.max(1, Math.min(Integer.MAX_VALUE, MIN_FLOPS_PER_THREAD / flopsPerColSliver));
                    shared(colSlivers, grain, threads, (lo, hi) ->
                            macro(mr, transA, alpha, a, aOff, lda, pc0, kc, 0, m,
                                  bp, jc0, nc, lo, hi, betaNow, c, cOff, ldc, biasNow, biasOff, epNow));
                }
            }
        }
    }

    /**
     * Runs body over [0, units) on up to {@code threads} pool threads (only as many as have
     * {@code grain} units each), handing out small ranges from a shared counter instead of fixed
     * halves: a thread the OS parks for a while (a busy host) no longer holds up the others,
     * and the caller finishes the work if the pool is slow to wake. Which thread computes a range
     * does not change its bits, so results stay the same for any thread count.
     */
    private static void shared(int units, int grain, int threads, Parallel.RangeBody body) {
        int t = Math.min(threads, Math.max(1, units / grain));
        if (t <= 1) {
            body.run(0, units);
            return;
        }
        int step = Math.max(1, units / (8 * t));
        AtomicInteger next = new AtomicInteger();
        Parallel.forRange(t, 1, (lo, hi) -> {
            for (int u = next.getAndAdd(step); u < units; u = next.getAndAdd(step)) body.run(u, Math.min(units, u + step));
        });
    }

    /**
     * One thread's share of a (KC x NC) panel step: rows [i0, i1) of C against B slivers [s0, s1).
     * Each MR x KC sliver of A is packed just before use and stays in L1 while the kernel runs
     * along the row band of C, streaming the shared B panel from L2.
     */
    private static void macro(int mr, boolean transA, float alpha, float[] a, int aOff, int lda, int pc, int kc,
                              int i0, int i1, float[] bp, int jc, int nc, int s0, int s1,
                              float beta, float[] c, int cOff, int ldc, float[] bias, int biasOff, TileEpilogue ep) {
        Workspace ws = Workspace.get();
        float[] ap = ws.a(mr * KC);
        float[] tile = ws.tile;
        for (int i = i0; i < i1; i += mr) {
            int rows = Math.min(mr, i1 - i);
            packA(mr, transA, alpha, a, aOff, lda, i, rows, pc, kc, ap);
            int cRow = cOff + i * ldc + jc;
            for (int s = s0; s < s1; s++) {
                int j = s * NR;
                int cols = Math.min(NR, nc - j);
                int bi = s * NR * kc;
                int co = cRow + j;
                if (rows == mr && cols == NR) {
                    if (beta == 0f) {
                        // the start value is the bias or 0: the kernel adds it in registers and writes C without
                        // reading it (C may hold NaN; and no fill or copy of the tile first: ~8% at K = 128)
                        float[] st = bias == null ? ZEROS : bias;
                        int so = bias == null ? 0 : biasOff + jc + j;
                        if (mr == 12) kernel12x2(kc, ap, 0, bp, bi, c, co, ldc, ZEROS, 0, NR, 0f, st, so);
                        else kernel4x2(kc, ap, 0, bp, bi, c, co, ldc, ZEROS, 0, NR, 0f, st, so);
                    } else {
                        // C is read: with a bias the tile starts as beta C + bias, formed here while it is in L1
                        float kb = beta;
                        if (bias != null) {
                            for (int r = 0; r < mr; r++) startRow(beta, c, co + r * ldc, bias, biasOff + jc + j, NR);
                            kb = 1f;
                        }
                        if (mr == 12) kernel12x2(kc, ap, 0, bp, bi, c, co, ldc, c, co, ldc, kb, ZEROS, 0);
                        else kernel4x2(kc, ap, 0, bp, bi, c, co, ldc, c, co, ldc, kb, ZEROS, 0);
                    }
                    if (!ep.none()) ep.tile(c, co, ldc, i, jc + j, mr, NR); // the tile is in L1
                } else {
                    if (mr == 12) kernel12x2(kc, ap, 0, bp, bi, tile, 0, NR, ZEROS, 0, NR, 0f, ZEROS, 0);
                    else kernel4x2(kc, ap, 0, bp, bi, tile, 0, NR, ZEROS, 0, NR, 0f, ZEROS, 0);
                    if (bias != null) {
                        for (int r = 0; r < rows; r++) startRow(beta, c, co + r * ldc, bias, biasOff + jc + j, cols);
                        mergeTile(tile, rows, cols, c, co, ldc, 1f);
                    } else mergeTile(tile, rows, cols, c, co, ldc, beta);
                    if (!ep.none()) ep.tile(c, co, ldc, i, jc + j, rows, cols);
                }
            }
        }
    }

    /** C[0..rows, 0..cols) = tile + beta * C, rounded as the micro-kernel rounds it (one fma). */
    private static void mergeTile(float[] tile, int rows, int cols, float[] c, int co, int ldc, float beta) {
        for (int r = 0; r < rows; r++) {
            int t = r * NR, ci = co + r * ldc;
            if (beta == 0f) System.arraycopy(tile, t, c, ci, cols);
            else for (int j = 0; j < cols; j++) c[ci + j] = Math.fma(c[ci + j], beta, tile[t + j]);
        }
    }

    /**
     * Packs alpha * op(A)[i0..i0+rows, p0..p0+kc) (rows <= mr) as one sliver: row r at ap[r * KC],
     * kc floats; rows past the end are zero. Untransposed A is row copies (vector speed), which
     * keeps packing cheap when N is small and the sliver is used by few kernel calls (P V in
     * attention: N = head dim).
     */
    private static void packA(int mr, boolean transA, float alpha, float[] a, int aOff, int lda,
                              int i0, int rows, int p0, int kc, float[] ap) {
        if (!transA) {
            FloatVector va = FloatVector.broadcast(S, alpha);
            for (int r = 0; r < rows; r++) {
                int src = aOff + (i0 + r) * lda + p0, dst = r * KC, p = 0;
                for (; p <= kc - L; p += L) FloatVector.fromArray(S, a, src + p).mul(va).intoArray(ap, dst + p);
                for (; p < kc; p++) ap[dst + p] = alpha * a[src + p];
            }
        } else {
            for (int p = 0; p < kc; p++) {
                int src = aOff + (p0 + p) * lda + i0;
                for (int r = 0; r < rows; r++) ap[r * KC + p] = alpha * a[src + r];
            }
        }
        for (int r = rows; r < mr; r++) Arrays.fill(ap, r * KC, r * KC + kc, 0f);
    }

    /**
     * Packs op(B)[p0..p0+kc, j0..j0+cols) (cols <= NR) as one sliver at dst: for each step p, NR
     * consecutive floats (columns past the end are zero).
     */
    private static void packB(boolean transB, float[] b, int bOff, int ldb, int p0, int kc, int j0, int cols,
                              float[] bp, int dst) {
        if (!transB) {
            if (cols == NR) {
                for (int p = 0; p < kc; p++) {
                    int src = bOff + (p0 + p) * ldb + j0, d = dst + p * NR;
                    FloatVector.fromArray(S, b, src).intoArray(bp, d);
                    FloatVector.fromArray(S, b, src + L).intoArray(bp, d + L);
                }
            } else {
                for (int p = 0; p < kc; p++) {
                    int src = bOff + (p0 + p) * ldb + j0, d = dst + p * NR;
                    System.arraycopy(b, src, bp, d, cols);
                    Arrays.fill(bp, d + cols, d + NR, 0f);
                }
            }
        } else {
            for (int j = 0; j < cols; j++) {
                int src = bOff + (j0 + j) * ldb + p0;
                for (int p = 0; p < kc; p++) bp[dst + p * NR + j] = b[src + p];
            }
            if (cols < NR)
                for (int p = 0; p < kc; p++) Arrays.fill(bp, dst + p * NR + cols, dst + (p + 1) * NR, 0f);
        }
    }

    /** A zero tile (12 rows of NR, row stride NR): the kernels' X when C is not to be read, and their zero start row. */
    private static final float[] ZEROS = new float[12 * NR];

    static int roundUp(int x, int m) { return (x + m - 1) / m * m; }

    /** Per-thread pack buffers, grown on demand and kept: repeated calls allocate nothing. */
    private static final class Workspace {
        private static final ThreadLocal<Workspace> LOCAL = ThreadLocal.withInitial(Workspace::new);
        float[] a = new float[0], b = new float[0], row = new float[0];
        final float[] tile = new float[12 * NR];

        static Workspace get() { return LOCAL.get(); }

        float[] a(int size) { return a.length >= size ? a : (a = new float[size]); }
        float[] b(int size) { return b.length >= size ? b : (b = new float[size]); }
        float[] row(int size) { return row.length >= size ? row : (row = new float[size]); }
    }

    // ---------------------------------------------------------------- micro-kernels

    /**
     * C[0..12, 0..2L) (row stride ldc, at co) = A sliver * B sliver + beta * C, over kc steps. The A sliver
     * is 12 rows of kc floats, KC apart, from ai (a constant stride: the 12 broadcasts per step are plain
     * loads at fixed offsets from one index); the loop steps that index and B's as two induction variables
     * (one add each) rather than deriving both from p, which cost ~3 more integer ops a step and kept the
     * loop at the front end's 4 uops/cycle: ~8% more throughput for the kernel alone on L1-resident slivers,
     * ~1-2% for a whole GEMM (measured in one JVM, alternating). (Packing A step by step instead, so one
     * index serves both, gained 3% more in the kernel but lost 15-40% on the transformer's shapes, where
     * the transposing pack is not amortised.) The B sliver is 2L floats per step from bi. The tile
     * becomes beta X + (start + acc): X is C (x = c, xo = co, ldx = ldc) or {@link #ZEROS} (then C is only
     * written, never read: it may hold NaN), start a bias row or ZEROS. No branch: one written out for
     * "read C or not" made C2 recompile the kernel as each path was first taken and left the bidirectional
     * pass bimodal, 1.8 or 2.3 ms/img from one JVM to the next.
     * Written out in one method on purpose: a helper call pushes it over C2's inline limit and the vectors get boxed.
     */
    static void kernel12x2(int kc, float[] ap, int ai, float[] bp, int bi, float[] c, int co, int ldc,
                           float[] x, int xo, int ldx, float beta, float[] start, int so) {
        FloatVector c00 = FloatVector.zero(S), c01 = FloatVector.zero(S);
        FloatVector c10 = FloatVector.zero(S), c11 = FloatVector.zero(S);
        FloatVector c20 = FloatVector.zero(S), c21 = FloatVector.zero(S);
        FloatVector c30 = FloatVector.zero(S), c31 = FloatVector.zero(S);
        FloatVector c40 = FloatVector.zero(S), c41 = FloatVector.zero(S);
        FloatVector c50 = FloatVector.zero(S), c51 = FloatVector.zero(S);
        FloatVector c60 = FloatVector.zero(S), c61 = FloatVector.zero(S);
        FloatVector c70 = FloatVector.zero(S), c71 = FloatVector.zero(S);
        FloatVector c80 = FloatVector.zero(S), c81 = FloatVector.zero(S);
        FloatVector c90 = FloatVector.zero(S), c91 = FloatVector.zero(S);
        FloatVector c100 = FloatVector.zero(S), c101 = FloatVector.zero(S);
        FloatVector c110 = FloatVector.zero(S), c111 = FloatVector.zero(S);
        for (int pa = ai, pb = bi, end = ai + kc; pa < end; pa++, pb += 2 * L) {
            FloatVector b0 = FloatVector.fromArray(S, bp, pb);
            FloatVector b1 = FloatVector.fromArray(S, bp, pb + L);
            FloatVector a0 = FloatVector.broadcast(S, ap[pa]);
            c00 = a0.fma(b0, c00); c01 = a0.fma(b1, c01);
            FloatVector a1 = FloatVector.broadcast(S, ap[pa + KC]);
            c10 = a1.fma(b0, c10); c11 = a1.fma(b1, c11);
            FloatVector a2 = FloatVector.broadcast(S, ap[pa + 2 * KC]);
            c20 = a2.fma(b0, c20); c21 = a2.fma(b1, c21);
            FloatVector a3 = FloatVector.broadcast(S, ap[pa + 3 * KC]);
            c30 = a3.fma(b0, c30); c31 = a3.fma(b1, c31);
            FloatVector a4 = FloatVector.broadcast(S, ap[pa + 4 * KC]);
            c40 = a4.fma(b0, c40); c41 = a4.fma(b1, c41);
            FloatVector a5 = FloatVector.broadcast(S, ap[pa + 5 * KC]);
            c50 = a5.fma(b0, c50); c51 = a5.fma(b1, c51);
            FloatVector a6 = FloatVector.broadcast(S, ap[pa + 6 * KC]);
            c60 = a6.fma(b0, c60); c61 = a6.fma(b1, c61);
            FloatVector a7 = FloatVector.broadcast(S, ap[pa + 7 * KC]);
            c70 = a7.fma(b0, c70); c71 = a7.fma(b1, c71);
            FloatVector a8 = FloatVector.broadcast(S, ap[pa + 8 * KC]);
            c80 = a8.fma(b0, c80); c81 = a8.fma(b1, c81);
            FloatVector a9 = FloatVector.broadcast(S, ap[pa + 9 * KC]);
            c90 = a9.fma(b0, c90); c91 = a9.fma(b1, c91);
            FloatVector a10 = FloatVector.broadcast(S, ap[pa + 10 * KC]);
            c100 = a10.fma(b0, c100); c101 = a10.fma(b1, c101);
            FloatVector a11 = FloatVector.broadcast(S, ap[pa + 11 * KC]);
            c110 = a11.fma(b0, c110); c111 = a11.fma(b1, c111);
        }
        // C = beta X + (start + acc): X is C itself or zeros, start a bias row or zeros (see the contract above)
        FloatVector bt = FloatVector.broadcast(S, beta);
        FloatVector s0 = FloatVector.fromArray(S, start, so), s1 = FloatVector.fromArray(S, start, so + L);
        FloatVector.fromArray(S, x, xo).fma(bt, s0.add(c00)).intoArray(c, co);
        FloatVector.fromArray(S, x, xo + L).fma(bt, s1.add(c01)).intoArray(c, co + L);
        FloatVector.fromArray(S, x, xo + ldx).fma(bt, s0.add(c10)).intoArray(c, co + ldc);
        FloatVector.fromArray(S, x, xo + ldx + L).fma(bt, s1.add(c11)).intoArray(c, co + ldc + L);
        FloatVector.fromArray(S, x, xo + 2 * ldx).fma(bt, s0.add(c20)).intoArray(c, co + 2 * ldc);
        FloatVector.fromArray(S, x, xo + 2 * ldx + L).fma(bt, s1.add(c21)).intoArray(c, co + 2 * ldc + L);
        FloatVector.fromArray(S, x, xo + 3 * ldx).fma(bt, s0.add(c30)).intoArray(c, co + 3 * ldc);
        FloatVector.fromArray(S, x, xo + 3 * ldx + L).fma(bt, s1.add(c31)).intoArray(c, co + 3 * ldc + L);
        FloatVector.fromArray(S, x, xo + 4 * ldx).fma(bt, s0.add(c40)).intoArray(c, co + 4 * ldc);
        FloatVector.fromArray(S, x, xo + 4 * ldx + L).fma(bt, s1.add(c41)).intoArray(c, co + 4 * ldc + L);
        FloatVector.fromArray(S, x, xo + 5 * ldx).fma(bt, s0.add(c50)).intoArray(c, co + 5 * ldc);
        FloatVector.fromArray(S, x, xo + 5 * ldx + L).fma(bt, s1.add(c51)).intoArray(c, co + 5 * ldc + L);
        FloatVector.fromArray(S, x, xo + 6 * ldx).fma(bt, s0.add(c60)).intoArray(c, co + 6 * ldc);
        FloatVector.fromArray(S, x, xo + 6 * ldx + L).fma(bt, s1.add(c61)).intoArray(c, co + 6 * ldc + L);
        FloatVector.fromArray(S, x, xo + 7 * ldx).fma(bt, s0.add(c70)).intoArray(c, co + 7 * ldc);
        FloatVector.fromArray(S, x, xo + 7 * ldx + L).fma(bt, s1.add(c71)).intoArray(c, co + 7 * ldc + L);
        FloatVector.fromArray(S, x, xo + 8 * ldx).fma(bt, s0.add(c80)).intoArray(c, co + 8 * ldc);
        FloatVector.fromArray(S, x, xo + 8 * ldx + L).fma(bt, s1.add(c81)).intoArray(c, co + 8 * ldc + L);
        FloatVector.fromArray(S, x, xo + 9 * ldx).fma(bt, s0.add(c90)).intoArray(c, co + 9 * ldc);
        FloatVector.fromArray(S, x, xo + 9 * ldx + L).fma(bt, s1.add(c91)).intoArray(c, co + 9 * ldc + L);
        FloatVector.fromArray(S, x, xo + 10 * ldx).fma(bt, s0.add(c100)).intoArray(c, co + 10 * ldc);
        FloatVector.fromArray(S, x, xo + 10 * ldx + L).fma(bt, s1.add(c101)).intoArray(c, co + 10 * ldc + L);
        FloatVector.fromArray(S, x, xo + 11 * ldx).fma(bt, s0.add(c110)).intoArray(c, co + 11 * ldc);
        FloatVector.fromArray(S, x, xo + 11 * ldx + L).fma(bt, s1.add(c111)).intoArray(c, co + 11 * ldc + L);
    }

    /** The 4 x 2L tile: 8 accumulators. See {@link #kernel12x2} for the contract. */
    static void kernel4x2(int kc, float[] ap, int ai, float[] bp, int bi, float[] c, int co, int ldc,
                           float[] x, int xo, int ldx, float beta, float[] start, int so) {
        FloatVector c00 = FloatVector.zero(S), c01 = FloatVector.zero(S);
        FloatVector c10 = FloatVector.zero(S), c11 = FloatVector.zero(S);
        FloatVector c20 = FloatVector.zero(S), c21 = FloatVector.zero(S);
        FloatVector c30 = FloatVector.zero(S), c31 = FloatVector.zero(S);
        for (int pa = ai, pb = bi, end = ai + kc; pa < end; pa++, pb += 2 * L) {
            FloatVector b0 = FloatVector.fromArray(S, bp, pb);
            FloatVector b1 = FloatVector.fromArray(S, bp, pb + L);
            FloatVector a0 = FloatVector.broadcast(S, ap[pa]);
            c00 = a0.fma(b0, c00); c01 = a0.fma(b1, c01);
            FloatVector a1 = FloatVector.broadcast(S, ap[pa + KC]);
            c10 = a1.fma(b0, c10); c11 = a1.fma(b1, c11);
            FloatVector a2 = FloatVector.broadcast(S, ap[pa + 2 * KC]);
            c20 = a2.fma(b0, c20); c21 = a2.fma(b1, c21);
            FloatVector a3 = FloatVector.broadcast(S, ap[pa + 3 * KC]);
            c30 = a3.fma(b0, c30); c31 = a3.fma(b1, c31);
        }
        // C = beta X + (start + acc): X is C itself or zeros, start a bias row or zeros (see the contract above)
        FloatVector bt = FloatVector.broadcast(S, beta);
        FloatVector s0 = FloatVector.fromArray(S, start, so), s1 = FloatVector.fromArray(S, start, so + L);
        FloatVector.fromArray(S, x, xo).fma(bt, s0.add(c00)).intoArray(c, co);
        FloatVector.fromArray(S, x, xo + L).fma(bt, s1.add(c01)).intoArray(c, co + L);
        FloatVector.fromArray(S, x, xo + ldx).fma(bt, s0.add(c10)).intoArray(c, co + ldc);
        FloatVector.fromArray(S, x, xo + ldx + L).fma(bt, s1.add(c11)).intoArray(c, co + ldc + L);
        FloatVector.fromArray(S, x, xo + 2 * ldx).fma(bt, s0.add(c20)).intoArray(c, co + 2 * ldc);
        FloatVector.fromArray(S, x, xo + 2 * ldx + L).fma(bt, s1.add(c21)).intoArray(c, co + 2 * ldc + L);
        FloatVector.fromArray(S, x, xo + 3 * ldx).fma(bt, s0.add(c30)).intoArray(c, co + 3 * ldc);
        FloatVector.fromArray(S, x, xo + 3 * ldx + L).fma(bt, s1.add(c31)).intoArray(c, co + 3 * ldc + L);
    }
}
