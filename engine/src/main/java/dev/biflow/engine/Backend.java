// The narrow seam between ops and the hardware that runs their heavy kernels.
package dev.biflow.engine;

import dev.biflow.engine.kernels.Gemm;

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

    /** The CPU backend: Vector API kernels on the engine's thread pool. */
    Backend CPU = new Backend() {
        @Override public String name() { return "cpu"; }

        @Override
        public void sgemm(boolean transA, boolean transB, int m, int n, int k, float alpha,
                          float[] a, int aOff, int lda, float[] b, int bOff, int ldb,
                          float beta, float[] c, int cOff, int ldc) {
            Gemm.sgemm(transA, transB, m, n, k, alpha, a, aOff, lda, b, bOff, ldb, beta, c, cOff, ldc);
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
