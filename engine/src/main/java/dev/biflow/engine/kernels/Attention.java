// The CPU attention kernels: scores by blocked GEMMs, masked row softmax, the product with v, and the backward from P.
package dev.biflow.engine.kernels;

import dev.biflow.engine.Arena;

/**
 * Scaled dot-product attention on the CPU, out = softmax(scale * q k^T, masked) v, over operands in
 * any {@link Layout}: contiguous (B, H, T, d) tensors and the heads inside a fused qkv projection's
 * (B, T, 3 H d) output are both layouts, so attention reads either without a copy. Per (slice, block
 * of query rows) the scores are one GEMM, each row is masked and soft-maxed in place, and the output
 * is a second GEMM; causal blocks skip the key columns none of their rows can see. The backward
 * recomputes nothing: it reads the probabilities P the forward kept.
 *
 * <p>Rules (those of {@code Fused.attention}): causal query i sees key j when j <= i + Tk - Tq; the
 * mask (nullable, rank-4 shape broadcasting to (B, H, Tq, Tk)) blocks a key where it is 0; a query
 * that sees no key outputs zeros and passes no gradient.
 */
public final class Attention {
    private Attention() {}

    /** Query rows per block: causal attention skips the key columns no row of the block can see. */
    private static final int ATT_ROWS = 64;

    /** Work (elements touched) per parallel chunk below which a loop stays on one thread. */
    private static final int GRAIN = 1 << 14;

    /**
     * Where one head's rows sit in an array: slice (b, h) starts at base + b * perBatch + h * perHead and
     * its rows are rowStride apart.
     */
    public record Layout(int base, int perBatch, int perHead, int rowStride) {
        public int of(int b, int h) { return base + b * perBatch + h * perHead; }

        Layout move(int by) { return new Layout(base + by, perBatch, perHead, rowStride); }

        /** A contiguous (B, H, T, d) tensor. */
        public static Layout contiguous(int heads, int t, int d) { return new Layout(0, heads * t * d, t * d, d); }
    }

    /** The layouts of q, k, v and the output of one attention call. */
    public record Layouts(Layout q, Layout k, Layout v, Layout o) {
        /** q (B, H, Tq, Dh), k (B, H, Tk, Dh), v (B, H, Tk, Dv), out (B, H, Tq, Dv), each contiguous. */
        public static Layouts contiguous(int heads, int tq, int tk, int dh, int dv) {
            return new Layouts(Layout.contiguous(heads, tq, dh), Layout.contiguous(heads, tk, dh),
                    Layout.contiguous(heads, tk, dv), Layout.contiguous(heads, tq, dv));
        }

        /**
         * Self-attention straight from a fused qkv projection (B, T, 3 H Dh), q heads then k heads then v heads
         * along the last axis; the output (B, T, H Dh) with the heads merged.
         */
        public static Layouts packed(int heads, int t, int dh) {
            int d = heads * dh, w = 3 * d;
            return new Layouts(new Layout(0, t * w, dh, w), new Layout(d, t * w, dh, w), new Layout(2 * d, t * w, dh, w),
                    new Layout(0, t * d, dh, d));
        }

        /** The same layouts with q, k and v moved by inOff floats and the output by outOff (operands inside a larger array). */
        public Layouts shifted(int inOff, int outOff) {
            return new Layouts(q.move(inOff), k.move(inOff), v.move(inOff), o.move(outOff));
        }

        /** Whether these are {@link #contiguous} for these sizes. */
        public boolean isContiguous(int heads, int tq, int tk, int dh, int dv) {
            return equals(contiguous(heads, tq, tk, dh, dv));
        }
    }

