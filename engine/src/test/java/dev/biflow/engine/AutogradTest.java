// Autograd semantics: accumulation, shared uses, detach, no-grad scopes, Grad.grad, deep graphs.
package dev.biflow.engine;

import org.junit.jupiter.api.Test;

import java.util.concurrent.atomic.AtomicInteger;

import static dev.biflow.engine.Ref.D;
import static org.junit.jupiter.api.Assertions.*;

class AutogradTest {

    @Test
    void gradientsAccumulateAcrossBackwardCalls() {
        Tensor x = Tensor.of(new float[]{1, 2, 3}, 3).requiresGrad(true);
        Ops.sum(Ops.mulScalar(x, 2f)).backward();
        assertArrayEquals(new float[]{2, 2, 2}, x.gradData());
        Ops.sum(Ops.mul(x, x)).backward();
        assertArrayEquals(new float[]{4, 6, 8}, x.gradData());
        // the same graph twice: the graph is kept, the gradient doubles
        Tensor y = Ops.sum(Ops.exp(x));
        y.backward();
        y.backward();
        for (int i = 0; i < 3; i++) assertEquals(new float[]{4, 6, 8}[i] + 2 * (float) Math.exp(i + 1), x.gradData()[i], 1e-4);
        x.zeroGrad();
        assertNull(x.grad());
    }

    /**
     * Residual adds, add(a, a), sub and reshape hand their output gradient on instead of adding it into a zeroed
     * buffer (Grad.Buffers.add): the gradients must equal, bit for bit, those of the same graph with the hand-over
     * switched off (every gradient added into a zeroed buffer), for backward() and for Grad.grad with an
     * intermediate target; and a function of the same value written with mulScalar(.., 1) agrees to rounding.
     */
    @Test
    void handingGradientsOverGivesTheSameGradientsAsAddingThem() {
        Rng r = new Rng(3);
        Tensor x = Tensor.randn(r, 4, 6).requiresGrad(true), w = Tensor.randn(r, 4, 6).requiresGrad(true);
        java.util.function.BiFunction<Boolean, Tensor[], Tensor> f = (plain, mid) -> {
            java.util.function.UnaryOperator<Tensor> id = t -> plain ? t : Ops.mulScalar(t, 1f);
            Tensor h = Ops.tanh(Ops.mul(x, w));
            mid[0] = h;
            Tensor h1 = Ops.add(id.apply(h), Ops.sigmoid(h));           // residual: h + f(h)
            Tensor h2 = Ops.sub(Ops.add(h1, id.apply(h1)), Ops.exp(h));  // add(a, a) and a sub
            Tensor h3 = Ops.reshape(h2, 6, 4);
            return Ops.sum(Ops.mul(h3, Ops.reshape(Ops.add(h, w), 6, 4)));
        };
        Tensor[] mid = new Tensor[1];
        float[][] grads = new float[3][];
        Tensor[][] byGrad = new Tensor[3][];
        for (int k = 0; k < 3; k++) { // 0: hand-over on, 1: off, 2: the mulScalar form
            Grad.HAND_OVER = k != 1;
            try {
                x.zeroGrad();
                w.zeroGrad();
                f.apply(k < 2, mid).backward();
                float[] both = java.util.Arrays.copyOf(x.gradData(), 48);
                System.arraycopy(w.gradData(), 0, both, 24, 24);
                grads[k] = both;
                byGrad[k] = Grad.grad(f.apply(k < 2, mid), null, mid[0], x);
            } finally {
                Grad.HAND_OVER = true;
            }
        }
        assertArrayEquals(grads[1], grads[0], "backward(): d/dx and d/dw");
        assertArrayEquals(byGrad[1][0].data(), byGrad[0][0].data(), "Grad.grad at the intermediate target h");
        assertArrayEquals(byGrad[1][1].data(), byGrad[0][1].data(), "Grad.grad at x through the target");
        assertArrayEquals(grads[1], grads[2], 1e-5f, "the mulScalar form (other summation order)");
    }

    @Test
    void aTensorUsedTwiceGetsBothContributions() {
        Tensor x = Tensor.of(new float[]{0.5f, -1.5f}, 2).requiresGrad(true);
        Ops.sum(Ops.mul(x, x)).backward();
        assertArrayEquals(new float[]{1f, -3f}, x.gradData());
        // diamond: a shared intermediate feeding two branches that meet again
        Tensor v = TestData.randn(1, 2, 5);
        GradCheck.of("diamond", t -> {
            Tensor a = Ops.addScalar(t[0], 1f);
            return Ops.add(Ops.mul(a, a), Ops.mulScalar(Ops.exp(a), 3f));
        }).ref(d -> Ref.map(new D(d[0], v.shape()), q -> (q + 1) * (q + 1) + 3 * Math.exp(q + 1)).v()).check(v);
    }

