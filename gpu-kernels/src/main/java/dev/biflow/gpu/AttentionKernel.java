// Fused attention forward (causal / bidirectional / masked, any scale) and the KV-cache append, as one Aparapi kernel.
package dev.biflow.gpu;

import com.aparapi.Kernel;

/**
 * mode ATTEND: one work item per (slice s = b*H + h, query row i) computes
 * out[i] = softmax_j(scale * q_i . k_j over the allowed keys) v in two passes over the keys
 * (max, then exp-weighted sum of v rows), so the Tq x Tk score matrix never exists in memory.
 * Key j is allowed when j < lim (lim = i + Tk - Tq + 1 if causal, else Tk) and, with a mask,
 * mask[b*ms0 + h*ms1 + i*ms2 + j*ms3] != 0 (stride 0 broadcasts). A row with no allowed key is
 * zero, as on the CPU. With saveLse = 1 it also writes lse[s*Tq + i] = mx + log(sum), the
 * log-sum-exp of the row's allowed scaled scores (0 for a row with no allowed key), which is all
 * {@link AttentionBackwardKernel} needs to recompute the probabilities.
 *
 * <p>Slice strides (qStride, kStride, ...) let k and v be KV caches with room for more keys than
 * the Tk in use: the decode step is Tq = 1 against the first Tk cached rows.
 *
 * <p>mode APPEND writes one new key and value row per slice into the caches k and v at row pos.
 * Because both modes are one kernel, the caches are the same device buffers in both: a decode
 * loop uploads only the new q, k and v rows and downloads only the output row.
 */
final class AttentionKernel extends Kernel {
    static final int ATTEND = 0, APPEND = 1;
    /** Stand-in for -infinity: javac would inline Float.NEGATIVE_INFINITY as a literal OpenCL cannot parse. */
    static final float NEG_BIG = -3.0e38f;

    float[] q = new float[1], k = new float[1], v = new float[1], out = new float[1], mask = new float[1];
    float[] kNew = new float[1], vNew = new float[1], lse = new float[1];
    int mode, slices, heads, tq, tk, dh, dv, causal, hasMask, ms0, ms1, ms2, ms3, saveLse;
    int qStride, kStride, vStride, oStride, pos;
    float scale;

    @Override
    public void run() {
        if (mode == ATTEND) attend(getGlobalId(0));
        else append(getGlobalId(0));
    }

    private void attend(int gid) {
        if (gid < slices * tq) {
            int s = gid / tq, i = gid - (gid / tq) * tq;
            int b = s / heads, h = s - (s / heads) * heads;
            int qo = s * qStride + i * dh, ko = s * kStride, vo = s * vStride, oo = s * oStride + i * dv;
            int lim = tk;
            if (causal == 1) lim = min(tk, max(0, i + tk - tq + 1));
            int mo = b * ms0 + h * ms1 + i * ms2;
            float mx = NEG_BIG;
            int any = 0;
            for (int j = 0; j < lim; j++) {
                if (hasMask == 0 || mask[mo + j * ms3] != 0f) {
                    float sc = 0f;
                    for (int d = 0; d < dh; d++) sc += q[qo + d] * k[ko + j * dh + d];
                    sc = sc * scale;
                    if (any == 0 || sc > mx) mx = sc;
                    any = 1;
                }
            }
            for (int d = 0; d < dv; d++) out[oo + d] = 0f;
            if (saveLse == 1) lse[gid] = 0f;
            if (any == 1) {
                float sum = 0f;
                for (int j = 0; j < lim; j++) {
                    if (hasMask == 0 || mask[mo + j * ms3] != 0f) {
                        float sc = 0f;
                        for (int d = 0; d < dh; d++) sc += q[qo + d] * k[ko + j * dh + d];
                        float p = exp(sc * scale - mx);
                        sum += p;
                        for (int d = 0; d < dv; d++) out[oo + d] += p * v[vo + j * dv + d];
                    }
                }
                float inv = 1f / sum;
                for (int d = 0; d < dv; d++) out[oo + d] = out[oo + d] * inv;
                if (saveLse == 1) lse[gid] = mx + log(sum);
            }
        }
    }

    private void append(int gid) {
        int w = max(dh, dv);
        if (gid < slices * w) {
            int s = gid / w, d = gid - (gid / w) * w;
            if (d < dh) k[s * kStride + pos * dh + d] = kNew[s * dh + d];
            if (d < dv) v[s * vStride + pos * dv + d] = vNew[s * dv + d];
        }
    }
}
