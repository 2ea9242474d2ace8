// The in-place decode kernel of KVCache against the differentiable attention op over the same keys.
package dev.biflow.engine.nn;

import dev.biflow.engine.Fused;
import dev.biflow.engine.Ops;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.*;
import static org.quicktheories.QuickTheory.qt;
import static org.quicktheories.generators.SourceDSL.integers;

class KVCacheTest {
    @Test
    void attendEqualsFullAttentionOverTheCacheAsItGrows() {
        qt().withExamples(40).forAll(integers().between(1, 3), integers().between(1, 3), integers().between(1, 40), integers().between(1, 9))
                .checkAssert((b, h, steps, dh) -> {
                    Rng r = new Rng(b * 1000 + h * 100 + steps * 10 + dh);
                    // sized up front (reserve) or grown by doubling; past 16-32 keys the scores take the vector path
                    KVCache c = b == 2 ? new KVCache().reserve(2 * steps) : new KVCache();
                    for (int s = 0; s < steps; s++) {
                        int nt = 1 + (s % 3 == 2 ? 1 : 0); // mostly one token, sometimes two (growth across a doubling)
                        Tensor k = Tensor.randn(r, b, h, nt, dh), v = Tensor.randn(r, b, h, nt, dh), q = Tensor.randn(r, b, h, nt, dh);
                        c.append(k, v);
                        for (boolean causal : new boolean[]{true, false}) {
                            Tensor got = c.attend(q, 0.7f, causal);
                            Tensor want = Fused.attention(q, c.keys(), c.values(), causal, null, 0.7f);
                            float[] g = got.data(), w = want.data();
                            for (int i = 0; i < g.length; i++) assertEquals(w[i], g[i], 1e-5f, "element " + i);
                        }
                    }
                });
    }

    @Test
    void mismatchedAppendNamesShapes() {
        KVCache c = new KVCache();
        c.append(Tensor.zeros(1, 2, 1, 4), Tensor.zeros(1, 2, 1, 4));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> c.append(Tensor.zeros(2, 2, 1, 4), Tensor.zeros(2, 2, 1, 4)));
        assertTrue(e.getMessage().contains("separate cache"), e.getMessage());
        assertEquals(1, c.length());
        assertArrayEquals(new int[]{1, 2, 1, 4}, c.keys().shape());
    }
}
