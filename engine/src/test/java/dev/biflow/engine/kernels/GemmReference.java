// Scalar double-precision GEMM: the reference every SGEMM variant is checked against.
package dev.biflow.engine.kernels;

/** The textbook triple loop in double, with the same argument conventions as {@link Gemm#gemm} without an epilogue. */
final class GemmReference {
    private GemmReference() {}

    /**
     * value: alpha * op(A) op(B) + beta * C, dense m x n (C is read only where beta != 0, as BLAS
     * does). magnitude: |alpha| sum_p |a_ip b_pj| + |beta c_ij|, the scale of the rounding error
     * of any float evaluation: k products summed in any order, alpha folded into one operand and
     * beta applied with one rounding, land within gamma(k + 2) * magnitude of value.
     */
    record Result(double[] value, double[] magnitude) {}

    static Result gemm(boolean transA, boolean transB, int m, int n, int k, float alpha,
                        float[] a, int aOff, int lda, float[] b, int bOff, int ldb,
                        float beta, float[] c, int cOff, int ldc) {
        // Dense row-major op(A) (m x k) and op(B)^T (n x k): the inner loop is then two unit strides.
        double[] ad = new double[m * k], bt = new double[n * k];
        for (int i = 0; i < m; i++)
            for (int p = 0; p < k; p++) ad[i * k + p] = transA ? a[aOff + p * lda + i] : a[aOff + i * lda + p];
        for (int j = 0; j < n; j++)
            for (int p = 0; p < k; p++) bt[j * k + p] = transB ? b[bOff + j * ldb + p] : b[bOff + p * ldb + j];
        double[] value = new double[m * n], magnitude = new double[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                double s = 0, sa = 0;
                for (int p = 0; p < k; p++) {
                    double t = ad[i * k + p] * bt[j * k + p];
                    s += t;
                    sa += Math.abs(t);
                }
                double cb = beta == 0f ? 0 : beta * (double) c[cOff + i * ldc + j];
                value[i * n + j] = alpha * s + cb;
                magnitude[i * n + j] = Math.abs(alpha) * sa + Math.abs(cb);
            }
        return new Result(value, magnitude);
    }

    /** gamma(n) = n u / (1 - n u), u = 2^-24: Higham's bound for n float roundings in a row. */
    static double gamma(int n) {
        double u = 0x1p-24;
        return n * u / (1 - n * u);
    }
}
