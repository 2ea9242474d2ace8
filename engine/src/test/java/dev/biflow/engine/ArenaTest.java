// Arena: a training step in a scope computes the same bits as without one, reuses its arrays, and an escaped tensor is caught.
package dev.biflow.engine;

import dev.biflow.engine.nn.MLP;
import dev.biflow.engine.nn.MultiHeadAttention;
import dev.biflow.engine.optim.AdamW;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.*;

class ArenaTest {
    /** A small transformer layer trained a few steps with AdamW; returns the parameters' bits after each step. */
    private static List<float[]> train(boolean arena, int steps) {
        Rng rng = new Rng(5);
        MultiHeadAttention attn = MultiHeadAttention.withHeadDim(32, 8, true, true, rng);
        MLP mlp = new MLP(32, 4, true, rng);
        List<Tensor> params = new ArrayList<>(attn.parameters());
        params.addAll(mlp.parameters());
        AdamW opt = new AdamW(params, 1e-2, 0.9, 0.95, 1e-8, 1e-4);
        Rng data = new Rng(6);
        List<float[]> after = new ArrayList<>();
        for (int s = 0; s < steps; s++) {
            Tensor x = Tensor.randn(data, 3, 7, 32);
            opt.zeroGrad();
            Arena a = arena ? Arena.open() : null;
            try {
                Tensor h = Ops.add(x, attn.forward(x));
                h = mlp.forwardAdd(h);
                Tensor loss = Ops.mean(Ops.square(h));
                loss.backward();
                opt.step();
            } finally {
                if (a != null) a.close();
            }
            float[] all = new float[0];
            for (Tensor p : params) {
                float[] d = p.data();
                float[] n = java.util.Arrays.copyOf(all, all.length + d.length);
                System.arraycopy(d, 0, n, all.length, d.length);
                all = n;
            }
            after.add(all);
        }
        return after;
    }

    @Test
    void aStepInAScopeGivesTheSameBitsAsWithout() {
        List<float[]> plain = train(false, 4), pooled = train(true, 4);
        for (int s = 0; s < plain.size(); s++)
            assertArrayEquals(plain.get(s), pooled.get(s), "parameters after step " + (s + 1));
    }

    @Test
    void theSecondStepAllocatesAlmostNothing() {
        Rng rng = new Rng(1);
        Tensor w = Tensor.randn(rng, 256, 256).requiresGrad(true);
        Tensor x = Tensor.randn(rng, 64, 256);
        var threads = (com.sun.management.ThreadMXBean) java.lang.management.ManagementFactory.getThreadMXBean();
        long tid = Thread.currentThread().threadId();
        long[] allocated = new long[3], taken = new long[3];
        for (int step = 0; step < 3; step++) {
            long a0 = threads.getThreadAllocatedBytes(tid);
            try (Arena a = Arena.open()) {
                Tensor y = Ops.tanh(Ops.linear(x, w, null)); // (64, 256)
                Ops.sum(Ops.square(y)).backward();
                taken[step] = a.takenFloats();
            }
            w.zeroGrad();
            allocated[step] = threads.getThreadAllocatedBytes(tid) - a0;
        }
        assertEquals(taken[0], taken[2], "the same arrays each step");
        assertTrue(taken[2] * 4 >= 5 * 64 * 256 * 4, "activations and gradients came from the arena: " + taken[2] + " floats");
        // interpreted Vector API code boxes vectors (megabytes per step in a cold test JVM), the same in every step or
        // less once compiled: what step 3 saves against step 1 is the arrays it did not allocate
        assertTrue(allocated[0] - allocated[2] > taken[2] * 4 * 9 / 10, "step 3 reuses step 1's arrays: step 1 allocated "
                + allocated[0] + " bytes, step 3 " + allocated[2] + ", the arrays are " + taken[2] * 4 + " bytes");
    }

    @Test
    void outsideAScopeArraysAreFreshAndAnEscapedTensorTurnsNaN() {
        assertFalse(Arena.active());
        float[] a = Arena.floats(5), b = Arena.floats(5);
        assertNotSame(a, b);
        Tensor escaped;
        try (Arena s = Arena.open()) {
            assertTrue(Arena.active());
            escaped = Ops.addScalar(Tensor.ones(4), 1f);
            assertEquals(2f, escaped.get(0));
        }
        assertFalse(Arena.active());
        // the suite runs with -Dbiflow.arena.poison=true: a value read after its scope closed is NaN, not a stale number
        if (Boolean.getBoolean("biflow.arena.poison")) assertTrue(Float.isNaN(escaped.get(0)), "poisoned on release");
    }

    @Test
    void arraysComeZeroFilledAndScopesNestAndCloseInOrder() {
        try (Arena outer = Arena.open()) {
            float[] x = Arena.floats(10);
            java.util.Arrays.fill(x, 3f);
            Arena inner = Arena.open();
            float[] y = Arena.floats(10);
            assertNotSame(x, y, "an array still taken by the outer scope is not handed out again");
            assertThrows(IllegalStateException.class, outer::close, "the outer scope cannot close before the inner one");
            inner.close();
            float[] z = Arena.floats(10);
            assertSame(y, z, "the inner scope's array went back to the pool");
            for (float v : z) assertEquals(0f, v, "handed out zero-filled");
        }
    }

    @Test
    void stateMadeInAScopeAndFilledInANestedOneLivesAsLongAsItsOwnScope() {
        try (Arena outer = Arena.open()) {
            assertSame(outer, Arena.current());
            float[] kept;
            try (Arena step = Arena.open()) {
                kept = outer.take(32); // what a KV cache does when it first grows inside a decode step
                java.util.Arrays.fill(kept, 5f);
            }
            try (Arena next = Arena.open()) {
                float[] t = Arena.floats(32);
                assertNotSame(kept, t, "the outer scope's array is not handed to the next step");
                assertEquals(5f, kept[0], "and keeps its values");
            }
        }
        assertNull(Arena.current());
    }

    @Test
    void zeroGradKeepsTheBufferButAParameterNoGradientReachesIsSkipped() {
        Tensor p = Tensor.ones(3).requiresGrad(true), unused = Tensor.ones(3).requiresGrad(true);
        AdamW opt = new AdamW(List.of(p, unused), 0.1);
        Ops.sum(Ops.mul(p, p)).backward();
        float[] g1 = p.gradData();
        assertArrayEquals(new float[]{2, 2, 2}, g1);
        opt.zeroGrad();
        assertNull(p.gradData(), "cleared");
        Ops.sum(p).backward();
        assertSame(g1, p.gradData(), "the cleared buffer is reused");
        assertArrayEquals(new float[]{1, 1, 1}, p.gradData(), "and zeroed before accumulating");
        opt.step();
        assertArrayEquals(new float[]{1, 1, 1}, unused.data(), "no gradient reached it: not updated");
    }
}
