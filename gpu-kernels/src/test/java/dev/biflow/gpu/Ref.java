// Scalar double-precision references for the conformance suite (the "reference" of every kernel).
package dev.biflow.gpu;

import java.util.Random;

/** Straightforward double loops: slow, obviously right, used to grade every backend. */
final class Ref {
    private Ref() {}

    static float[] rand(Random r, int n, float scale) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float) (r.nextGaussian() * scale);
        return x;
    }

    /** C = alpha op(A) op(B) + beta C for one matrix; also returns per element sum |a||b| in absOut. */
    static double[] gemm(boolean tA, boolean tB, int m, int n, int k, float alpha, float[] a, int aOff, int lda,
                         float[] b, int bOff, int ldb, float beta, float[] c, int cOff, int ldc, double[] absOut) {
        double[] out = new double[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                double s = 0, sa = 0;
                for (int p = 0; p < k; p++) {
                    double av = tA ? a[aOff + p * lda + i] : a[aOff + i * lda + p];
                    double bv = tB ? b[bOff + j * ldb + p] : b[bOff + p * ldb + j];
                    s += av * bv;
                    sa += Math.abs(av * bv);
                }
                double cv = beta == 0f ? 0 : beta * (double) c[cOff + i * ldc + j];
                out[i * n + j] = alpha * s + cv;
                absOut[i * n + j] = Math.abs(alpha) * sa + Math.abs(cv);
            }
        return out;
    }

    /** out (B,H,Tq,Dv); mask has rank-4 shape ms (or null). */
    static double[] attention(float[] q, float[] k, float[] v, int nb, int nh, int tq, int tk, int dh, int dv,
                              boolean causal, float[] mask, int[] ms, float scale) {
        double[] out = new double[nb * nh * tq * dv];
        int[] st = mask == null ? null : dev.biflow.engine.kernels.Attention.maskStrides(ms, new int[]{nb, nh, tq, tk});
        for (int b = 0; b < nb; b++)
            for (int h = 0; h < nh; h++) {
                int s = b * nh + h;
                for (int i = 0; i < tq; i++) {
                    double[] p = new double[tk];
                    boolean[] ok = new boolean[tk];
                    if (!probabilities(q, k, b, h, s, i, tq, tk, dh, causal, mask, st, scale, p, ok)) continue; // no key: zeros
                    for (int j = 0; j < tk; j++) {
                        if (!ok[j]) continue;
                        for (int e = 0; e < dv; e++) out[(s * tq + i) * dv + e] += p[j] * v[(s * tk + j) * dv + e];
                    }
                }
            }
        return out;
    }

    /**
     * Gradients of sum(dout * attention(q, k, v)) in double: {dq, dk, dv, |dq|, |dk|, |dv|}, where
     * the last three are the sums of the absolute values of the terms each gradient element adds
     * up (the scale a float32 sum's rounding error is proportional to, as for GEMM).
     */
    static double[][] attentionBackward(float[] q, float[] k, float[] v, float[] dout, int nb, int nh, int tq, int tk,
                                        int dh, int dv, boolean causal, float[] mask, int[] ms, float scale) {
        double[] gq = new double[nb * nh * tq * dh], gk = new double[nb * nh * tk * dh], gv = new double[nb * nh * tk * dv];
        double[] aq = new double[gq.length], ak = new double[gk.length], av = new double[gv.length];
        int[] st = mask == null ? null : dev.biflow.engine.kernels.Attention.maskStrides(ms, new int[]{nb, nh, tq, tk});
        for (int b = 0; b < nb; b++)
            for (int h = 0; h < nh; h++) {
                int s = b * nh + h;
                for (int i = 0; i < tq; i++) {
                    double[] p = new double[tk], dp = new double[tk];
                    boolean[] ok = new boolean[tk];
                    if (!probabilities(q, k, b, h, s, i, tq, tk, dh, causal, mask, st, scale, p, ok)) continue; // no key: no gradient
                    double delta = 0;
                    for (int j = 0; j < tk; j++) {
                        if (!ok[j]) continue;
                        for (int e = 0; e < dv; e++) dp[j] += (double) dout[(s * tq + i) * dv + e] * v[(s * tk + j) * dv + e];
                        delta += p[j] * dp[j];
                    }
                    for (int j = 0; j < tk; j++) {
                        if (!ok[j]) continue;
                        double ds = p[j] * (dp[j] - delta) * scale, as = p[j] * (Math.abs(dp[j]) + Math.abs(delta)) * Math.abs(scale);
                        for (int e = 0; e < dh; e++) {
                            int qi = (s * tq + i) * dh + e, ki = (s * tk + j) * dh + e;
                            gq[qi] += ds * k[ki];
                            aq[qi] += as * Math.abs(k[ki]);
                            gk[ki] += ds * q[qi];
                            ak[ki] += as * Math.abs(q[qi]);
                        }
                        for (int e = 0; e < dv; e++) {
                            int vi = (s * tk + j) * dv + e, oi = (s * tq + i) * dv + e;
                            gv[vi] += p[j] * dout[oi];
                            av[vi] += p[j] * Math.abs(dout[oi]);
                        }
                    }
                }
            }
        return new double[][]{gq, gk, gv, aq, ak, av};
    }

    /**
     * Query i of slice s = (b, h): p[j] = softmax over the keys it sees (ok[j]: causal limit and mask) of
     * scale q_i . k_j, in double; false when it sees no key (p untouched). Shared by the forward and backward
     * references.
     */
    private static boolean probabilities(float[] q, float[] k, int b, int h, int s, int i, int tq, int tk, int dh, boolean causal,
                                         float[] mask, int[] st, float scale, double[] p, boolean[] ok) {
        double m = Double.NEGATIVE_INFINITY;
        for (int j = 0; j < tk; j++) {
            ok[j] = (!causal || j <= i + tk - tq) && (mask == null || mask[b * st[0] + h * st[1] + i * st[2] + j * st[3]] != 0f);
            if (!ok[j]) continue;
            double d = 0;
            for (int e = 0; e < dh; e++) d += (double) q[(s * tq + i) * dh + e] * k[(s * tk + j) * dh + e];
            p[j] = d * scale;
            m = Math.max(m, p[j]);
        }
        if (m == Double.NEGATIVE_INFINITY) return false;
        double z = 0;
        for (int j = 0; j < tk; j++) if (ok[j]) z += Math.exp(p[j] - m);
        for (int j = 0; j < tk; j++) p[j] = ok[j] ? Math.exp(p[j] - m) / z : 0;
        return true;
    }

    static void assertClose(String what, double[] want, float[] got, int n, double atol, double rtol) {
        for (int i = 0; i < n; i++) {
            double tol = atol + rtol * Math.abs(want[i]);
            if (!(Math.abs(got[i] - want[i]) <= tol))
                throw new AssertionError(what + ": element " + i + " is " + got[i] + ", expected " + want[i] + " (tolerance " + tol + ")");
        }
    }
}