    @Test
    void detachStopsGradients() {
        Tensor x = Tensor.of(new float[]{2f, 3f}, 2).requiresGrad(true);
        Tensor d = Ops.mul(x, x).detach();
        assertTrue(d.isLeaf());
        assertFalse(d.needsGrad());
        assertArrayEquals(new float[]{4, 9}, d.data());
        // x * stopgrad(x^2): only the first factor carries a gradient
        Ops.sum(Ops.mul(x, d)).backward();
        assertArrayEquals(new float[]{4, 9}, x.gradData());
        assertSame(d.data(), Ops.detach(d).data(), "detach shares values, copies nothing");
        Tensor c = x.copy();
        assertNotSame(x.data(), c.data());
        assertFalse(c.needsGrad());
    }

    @Test
    void noGradRecordsNothingAndBackwardSaysWhy() {
        Tensor x = Tensor.ones(3).requiresGrad(true);
        Tensor y;
        try (var ng = Grad.noGrad()) {
            assertFalse(Grad.enabled());
            y = Ops.sum(Ops.exp(x));
            try (var inner = Grad.noGrad()) {
                assertFalse(Grad.enabled());
            }
            assertFalse(Grad.enabled(), "closing a nested scope keeps the outer one");
        }
        assertTrue(Grad.enabled());
        assertFalse(y.needsGrad());
        assertTrue(y.isLeaf());
        IllegalStateException e = assertThrows(IllegalStateException.class, y::backward);
        assertTrue(e.getMessage().contains("requiresGrad") && e.getMessage().contains("noGrad"), e.getMessage());
        assertNull(x.gradData());
    }

    @Test
    void noGradScopeClosedTwiceDoesNotDisableGradForever() {
        var ng = Grad.noGrad();
        ng.close();
        ng.close();
        assertTrue(Grad.enabled());
        Tensor x = Tensor.ones(2).requiresGrad(true);
        assertTrue(Ops.exp(x).needsGrad());
    }

    @Test
    void noGradIsPerThread() throws Exception {
        try (var ng = Grad.noGrad()) {
            boolean[] other = new boolean[1];
            Thread t = new Thread(() -> other[0] = Grad.enabled());
            t.start();
            t.join();
            assertTrue(other[0], "another thread still records");
        }
    }

    @Test
    void constantsMadeUnderNoGradAreConstants() {
        Tensor w = Tensor.of(new float[]{2f}, 1).requiresGrad(true);
        Tensor c;
        try (var ng = Grad.noGrad()) {
            c = Ops.mul(w, w);
        }
        Ops.sum(Ops.mul(w, c)).backward();
        assertArrayEquals(new float[]{4f}, w.gradData());
    }

    @Test
    void gradReturnsInputGradientsAndLeavesDotGradAlone() {
        Tensor x = TestData.randn(2, 4, 3);                       // data: needs no gradient of its own
        Tensor w = TestData.randn(3, 3, 5).requiresGrad(true);    // a parameter
        Tensor out = Ops.sum(Ops.tanh(Ops.matmul(x, w, false, false)));
        Tensor[] gx = Grad.grad(out, null, x);
        assertNull(w.gradData(), "Grad.grad must not write into parameters' .grad");
        assertNull(x.gradData());
        // against backward() with x marked
        Tensor x2 = x.copy().requiresGrad(true);
        Ops.sum(Ops.tanh(Ops.matmul(x2, w, false, false))).backward();
        assertArrayEquals(x2.gradData(), gx[0].data());
        assertArrayEquals(x.shape(), gx[0].shape());
    }

