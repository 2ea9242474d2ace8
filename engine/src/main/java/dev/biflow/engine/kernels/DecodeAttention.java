// One query's attention over a decode cache (keys stored transposed): the kernel of KVCache.attend and of the plan's DecodeAttention op.
package dev.biflow.engine.kernels;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

/**
 * softmax(scale q k^T) v for one query over n cached keys, keys stored transposed (kT[kOff + c * ldk + j] is component
 * c of key j) so a query is scored against L keys at once with Dh vector FMAs and no horizontal sums, values row-major
 * (v[vOff + j * d + c]). Shared by {@code nn.KVCache.attend} (the KV-cached decode of TarFlow.reverse's reference
 * form) and the inference plan's {@code PlanOp.DecodeAttention} (CpuExecutor), so both give the same bits.
 */
public final class DecodeAttention {
    private DecodeAttention() {}

    private static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;

    /**
     * out[oOff .. oOff + d) += softmax over the keys 0..n-1 of scale (q . k_j), times v_j; out must hold zeros there on
     * entry (the weighted values are accumulated with axpy). p is scratch of at least n floats.
     */
    public static void row(float[] q, int qOff, float[] kT, int kOff, int ldk, float[] v, int vOff, int d, int n, float scale,
                           float[] p, float[] out, int oOff) {
        scores(q, qOff, kT, kOff, ldk, d, n, scale, p);
        float max = p[0];
        for (int j = 1; j < n; j++) max = Math.max(max, p[j]);
        float inv = 1f / Softmax.expShift(p, 0, p, 0, n, max);
        for (int j = 0; j < n; j++) Vec.axpy(p[j] * inv, v, vOff + j * d, out, oOff, d);
    }

    /**
     * p[j] = scale * (q . k_j) for the keys j < n, keys stored transposed (kT[kOff + dd * ld + j]): L keys per
     * vector, one FMA per head dimension, summed over dd in order; a key in the scalar tail gets the same
     * fma chain, so its bits do not depend on where the vector part ended.
     */
    private static void scores(float[] q, int qOff, float[] kT, int kOff, int ld, int d, int n, float scale, float[] p) {
        int j = 0;
        for (int end = S.loopBound(n); j < end; j += S.length()) {
            FloatVector acc = FloatVector.zero(S);
            for (int dd = 0; dd < d; dd++)
                acc = FloatVector.broadcast(S, q[qOff + dd]).fma(FloatVector.fromArray(S, kT, kOff + dd * ld + j), acc);
            acc.mul(scale).intoArray(p, j);
        }
        for (; j < n; j++) {
            float acc = 0f;
            for (int dd = 0; dd < d; dd++) acc = Math.fma(q[qOff + dd], kT[kOff + dd * ld + j], acc);
            p[j] = acc * scale;
        }
    }
}
