// Inference attention for short sequences: one (batch, head) slice with no packing, K transposed once, four query rows at a time.
package dev.biflow.engine.kernels;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

/**
 * softmax(scale q k^T [causal | mask]) v for one (batch, head) slice when no probabilities need
 * to be kept (no gradient): the flows' sampling passes, where T is 49 or 196 and the head 32
 * wide. Going through the packed GEMM twice per slice cost more in packing and edge tiles (49 =
 * 4 x 12 + 1 rows) than in arithmetic. Here K is transposed once into a lane-padded scratch
 * (Dh x Tk'), so the scores of four query rows against L keys are four vector accumulators fed by
 * broadcasts of q; then P V accumulates four output rows at a time over the keys. Every slice
 * is computed by one thread in a fixed order: the same bits for any thread count.
 */
public final class SmallAttention {
    private SmallAttention() {}

    private static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    private static final int L = S.length();
    /** Query rows per step. */
    private static final int R = 4;

    /** Longest key sequence and widest head this kernel takes (its scratch is Dh x Tk' + R x Tk'). */
    public static boolean fits(int tk, int dh) { return tk <= 1024 && dh <= 256; }

    /** Floats of scratch {@link #slice} needs. */
    public static int scratchSize(int tk, int dh) {
        int tkp = roundUp(tk);
        return dh * tkp + R * tkp;
    }

    /** Blocks keys: for query row {@code row}, key j is blocked when this says false. */
    @FunctionalInterface
    public interface Mask { boolean allows(int row, int key); }

    /**
     * One slice: q (tq x dh) at qOff, k (tk x dh) at kOff, v (tk x dv) at vOff, out (tq x dv) at
     * oOff, all row-major. Causal rows see keys [0, row + tk - tq]; a row that sees no key gets
     * zeros. mask may be null.
     */
    public static void slice(float[] q, int qOff, float[] k, int kOff, float[] v, int vOff, float[] out, int oOff,
                             int tq, int tk, int dh, int dv, float scale, boolean causal, Mask mask, float[] scratch) {
        int tkp = roundUp(tk);
        int sBase = dh * tkp;
        // K^T, zero-padded to whole vectors of keys
        for (int d = 0; d < dh; d++) {
            int row = d * tkp;
            for (int j = 0; j < tk; j++) scratch[row + j] = k[kOff + j * dh + d];
            for (int j = tk; j < tkp; j++) scratch[row + j] = 0f;
        }
        int shift = tk - tq;
        for (int i0 = 0; i0 < tq; i0 += R) {
            int rows = Math.min(R, tq - i0);
            // scores: s[r][j] = scale * sum_d q[i0 + r][d] k[j][d], four rows per pass over K^T
            int q0 = qOff + i0 * dh, q1 = qOff + (i0 + Math.min(1, rows - 1)) * dh,
                q2 = qOff + (i0 + Math.min(2, rows - 1)) * dh, q3 = qOff + (i0 + Math.min(3, rows - 1)) * dh;
            for (int c = 0; c < tkp; c += L) {
                FloatVector a0 = FloatVector.zero(S), a1 = a0, a2 = a0, a3 = a0;
                for (int d = 0; d < dh; d++) {
                    FloatVector kv = FloatVector.fromArray(S, scratch, d * tkp + c);
                    a0 = kv.fma(FloatVector.broadcast(S, q[q0 + d]), a0);
                    a1 = kv.fma(FloatVector.broadcast(S, q[q1 + d]), a1);
                    a2 = kv.fma(FloatVector.broadcast(S, q[q2 + d]), a2);
                    a3 = kv.fma(FloatVector.broadcast(S, q[q3 + d]), a3);
                }
                a0.mul(scale).intoArray(scratch, sBase + c);
                a1.mul(scale).intoArray(scratch, sBase + tkp + c);
                a2.mul(scale).intoArray(scratch, sBase + 2 * tkp + c);
                a3.mul(scale).intoArray(scratch, sBase + 3 * tkp + c);
            }
            int maxLim = 0;
            for (int r = 0; r < rows; r++) {
                int row = i0 + r, so = sBase + r * tkp;
                int lim = causal ? Math.max(0, Math.min(tk, row + shift + 1)) : tk;
                if (mask != null)
                    for (int j = 0; j < lim; j++) if (!mask.allows(row, j)) scratch[so + j] = Float.NEGATIVE_INFINITY;
                Softmax.softmaxRowInPlace(scratch, so, tk, lim); // zeros past lim, a zero row when nothing is seen
                maxLim = Math.max(maxLim, lim);
            }
            for (int r = rows; r < R; r++) java.util.Arrays.fill(scratch, sBase + r * tkp, sBase + r * tkp + tk, 0f);
            // out rows = P V over the keys any of the four rows sees (the others have p = 0)
            int c = 0;
            for (; c <= dv - L; c += L) {
                FloatVector o0 = FloatVector.zero(S), o1 = o0, o2 = o0, o3 = o0;
                for (int j = 0; j < maxLim; j++) {
                    FloatVector vv = FloatVector.fromArray(S, v, vOff + j * dv + c);
                    o0 = vv.fma(FloatVector.broadcast(S, scratch[sBase + j]), o0);
                    o1 = vv.fma(FloatVector.broadcast(S, scratch[sBase + tkp + j]), o1);
                    o2 = vv.fma(FloatVector.broadcast(S, scratch[sBase + 2 * tkp + j]), o2);
                    o3 = vv.fma(FloatVector.broadcast(S, scratch[sBase + 3 * tkp + j]), o3);
                }
                o0.intoArray(out, oOff + i0 * dv + c);
                if (rows > 1) o1.intoArray(out, oOff + (i0 + 1) * dv + c);
                if (rows > 2) o2.intoArray(out, oOff + (i0 + 2) * dv + c);
                if (rows > 3) o3.intoArray(out, oOff + (i0 + 3) * dv + c);
            }
            for (; c < dv; c++) // columns past the last whole vector, same order of summation per element
                for (int r = 0; r < rows; r++) {
                    float acc = 0f;
                    for (int j = 0; j < maxLim; j++) acc = Math.fma(scratch[sBase + r * tkp + j], v[vOff + j * dv + c], acc);
                    out[oOff + (i0 + r) * dv + c] = acc;
                }
        }
    }

    private static int roundUp(int n) { return (n + L - 1) / L * L; }
}