    @Test
    void gradWithSeedAndIntermediatesAndUnreachedInputs() {
        Tensor x = TestData.randn(4, 2, 3).requiresGrad(true);
        Tensor h = Ops.mulScalar(x, 3f);
        Tensor y = Ops.exp(h);
        Tensor seed = TestData.randn(5, 2, 3);
        Tensor unrelated = Tensor.ones(7).requiresGrad(true);
        Tensor[] g = Grad.grad(y, seed, h, x, unrelated);
        for (int i = 0; i < 6; i++) {
            assertEquals(seed.data()[i] * y.data()[i], g[0].data()[i], 1e-5);
            assertEquals(3 * seed.data()[i] * y.data()[i], g[1].data()[i], 1e-4);
        }
        assertArrayEquals(new float[7], g[2].data());
        assertNull(x.gradData());
        // a repeated target gets the same gradient twice
        Tensor[] gg = Grad.grad(y, seed, x, x);
        assertArrayEquals(gg[0].data(), gg[1].data());
        // the output itself as the target: the seed
        assertArrayEquals(seed.data(), Grad.grad(y, seed, y)[0].data());
        // an output that does not depend on anything with a gradient: zeros, and the output's own gradient is the seed
        Tensor k = Tensor.ones(2);
        assertArrayEquals(new float[2], Grad.grad(Ops.exp(k), Tensor.ones(2), k)[0].data());
        assertArrayEquals(new float[]{1f, 1f}, Grad.grad(k, Tensor.ones(2), k)[0].data());
    }

    @Test
    void gradSkipsBranchesThatLeadOnlyToOtherLeaves() {
        AtomicInteger calls = new AtomicInteger();
        Tensor w = TestData.randn(6, 3, 3).requiresGrad(true);
        Tensor x = TestData.randn(7, 2, 3);
        // a parameter-only branch (here a counting identity on w) must not run when only d/dx is asked for
        Tensor wId = Grad.record(Tensor.of(w.data().clone(), 3, 3), "count", (g, buf) -> {
            calls.incrementAndGet();
            float[] gw = buf.of(w);
            for (int i = 0; i < g.length; i++) gw[i] += g[i];
        }, w);
        Tensor out = Ops.sum(Ops.matmul(x, wId, false, false));
        Tensor gx = Grad.grad(out, null, x)[0];
        assertEquals(0, calls.get(), "the gradient rule of a branch that reaches only w ran");
        assertArrayEquals(new int[]{2, 3}, gx.shape());
        out.backward();
        assertEquals(1, calls.get());
        assertNotNull(w.gradData());
    }

    @Test
    void backwardOnALeafAndOnNonScalarsWithSeed() {
        Tensor s = Tensor.scalar(2f).requiresGrad(true);
        s.backward();
        assertEquals(1f, s.grad().item());
        Tensor x = TestData.randn(8, 2, 2).requiresGrad(true);
        Tensor y = Ops.mulScalar(x, 5f);
        y.backward(Tensor.full(0.5f, 2, 2));
        assertArrayEquals(new float[]{2.5f, 2.5f, 2.5f, 2.5f}, x.gradData());
    }

    @Test
    void requiresGradFlagsAndLeafness() {
        Tensor x = Tensor.ones(2);
        assertFalse(x.needsGrad());
        assertTrue(x.isLeaf());
        x.requiresGrad(true);
        assertTrue(x.needsGrad());
        Tensor y = Ops.exp(x);
        assertFalse(y.isLeaf());
        assertTrue(y.needsGrad());
        assertThrows(IllegalStateException.class, () -> y.requiresGrad(false));
        assertTrue(y.toString().contains("grad_fn=exp"), y.toString());
        assertTrue(x.toString().contains("requires_grad"), x.toString());
        // ops on tensors without gradients record nothing
        assertTrue(Ops.exp(Tensor.ones(2)).isLeaf());
    }

    @Test
    void deepChainDoesNotOverflowTheStack() {
        Tensor x = Tensor.of(new float[]{0.5f, 1f}, 2).requiresGrad(true);
        Tensor y = x;
        for (int i = 0; i < 20000; i++) y = (i % 2 == 0) ? Ops.addScalar(y, 1e-4f) : Ops.mulScalar(y, 1f);
        Ops.sum(y).backward();
        assertArrayEquals(new float[]{1f, 1f}, x.gradData());
        Tensor[] g = Grad.grad(Ops.sum(y), null, x);
        assertArrayEquals(new float[]{1f, 1f}, g[0].data());
        // a deep chain with a branch at every step: sharing without exponential blow-up
        Tensor z = x;
        for (int i = 0; i < 20000; i++) z = Ops.mulScalar(Ops.add(z, z), 0.5f);
        x.zeroGrad();
        Ops.sum(z).backward();
        assertArrayEquals(new float[]{1f, 1f}, x.gradData());
    }
}
