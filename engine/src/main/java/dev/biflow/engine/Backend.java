// The narrow seam between ops and the hardware that runs their heavy kernels.
package dev.biflow.engine;

import dev.biflow.engine.kernels.Attention;
import dev.biflow.engine.kernels.Gemm;
import dev.biflow.engine.kernels.GemmEpilogue;

/**
 * Where ops send their heavy kernels: GEMM (one method, with the epilogue a Linear layer fuses: bias, GELU, gated
 * residual) and attention's forward and backward, nothing else. Model code never names a kernel; it calls
 * {@link Ops} and ops dispatch here. The attention defaults are the CPU kernels of {@code engine.kernels}, so a
 * backend that implements only {@link #gemm} is complete; an accelerator backend (module gpu-kernels) overrides
 * what it accelerates. Kept narrow on purpose so another accelerator runtime (TornadoVM, say) needs only these.
 */
public interface Backend {
    String name();

    /**
     * Row-major GEMM with its epilogue: C = alpha op(A) op(B) + beta C, then what {@code epi} says (a bias, the
     * exact GELU, a gated residual add: {@link GemmEpilogue}); see {@link Gemm#gemm}, whose bits the CPU backend
     * gives. Every GEMM of ops, modules and plans comes here; {@link GemmEpilogue#NONE} for a plain product.
     */
    void gemm(boolean transA, boolean transB, int m, int n, int k, float alpha,
              float[] a, int aOff, int lda, float[] b, int bOff, int ldb,
              float beta, float[] c, int cOff, int ldc, GemmEpilogue epi);

    // Attention with autograd. Fused.attention and the packed self-attention of nn.MultiHeadAttention run their
    // forward and backward through these two, so a backend that overrides both runs attention on its device; the
    // defaults are the engine's CPU kernels (kernels.Attention).

    /**
     * The forward of {@link Fused#attention}: out = softmax(scale * q k^T, masked) v. The operands sit in
     * {@code layouts} (contiguous q (B, H, Tq, Dh), k (B, H, Tk, Dh), v (B, H, Tk, Dv), out (B, H, Tq, Dv), or the
     * heads inside one packed qkv projection: {@link Attention.Layouts}); q, k and v may be the same array. An
     * attention temperature tau is scale / tau. mask (nullable) has the rank-4 shape maskShape that broadcasts to
     * (B, H, Tq, Tk); 0 blocks a key. causal: query i sees key j when j <= i + Tk - Tq. out's rows are zero on
     * entry where a query sees no key, and every other row must be written. save: a backward will follow. Then
     * returns the state {@link #attentionBackward} needs beyond its own arguments (opaque to the caller, which hands
     * it back unchanged to the same backend; it must not alias q, k, v or out); else returns null and keeps
     * nothing. The default saves the probabilities P (B*H*Tq*Tk floats); the OpenCL backend saves one log-sum-exp
     * per query row (B*H*Tq floats) and recomputes P from it.
     */
    default Object attentionForward(float[] q, float[] k, float[] v, float[] out, Attention.Layouts layouts, int batch,
                                    int heads, int tq, int tk, int dh, int dv, boolean causal, float[] mask, int[] maskShape,
                                    float scale, boolean save) {
        return Attention.forward(q, k, v, out, layouts, batch, heads, tq, tk, dh, dv, causal, mask, maskShape, scale, save);
    }

    /**
     * The backward of {@link #attentionForward}: saved is what this backend's forward returned with save = true
     * for the same operands, layouts, mask, sizes and scale (unchanged since); dout is dL/dout in the output's
     * layout. ADDS dL/dq, dL/dk and dL/dv into gq, gk and gv in the layouts of q, k and v; each may be null (not
     * wanted). Blocked keys pass no gradient, a query that sees no key passes none, the mask gets none.
     */
    default void attentionBackward(Object saved, float[] dout, float[] q, float[] k, float[] v, float[] gq, float[] gk,
                                   float[] gv, Attention.Layouts layouts, int batch, int heads, int tq, int tk, int dh, int dv,
                                   boolean causal, float[] mask, int[] maskShape, float scale) {
        if (!(saved instanceof float[] p))
            throw new IllegalArgumentException("attentionBackward: saved is not the P of a CPU attentionForward of these sizes");
        Attention.backward(p, dout, q, k, v, gq, gk, gv, layouts, batch, heads, tq, tk, dh, dv, causal, scale);
    }

    /** The CPU backend: Vector API kernels on the engine's thread pool. */
    Backend CPU = new Backend() {
        @Override public String name() { return "cpu"; }

        @Override
        public void gemm(boolean transA, boolean transB, int m, int n, int k, float alpha,
                         float[] a, int aOff, int lda, float[] b, int bOff, int ldb,
                         float beta, float[] c, int cOff, int ldc, GemmEpilogue epi) {
            Gemm.gemm(transA, transB, m, n, k, alpha, a, aOff, lda, b, bOff, ldb, beta, c, cOff, ldc, epi);
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
