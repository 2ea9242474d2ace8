// The narrow seam between ops and the hardware that runs their heavy kernels.
package dev.biflow.engine;

import dev.biflow.engine.kernels.Gemm;
import dev.biflow.engine.kernels.LayerNormKernel;
import dev.biflow.engine.kernels.Softmax;
import dev.biflow.engine.kernels.Vec;

/**
 * Where ops send their heavy kernels. Model code never names a kernel; it calls {@link Ops}
 * and ops dispatch here. The CPU backend is the default and complete; an accelerator backend
 * (module gpu-kernels) overrides what it accelerates. Kept narrow on purpose so another
 * accelerator runtime (TornadoVM, say) needs only these methods.
 */
public interface Backend {
    String name();

    /** Row-major SGEMM, see {@link Gemm#sgemm}. */
    void sgemm(boolean transA, boolean transB, int m, int n, int k, float alpha,
               float[] a, int aOff, int lda, float[] b, int bOff, int ldb,
               float beta, float[] c, int cOff, int ldc);

    /**
     * C = alpha op(A) op(B) + (beta C + bias), bias[biasOff .. biasOff + n) added to every row: what a Linear
     * layer computes. The default forms the start value in one pass ({@link Gemm#prefillBias}) and calls
     * {@link #sgemm} with beta = 1; the CPU backend forms it tile by tile inside the GEMM (same bits).
     */
    default void sgemmBias(boolean transA, boolean transB, int m, int n, int k, float alpha,
                           float[] a, int aOff, int lda, float[] b, int bOff, int ldb,
                           float beta, float[] c, int cOff, int ldc, float[] bias, int biasOff) {
        Gemm.prefillBias(m, n, beta, c, cOff, ldc, bias, biasOff);
        sgemm(transA, transB, m, n, k, alpha, a, aOff, lda, b, bOff, ldb, 1f, c, cOff, ldc);
    }

    /**
     * gelu({@link #sgemmBias}) with the exact (erf) GELU: a Linear layer and its activation for inference
     * (bias may be null). The default runs the GEMM, then GELU over C; the CPU backend applies GELU to each
     * C tile while it is in L1 (same bits).
     */
    default void sgemmBiasGelu(boolean transA, boolean transB, int m, int n, int k, float alpha,
                               float[] a, int aOff, int lda, float[] b, int bOff, int ldb,
                               float beta, float[] c, int cOff, int ldc, float[] bias, int biasOff) {
        if (bias != null) sgemmBias(transA, transB, m, n, k, alpha, a, aOff, lda, b, bOff, ldb, beta, c, cOff, ldc, bias, biasOff);
        else sgemm(transA, transB, m, n, k, alpha, a, aOff, lda, b, bOff, ldb, beta, c, cOff, ldc);
        for (int i = 0; i < m; i++) dev.biflow.engine.kernels.Gelu.forward(c, c, cOff + i * ldc, cOff + i * ldc + n);
    }

