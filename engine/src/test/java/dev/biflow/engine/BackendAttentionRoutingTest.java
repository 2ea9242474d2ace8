// Fused.attention's forward and backward, and the packed self-attention's, go through Backend.active(): a backend that
// overrides them is called (with the operands' layouts), and the defaults are the CPU kernels.
package dev.biflow.engine;

import dev.biflow.engine.kernels.Attention;
import dev.biflow.engine.kernels.GemmEpilogue;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;

class BackendAttentionRoutingTest {

    /** The CPU backend with attentionForward/attentionBackward counted and delegated to the defaults. */
    static final class Counting implements Backend {
        int forwards, saves, backwards;
        Object lastSaved, backwardSaved;
        int[] lastMaskShape;
        Attention.Layouts lastLayouts;

        @Override public String name() { return "counting"; }

        @Override
        public void gemm(boolean transA, boolean transB, int m, int n, int k, float alpha, float[] a, int aOff, int lda,
                         float[] b, int bOff, int ldb, float beta, float[] c, int cOff, int ldc, GemmEpilogue epi) {
            Backend.CPU.gemm(transA, transB, m, n, k, alpha, a, aOff, lda, b, bOff, ldb, beta, c, cOff, ldc, epi);
        }

        @Override
        public Object attentionForward(float[] q, float[] k, float[] v, float[] out, Attention.Layouts layouts, int batch, int heads,
                                       int tq, int tk, int dh, int dv, boolean causal, float[] mask, int[] maskShape, float scale, boolean save) {
            forwards++;
            if (save) saves++;
            lastMaskShape = maskShape;
            lastLayouts = layouts;
            return lastSaved = Backend.super.attentionForward(q, k, v, out, layouts, batch, heads, tq, tk, dh, dv, causal, mask, maskShape, scale, save);
        }

        @Override
        public void attentionBackward(Object saved, float[] dout, float[] q, float[] k, float[] v, float[] gq, float[] gk,
                                      float[] gv, Attention.Layouts layouts, int batch, int heads, int tq, int tk, int dh, int dv,
                                      boolean causal, float[] mask, int[] maskShape, float scale) {
            backwards++;
            backwardSaved = saved;
            Backend.super.attentionBackward(saved, dout, q, k, v, gq, gk, gv, layouts, batch, heads, tq, tk, dh, dv, causal, mask, maskShape, scale);
        }
    }

    @Test
    void forwardAndBackwardGoThroughTheActiveBackendAndMatchTheCpuBitForBit() {
        Rng rng = new Rng(4);
        Tensor q = Tensor.randn(rng, 2, 2, 7, 4), k = Tensor.randn(rng, 2, 2, 9, 4), v = Tensor.randn(rng, 2, 2, 9, 3);
        float[] m = new float[7 * 9];
        for (int i = 0; i < m.length; i++) m[i] = rng.nextInt(3) == 0 ? 0f : 1f;
        Tensor mask = Tensor.of(m, 7, 9), dout = Tensor.randn(rng, 2, 2, 7, 3);
        Tensor[] cpu = run(q, k, v, mask, dout);
        Counting c = new Counting();
        Backend before = Backend.active();
        try {
            Backend.use(c);
            Tensor[] routed = run(q, k, v, mask, dout);
            assertEquals(1, c.forwards);
            assertEquals(1, c.saves);
            assertEquals(1, c.backwards);
            assertSame(c.lastSaved, c.backwardSaved, "the backward gets the forward's saved state");
            assertArrayEquals(new int[]{1, 1, 7, 9}, c.lastMaskShape, "a rank-2 mask is passed right-aligned to rank 4");
            for (int i = 0; i < cpu.length; i++) assertArrayEquals(cpu[i].data(), routed[i].data());
            try (var ng = Grad.noGrad()) {
                Tensor out = Fused.attention(q, k, v, true, mask, 0.5f);
                assertEquals(2, c.forwards);
                assertEquals(1, c.saves, "no graph: nothing saved");
                assertNull(c.lastSaved);
                assertArrayEquals(cpu[0].data(), out.data());
            }
        } finally {
            Backend.use(before);
        }
    }

    /** The packed self-attention reaches the backend with the heads' layout, no copies, with and without a graph. */
    @Test
    void packedSelfAttentionGoesThroughTheActiveBackendWithItsLayout() {
        Rng rng = new Rng(5);
        int b = 2, t = 5, heads = 2, dh = 3;
        Tensor qkv = Tensor.randn(rng, b, t, 3 * heads * dh), dout = Tensor.randn(rng, b, t, heads * dh);
        Tensor[] cpu = runPacked(qkv, dout);
        Counting c = new Counting();
        Backend before = Backend.active();
        try {
            Backend.use(c);
            Tensor[] routed = runPacked(qkv, dout);
            assertEquals(1, c.forwards);
            assertEquals(1, c.backwards);
            assertEquals(Attention.Layouts.packed(heads, t, dh), c.lastLayouts);
            for (int i = 0; i < cpu.length; i++) assertArrayEquals(cpu[i].data(), routed[i].data());
            try (var ng = Grad.noGrad()) {
                Tensor out = Fused.selfAttentionPacked(qkv, heads, true, 1f, 0.5f);
                assertEquals(2, c.forwards);
                assertEquals(Attention.Layouts.packed(heads, t, dh), c.lastLayouts);
                assertArrayEquals(cpu[0].data(), out.data(), "no graph: the same bits");
            }
        } finally {
            Backend.use(before);
        }
    }

    private static Tensor[] runPacked(Tensor qkv, Tensor dout) {
        Tensor x = Tensor.of(qkv.data().clone(), qkv.shape()).requiresGrad(true);
        Tensor out = Fused.selfAttentionPacked(x, 2, true, 1f, 0.5f);
        out.backward(dout);
        return new Tensor[]{out, x.grad()};
    }

    @Test
    void theDefaultBackwardRejectsStateItDidNotSave() {
        float[] x = new float[4];
        assertThrows(IllegalArgumentException.class, () -> Backend.CPU.attentionBackward(new float[3], x, x, x, x, x, x, x,
                Attention.Layouts.contiguous(1, 2, 2, 1, 1), 1, 1, 2, 2, 1, 1, true, null, null, 1f));
    }

    private static Tensor[] run(Tensor q, Tensor k, Tensor v, Tensor mask, Tensor dout) {
        Tensor lq = Tensor.of(q.data().clone(), q.shape()).requiresGrad(true);
        Tensor lk = Tensor.of(k.data().clone(), k.shape()).requiresGrad(true);
        Tensor lv = Tensor.of(v.data().clone(), v.shape()).requiresGrad(true);
        Tensor out = Fused.attention(lq, lk, lv, true, mask, 0.5f);
        out.backward(dout);
        return new Tensor[]{out, lq.grad(), lk.grad(), lv.grad()};
    }
}