    /**
     * The forward: writes out (rows that see no key stay as they are: zero them first unless every query sees a
     * key). Keeps and returns the probabilities P (B*H*Tq*Tk, from {@link Arena#floats}) when keepP, else
     * works in per-thread scratch and returns null.
     */
    public static float[] forward(float[] qd, float[] kd, float[] vd, float[] out, Layouts l, int nb, int nh,
                                  int tq, int tk, int dh, int dv, boolean causal, float[] mdat, int[] maskShape,
                                  float scale, boolean keepP) {
        final int[] mst = mdat == null ? null : maskStrides(maskShape, new int[]{nb, nh, tq, tk});
        int bh = nb * nh;
        long tt = (long) tq * tk;
        if (keepP && bh * tt > Integer.MAX_VALUE - 8)
            throw new IllegalArgumentException("attention: the probability matrix (B*H*Tq*Tk = " + (bh * tt)
                    + ") does not fit one array; use smaller batches");
        float[] p = keepP ? Arena.floats((int) (bh * tt)) : null;
        int shift = tk - tq;
        int rowsPerBlock = causal ? ATT_ROWS : Math.max(1, tq);
        int ldq = l.q().rowStride(), ldk = l.k().rowStride(), ldv = l.v().rowStride(), ldo = l.o().rowStride();
        // Few large slices: run them one after another and let GEMM and the row loops use the threads.
        boolean outerParallel = bh >= Parallel.threads() || tt * Math.max(dh, dv) < (1L << 16);
        Parallel.RangeBody fwd = (lo, hi) -> {
            float[] scratch = keepP ? null : Arena.floats(Math.min(rowsPerBlock, tq) * tk);
            for (int s = lo; s < hi; s++) {
                int b = s / nh, h = s % nh;
                int qOff = l.q().of(b, h), kOff = l.k().of(b, h), vOff = l.v().of(b, h), oOff = l.o().of(b, h);
                for (int r0 = 0; r0 < tq; r0 += rowsPerBlock) {
                    int r1 = Math.min(tq, r0 + rowsPerBlock), m = r1 - r0;
                    int lm = causal ? clamp(r1 - 1 + shift + 1, 0, tk) : tk; // keys any row of the block sees
                    if (lm == 0) continue; // output rows stay 0
                    float[] sc = keepP ? p : scratch;
                    int sOff = keepP ? (int) (s * tt) + r0 * tk : 0;
                    Gemm.gemm(false, true, m, lm, dh, scale, qd, qOff + r0 * ldq, ldq, kd, kOff, ldk, 0f, sc, sOff, tk, GemmEpilogue.NONE);
                    int rr0 = r0;
                    Parallel.forRange(m, grain(lm), (a, z) -> {
                        for (int i = a; i < z; i++) {
                            int row = rr0 + i;
                            int lim = causal ? clamp(row + shift + 1, 0, tk) : tk;
                            int ro = sOff + i * tk;
                            if (mdat != null) {
                                int mo = b * mst[0] + h * mst[1] + row * mst[2], m3 = mst[3];
                                for (int j = 0; j < lim; j++)
                                    if (mdat[mo + j * m3] == 0f) sc[ro + j] = Float.NEGATIVE_INFINITY;
                            }
                            Softmax.softmaxRowInPlace(sc, ro, lm, lim);
                        }
                    });
                    Gemm.gemm(false, false, m, dv, lm, 1f, sc, sOff, tk, vd, vOff, ldv, 0f, out, oOff + r0 * ldo, ldo, GemmEpilogue.NONE);
                }
            }
        };
        if (outerParallel) Parallel.forRange(bh, 1, fwd);
        else fwd.run(0, bh);
        return p;
    }

