// Single-precision GEMM: the one matrix-multiply kernel every op and module goes through.
package dev.biflow.engine.kernels;

/**
 * C = alpha * op(A) * op(B) + beta * C on row-major float arrays, op(X) = X or X^T.
 * op(A) is M x K, op(B) is K x N, C is M x N. lda/ldb/ldc are row strides of the arrays as
 * stored (so for transA, A is stored K x M with row stride lda >= M).
 *
 * PLACEHOLDER body (naive, correct): the packed, cache-blocked Vector API version replaces it.
 */
public final class Gemm {
    private Gemm() {}

    public static void sgemm(boolean transA, boolean transB, int m, int n, int k, float alpha,
                             float[] a, int aOff, int lda, float[] b, int bOff, int ldb,
                             float beta, float[] c, int cOff, int ldc) {
        Parallel.forRange(m, 4, (lo, hi) -> {
            for (int i = lo; i < hi; i++) {
                for (int j = 0; j < n; j++) {
                    float s = 0f;
                    for (int p = 0; p < k; p++) {
                        float av = transA ? a[aOff + p * lda + i] : a[aOff + i * lda + p];
                        float bv = transB ? b[bOff + j * ldb + p] : b[bOff + p * ldb + j];
                        s += av * bv;
                    }
                    int ci = cOff + i * ldc + j;
                    c[ci] = beta == 0f ? alpha * s : alpha * s + beta * c[ci];
                }
            }
        });
    }
}