    /**
     * C = R + G * (op(A) op(B) + bias) (bias may be null; R an M x N matrix, rows ldr apart from rOff; G null, or
     * M / gRows rows of N, ldg apart from gOff, row i / gRows scaling C's row i; neither is C): a Linear layer and
     * the (gated) residual add after it, for inference. The default runs the GEMM, then the elementwise ops; the
     * CPU backend applies them to each C tile while it is in L1 (same bits: {@code r + g * c}).
     */
    default void sgemmBiasAdd(boolean transA, boolean transB, int m, int n, int k,
                              float[] a, int aOff, int lda, float[] b, int bOff, int ldb,
                              float[] c, int cOff, int ldc, float[] bias, int biasOff, float[] r, int rOff, int ldr,
                              float[] g, int gOff, int ldg, int gRows) {
        if (bias != null) sgemmBias(transA, transB, m, n, k, 1f, a, aOff, lda, b, bOff, ldb, 0f, c, cOff, ldc, bias, biasOff);
        else sgemm(transA, transB, m, n, k, 1f, a, aOff, lda, b, bOff, ldb, 0f, c, cOff, ldc);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                float y = c[cOff + i * ldc + j];
                if (g != null) y = g[gOff + (i / gRows) * ldg + j] * y;
                c[cOff + i * ldc + j] = r[rOff + i * ldr + j] + y;
            }
    }

    // The methods below are kernels an accelerator may override; the defaults run the CPU kernels,
    // so a backend that implements only sgemm is complete. Arrays are contiguous and
    // start at offset 0 unless an offset is given.

    /**
     * batch independent GEMMs: C_i = alpha op(A_i) op(B_i) + beta C_i with A_i at aOff + i*strideA
     * (likewise B, C); the other arguments are as in {@link #sgemm}.
     */
    default void sgemmBatched(int batch, boolean transA, boolean transB, int m, int n, int k, float alpha,
                              float[] a, int aOff, int strideA, int lda, float[] b, int bOff, int strideB, int ldb,
                              float beta, float[] c, int cOff, int strideC, int ldc) {
        for (int i = 0; i < batch; i++)
            sgemm(transA, transB, m, n, k, alpha, a, aOff + i * strideA, lda, b, bOff + i * strideB, ldb,
                    beta, c, cOff + i * strideC, ldc);
    }

    /**
     * LayerNorm forward over rows of length d (biased variance, as PyTorch): y = (x - mean) * rstd * w + b.
     * w and b may be null; mean and rstd (one per row) receive the statistics the backward needs.
     */
    default void layerNorm(float[] x, float[] w, float[] b, float[] y, float[] mean, float[] rstd,
                           int rows, int d, float eps) {
        LayerNormKernel.forward(x, w, b, y, mean, rstd, d, eps, 0, rows);
    }

    /** Max-subtracted softmax of each of rows rows of length n (x and y may be the same array). */
    default void softmaxRows(float[] x, float[] y, int rows, int n) {
        for (int r = 0; r < rows; r++) Softmax.softmaxRow(x, r * n, y, r * n, n);
    }

    /**
     * Attention forward, out = softmax(scale * q k^T, masked) v, as {@link Fused#attention} without
     * autograd (the default is a one-thread reference that does not go through Fused, so Fused may route here): q (B, H, Tq, Dh), k (B, H, Tk, Dh), v (B, H, Tk, Dv) -> out (B, H, Tq, Dv). An
     * attention temperature tau is scale / tau. mask (nullable) has the rank-4 shape maskShape that
     * broadcasts to (B, H, Tq, Tk); 0 blocks a key. causal: query i sees key j when j <= i + Tk - Tq,
     * so Tq = 1 against a KV cache of Tk keys is the decode step. A query that sees no key gets zeros.
     */
    default void attention(float[] q, float[] k, float[] v, float[] out, int batch, int heads, int tq, int tk,
                           int dh, int dv, boolean causal, float[] mask, int[] maskShape, float scale) {
        // A scalar-loop reference on purpose: Fused.attention may route here, so this must not call it.
        int[] full = {batch, heads, tq, tk}, ms = new int[4];
        if (mask != null) {
            if (maskShape == null || maskShape.length != 4)
                throw new IllegalArgumentException("attention: maskShape must be rank 4 (B|1, H|1, Tq, Tk)");
            for (int i = 3, st = 1; i >= 0; st *= maskShape[i], i--) {
                if (maskShape[i] != full[i] && maskShape[i] != 1)
                    throw new IllegalArgumentException("attention: mask axis " + i + " has size " + maskShape[i]
                            + " but the scores have " + full[i]);
                ms[i] = maskShape[i] == 1 ? 0 : st;
            }
        }
        float[] row = new float[Math.max(1, tk)];
        for (int s = 0; s < batch * heads; s++) {
            int b = s / heads, h = s % heads;
            for (int i = 0; i < tq; i++) {
                int lim = causal ? Math.max(0, Math.min(tk, i + tk - tq + 1)) : tk;
                int qo = (s * tq + i) * dh, oo = (s * tq + i) * dv;
                for (int j = 0; j < lim; j++) {
                    boolean ok = mask == null || mask[b * ms[0] + h * ms[1] + i * ms[2] + j * ms[3]] != 0f;
                    row[j] = ok ? scale * Vec.dot(q, qo, k, (s * tk + j) * dh, dh) : Float.NEGATIVE_INFINITY;
                }
                Softmax.softmaxRowInPlace(row, 0, tk, lim); // no visible key: a zero row
                java.util.Arrays.fill(out, oo, oo + dv, 0f);
                for (int j = 0; j < lim; j++) if (row[j] != 0f) Vec.axpy(row[j], v, (s * tk + j) * dv, out, oo, dv);
            }
        }
    }

    // Attention with autograd. Fused.attention runs its forward and backward through these two, so
    // a backend that overrides both runs training attention on its device; the defaults are the
    // engine's CPU code (blocked GEMMs through this backend's sgemm, row softmax on the host).

    /**
     * The forward of {@link Fused#attention}: out = softmax(scale * q k^T, masked) v with the
     * layouts, causal rule, mask broadcast (mask nullable, maskShape rank 4) and empty-row rule of
     * {@link #attention}; out (B, H, Tq, Dv) is zero on entry and must be fully written (rows that
     * see no key stay zero). save: a backward will follow. Then returns the state
     * {@link #attentionBackward} needs beyond its own arguments (opaque to the caller, which hands
     * it back unchanged to the same backend; it must not alias q, k, v or out); else returns null
     * and keeps nothing. The default saves the probabilities P (B*H*Tq*Tk floats); the OpenCL
     * backend saves one log-sum-exp per query row (B*H*Tq floats) and recomputes P from it.
     */
    default Object attentionForward(float[] q, float[] k, float[] v, float[] out, int batch, int heads, int tq, int tk,
                                    int dh, int dv, boolean causal, float[] mask, int[] maskShape, float scale,
                                    boolean save) {
        return Fused.attentionForwardCpu(this, q, k, v, out, batch, heads, tq, tk, dh, dv, causal, mask, maskShape, scale, save);
    }

    /**
     * The backward of {@link #attentionForward}: saved is what this backend's forward returned
     * with save = true for the same q, k, v, mask, sizes and scale (unchanged since); dout is
     * dL/dout (B, H, Tq, Dv). ADDS dL/dq (B, H, Tq, Dh), dL/dk (B, H, Tk, Dh) and dL/dv
     * (B, H, Tk, Dv) into gq, gk and gv; each may be null (not wanted). Blocked keys pass no
     * gradient, a query that sees no key passes none, the mask gets none.
     */
    default void attentionBackward(Object saved, float[] dout, float[] q, float[] k, float[] v,
                                   float[] gq, float[] gk, float[] gv, int batch, int heads, int tq, int tk,
                                   int dh, int dv, boolean causal, float[] mask, int[] maskShape, float scale) {
        Fused.attentionBackwardCpu(this, saved, dout, q, k, v, gq, gk, gv, batch, heads, tq, tk, dh, dv, causal, mask, maskShape, scale);
    }

    /**
     * Affine coupling on batch samples of perSample values each. Forward (inverse = false):
     * out = (in - b) * exp(-a); inverse: out = in * exp(a) + b. logdet (nullable, one per sample)
     * receives log|det d out / d in|: -sum(a) forward, +sum(a) inverse (summed, not averaged).
     */
    default void affineCoupling(boolean inverse, float[] in, float[] a, float[] b, float[] out, float[] logdet,
                                int batch, int perSample) {
        for (int s = 0; s < batch; s++) {
            double sum = 0;
            for (int i = s * perSample, e = i + perSample; i < e; i++) {
                float ea = (float) Math.exp(inverse ? a[i] : -a[i]);
                out[i] = inverse ? in[i] * ea + b[i] : (in[i] - b[i]) * ea;
                sum += a[i];
            }
            if (logdet != null) logdet[s] = (float) (inverse ? sum : -sum);
        }
    }

    /** The CPU backend: Vector API kernels on the engine's thread pool. */
    Backend CPU = new Backend() {
        @Override public String name() { return "cpu"; }

        @Override
        public void sgemm(boolean transA, boolean transB, int m, int n, int k, float alpha,
                          float[] a, int aOff, int lda, float[] b, int bOff, int ldb,
                          float beta, float[] c, int cOff, int ldc) {
            Gemm.sgemm(transA, transB, m, n, k, alpha, a, aOff, lda, b, bOff, ldb, beta, c, cOff, ldc);
        }

        @Override
        public void sgemmBias(boolean transA, boolean transB, int m, int n, int k, float alpha,
                              float[] a, int aOff, int lda, float[] b, int bOff, int ldb,
                              float beta, float[] c, int cOff, int ldc, float[] bias, int biasOff) {
            Gemm.sgemmBias(transA, transB, m, n, k, alpha, a, aOff, lda, b, bOff, ldb, beta, c, cOff, ldc, bias, biasOff);
        }

        @Override
        public void sgemmBiasGelu(boolean transA, boolean transB, int m, int n, int k, float alpha,
                                  float[] a, int aOff, int lda, float[] b, int bOff, int ldb,
                                  float beta, float[] c, int cOff, int ldc, float[] bias, int biasOff) {
            Gemm.sgemmBiasGelu(transA, transB, m, n, k, alpha, a, aOff, lda, b, bOff, ldb, beta, c, cOff, ldc, bias, biasOff);
        }

        @Override
        public void sgemmBiasAdd(boolean transA, boolean transB, int m, int n, int k,
                                 float[] a, int aOff, int lda, float[] b, int bOff, int ldb,
                                 float[] c, int cOff, int ldc, float[] bias, int biasOff, float[] r, int rOff, int ldr,
                                 float[] g, int gOff, int ldg, int gRows) {
            Gemm.sgemmBiasGatedAdd(transA, transB, m, n, k, a, aOff, lda, b, bOff, ldb, c, cOff, ldc, bias, biasOff, r, rOff, ldr, g, gOff, ldg, gRows);
        }
    };

    /** The backend ops use now. */
    static Backend active() { return Holder.active; }

    /** Makes b the active backend (process-wide). */
    static void use(Backend b) {
        if (b == null) throw new IllegalArgumentException("backend must not be null");
        Holder.active = b;
    }

    final class Holder {
        private Holder() {}
        static volatile Backend active = CPU;
    }
}
