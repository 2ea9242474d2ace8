// Fused attention backward (dq, dk, dv) from the forward's per-row log-sum-exp, as one Aparapi kernel with two modes.
package dev.biflow.gpu;

import com.aparapi.Kernel;

/**
 * The backward of {@link AttentionKernel}'s ATTEND for q (S, Tq, Dh), k (S, Tk, Dh), v (S, Tk, Dv),
 * S = B*H slices, given dout (S, Tq, Dv) and lse (S, Tq), the forward's log-sum-exp per query row.
 * With s_ij = scale q_i . k_j, p_ij = exp(s_ij - lse_i) and dp_ij = dout_i . v_j over the allowed
 * keys (the forward's causal / mask rule):
 * <pre>
 *   delta_i = sum_j p_ij dp_ij                      (= dout_i . out_i)
 *   dq_i    = scale sum_j p_ij (dp_ij - delta_i) k_j
 *   dk_j    = scale sum_i p_ij (dp_ij - delta_i) q_i
 *   dv_j    =       sum_i p_ij dout_i
 * </pre>
 * mode ROWS: one work item per (slice, query row) writes delta and dq (two passes over the keys).
 * mode KEYS: one work item per (slice, key row) writes dk and dv from delta (one pass over the
 * queries that see the key). No Tq x Tk matrix exists in memory, every output element has exactly
 * one writer (no atomics), and because both modes are one kernel, q, k, v, dout, lse and delta are
 * the same device buffers in both: the host uploads the inputs once and launches twice.
 * A query row that sees no key contributes nothing, so it needs no lse value.
 */
final class AttentionBackwardKernel extends Kernel {
    static final int ROWS = 0, KEYS = 1;

    float[] q = new float[1], k = new float[1], v = new float[1], dout = new float[1], lse = new float[1];
    float[] delta = new float[1], dq = new float[1], dk = new float[1], dv = new float[1], mask = new float[1];
    int mode, slices, heads, tq, tk, dh, dvd, causal, hasMask, ms0, ms1, ms2, ms3;
    float scale;

    @Override
    public void run() {
        if (mode == ROWS) rows(getGlobalId(0));
        else keys(getGlobalId(0));
    }

    private void rows(int gid) {
        if (gid < slices * tq) {
            int s = gid / tq, i = gid - (gid / tq) * tq;
            int b = s / heads, h = s - (s / heads) * heads;
            int qo = gid * dh, oo = gid * dvd, ko = s * tk * dh, vo = s * tk * dvd;
            int lim = tk;
            if (causal == 1) lim = min(tk, max(0, i + tk - tq + 1));
            int mo = b * ms0 + h * ms1 + i * ms2;
            float l = lse[gid];
            float dl = 0f;
            for (int j = 0; j < lim; j++) {
                if (hasMask == 0 || mask[mo + j * ms3] != 0f)
                    dl += exp(qk(qo, ko + j * dh) * scale - l) * doutV(oo, vo + j * dvd);
            }
            delta[gid] = dl;
            for (int d = 0; d < dh; d++) dq[qo + d] = 0f;
            for (int j = 0; j < lim; j++) {
                if (hasMask == 0 || mask[mo + j * ms3] != 0f) {
                    float ds = exp(qk(qo, ko + j * dh) * scale - l) * (doutV(oo, vo + j * dvd) - dl) * scale;
                    for (int d = 0; d < dh; d++) dq[qo + d] += ds * k[ko + j * dh + d];
                }
            }
        }
    }

    private void keys(int gid) {
        if (gid < slices * tk) {
            int s = gid / tk, j = gid - (gid / tk) * tk;
            int b = s / heads, h = s - (s / heads) * heads;
            int ko = gid * dh, vo = gid * dvd;
            int i0 = 0;
            if (causal == 1) i0 = max(0, j - tk + tq); // query i sees key j when j <= i + Tk - Tq
            int mo = b * ms0 + h * ms1 + j * ms3;
            for (int d = 0; d < dh; d++) dk[ko + d] = 0f;
            for (int d = 0; d < dvd; d++) dv[vo + d] = 0f;
            for (int i = i0; i < tq; i++) {
                if (hasMask == 0 || mask[mo + i * ms2] != 0f) {
                    int r = s * tq + i;
                    int qo = r * dh, oo = r * dvd;
                    float p = exp(qk(qo, ko) * scale - lse[r]);
                    for (int d = 0; d < dvd; d++) dv[vo + d] += p * dout[oo + d];
                    float ds = p * (doutV(oo, vo) - delta[r]) * scale;
                    for (int d = 0; d < dh; d++) dk[ko + d] += ds * q[qo + d];
                }
            }
        }
    }

    /** q row at qo . k row at ko (dh terms, in order): the score before scaling. */
    private float qk(int qo, int ko) {
        float sc = 0f;
        for (int d = 0; d < dh; d++) sc += q[qo + d] * k[ko + d];
        return sc;
    }

    /** dout row at oo . v row at vo (dv terms, in order): dP for one (query, key). */
    private float doutV(int oo, int vo) {
        float dp = 0f;
        for (int d = 0; d < dvd; d++) dp += dout[oo + d] * v[vo + d];
        return dp;
    }
}