    /**
     * The backward of {@link #forward} from its saved P: ADDS dL/dq, dL/dk, dL/dv (each nullable: not wanted)
     * into gq, gk, gv in the layouts of q, k and v; g (dL/dout) is read in the output's layout.
     */
    public static void backward(float[] p, float[] g, float[] qd, float[] kd, float[] vd, float[] gq, float[] gk, float[] gv,
                                Layouts l, int nb, int nh, int tq, int tk, int dh, int dv, boolean causal, float scale) {
        if (p == null || p.length != nb * nh * tq * tk)
            throw new IllegalArgumentException("attentionBackward: saved is not the P of a CPU attentionForward of these sizes");
        int bh = nb * nh;
        long tt = (long) tq * tk;
        int shift = tk - tq;
        int rowsPerBlock = causal ? ATT_ROWS : Math.max(1, tq);
        int ldq = l.q().rowStride(), ldk = l.k().rowStride(), ldv = l.v().rowStride(), ldo = l.o().rowStride();
        boolean outerParallel = bh >= Parallel.threads() || tt * Math.max(dh, dv) < (1L << 16);
        boolean needS = gq != null || gk != null;
        Parallel.RangeBody bwd = (lo, hi) -> {
            float[] dp = needS ? Arena.floats(Math.min(rowsPerBlock, tq) * tk) : null;
            for (int s = lo; s < hi; s++) {
                int b = s / nh, h = s % nh;
                int qOff = l.q().of(b, h), kOff = l.k().of(b, h), vOff = l.v().of(b, h), oOff = l.o().of(b, h);
                for (int r0 = 0; r0 < tq; r0 += rowsPerBlock) {
                    int r1 = Math.min(tq, r0 + rowsPerBlock), m = r1 - r0;
                    int lm = causal ? clamp(r1 - 1 + shift + 1, 0, tk) : tk;
                    if (lm == 0) continue;
                    int pOff = (int) (s * tt) + r0 * tk;
                    // dV += P^T dO
                    if (gv != null) Gemm.gemm(true, false, lm, dv, m, 1f, p, pOff, tk, g, oOff + r0 * ldo, ldo, 1f, gv, vOff, ldv, GemmEpilogue.NONE);
                    if (!needS) continue;
                    // dP = dO V^T, then dS = P (dP - rowdot(dP, P)) in place
                    Gemm.gemm(false, true, m, lm, dv, 1f, g, oOff + r0 * ldo, ldo, vd, vOff, ldv, 0f, dp, 0, lm, GemmEpilogue.NONE);
                    Parallel.forRange(m, grain(lm), (a, z) -> {
                        for (int i = a; i < z; i++) Softmax.softmaxBackwardRowInPlace(p, pOff + i * tk, dp, i * lm, lm);
                    });
                    // S = scale q k^T: dQ += scale dS K, dK += scale dS^T Q
                    if (gq != null) Gemm.gemm(false, false, m, dh, lm, scale, dp, 0, lm, kd, kOff, ldk, 1f, gq, qOff + r0 * ldq, ldq, GemmEpilogue.NONE);
                    if (gk != null) Gemm.gemm(true, false, lm, dh, m, scale, dp, 0, lm, qd, qOff + r0 * ldq, ldq, 1f, gk, kOff, ldk, GemmEpilogue.NONE);
                }
            }
        };
        if (outerParallel) Parallel.forRange(bh, 1, bwd);
        else bwd.run(0, bh);
    }

    /** Broadcast strides of a rank-4 mask shape against full (B, H, Tq, Tk): 0 along size-1 axes; checks that it broadcasts. */
    public static int[] maskStrides(int[] shape, int[] full) {
        boolean ok = shape != null && shape.length == 4;
        for (int i = 0; ok && i < 4; i++) ok = shape[i] == full[i] || shape[i] == 1;
        if (!ok)
            throw new IllegalArgumentException("attention: maskShape " + (shape == null ? "null" : java.util.Arrays.toString(shape))
                    + " must be rank 4 and broadcast to the scores " + java.util.Arrays.toString(full) + " (B|1, H|1, Tq|1, Tk|1)");
        int[] st = new int[4];
        for (int i = 3, s = 1; i >= 0; s *= shape[i], i--) st[i] = shape[i] == 1 ? 0 : s;
        return st;
    }

    private static int clamp(int v, int lo, int hi) { return Math.max(lo, Math.min(hi, v)); }

    private static int grain(long perItem) { return (int) Math.max(1, GRAIN / Math.max(1, perItem)); }
}
