// MultiHeadAttention: the qkv layout and maths against a double reference, causality, the KV cache, gradients.
package dev.biflow.engine.nn;

import dev.biflow.engine.Grad;
import dev.biflow.engine.Ops;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import org.junit.jupiter.api.Test;

import java.util.Map;
import java.util.function.ToDoubleFunction;

import static dev.biflow.engine.nn.LayersTest.assertClose;
import static dev.biflow.engine.nn.NnRef.d;
import static org.junit.jupiter.api.Assertions.*;
import static org.quicktheories.QuickTheory.qt;
import static org.quicktheories.generators.SourceDSL.integers;
import static org.quicktheories.generators.SourceDSL.longs;

class MultiHeadAttentionTest {
    /** Larger-than-default weights so the softmax is far from uniform and layout errors show. */
    static MultiHeadAttention make(int dim, int heads, boolean causal, boolean preNorm, long seed) {
        Rng rng = new Rng(seed);
        MultiHeadAttention m = new MultiHeadAttention(dim, heads, causal, preNorm, rng);
        Init.normal(m.qkv.weight, rng, 0, 0.5);
        Init.normal(m.qkv.bias, rng, 0, 0.2);
        if (preNorm) {
            Init.normal(m.norm.weight, rng, 1, 0.2);
            Init.normal(m.norm.bias, rng, 0, 0.2);
        }
        return m;
    }

    @Test
    void matchesDoubleReferenceForAnyShape() {
        qt().withExamples(30).forAll(integers().between(1, 3), integers().between(1, 6), longs().between(0, 1L << 40))
                .checkAssert((heads, t, seed) -> {
                    int dim = heads * (2 + (int) (seed % 3));
                    boolean causal = seed % 2 == 0, pre = seed % 3 != 0;
                    MultiHeadAttention m = make(dim, heads, causal, pre, seed);
                    Tensor x = Tensor.randn(new Rng(seed + 1), 2, t, dim);
                    double[] want = NnRef.mha(NnRef.params(m), d(x.data()), 2, t, dim, heads, causal, null, 1, pre);
                    assertClose(want, m.forward(x).data(), 2e-5, "split scaling");
                    m.scaling(MultiHeadAttention.Scaling.FUSED);
                    assertClose(want, m.forward(x).data(), 2e-5, "fused scaling");
                });
    }

    /**
     * Inference (no grad, no cache) reads the heads inside the qkv projection instead of splitting and
     * permuting them: the output must be the training path's, bit for bit, for causal and bidirectional
     * attention, both scalings, pre-norm or not, a temperature, T across the 64-row causal blocks, and a mask.
     */
    @Test
    void inferencePathIsBitIdenticalToTheTrainingPath() {
        qt().withExamples(40).forAll(integers().between(1, 4), integers().between(1, 130), longs().between(0, 1L << 40))
                .checkAssert((heads, t, seed) -> {
                    int dim = heads * (1 + (int) (seed % 7));
                    boolean causal = seed % 2 == 0, pre = seed % 3 != 0;
                    MultiHeadAttention m = make(dim, heads, causal, pre, seed);
                    if (seed % 5 == 0) m.scaling(MultiHeadAttention.Scaling.FUSED);
                    float temp = seed % 4 == 0 ? 1f : 0.6f;
                    Tensor x = Tensor.randn(new Rng(seed + 1), 3, t, dim);
                    Tensor mask = null;
                    if (seed % 11 == 0) {
                        float[] mk = new float[t * t];
                        for (int i = 0; i < mk.length; i++) mk[i] = (i * 7 + seed) % 3 == 0 ? 0 : 1;
                        mask = Tensor.of(mk, t, t);
                    }
                    float[] train = m.forward(x, mask, temp, null).data(); // parameters need grad: the split path
                    float[] infer;
                    try (var ng = Grad.noGrad()) {
                        infer = m.forward(x, mask, temp, null).data();
                    }
                    assertEquals(train.length, infer.length);
                    for (int i = 0; i < train.length; i++)
                        if (Float.floatToRawIntBits(train[i]) != Float.floatToRawIntBits(infer[i]))
                            fail("heads " + heads + ", T " + t + ", dim " + dim + ", causal " + causal + ", " + m.scaling()
                                    + (mask != null ? ", masked" : "") + ": element " + i + " is " + infer[i] + " in inference, " + train[i] + " in training");
                });
    }

    /**
     * Training reads and writes the heads inside the packed qkv projection (Fused.selfAttentionPacked); with a mask the
     * layer takes the split / scale / permute composition. An all-ones mask blocks nothing, so the two must agree bit
     * for bit: the output, the input's gradient and every parameter's gradient, on 1 and 2 threads.
     */
    @Test
    void packedTrainingPathIsBitIdenticalToTheComposedOneForwardAndBackward() {
        int saved = dev.biflow.engine.kernels.Parallel.threads();
        try {
            qt().withExamples(30).forAll(integers().between(1, 4), integers().between(1, 70), longs().between(0, 1L << 40))
                    .checkAssert((heads, t, seed) -> {
                        dev.biflow.engine.kernels.Parallel.setThreads(seed % 2 == 0 ? 1 : 2);
                        int dim = heads * (1 + (int) (seed % 7));
                        boolean causal = seed % 2 == 0 || seed % 3 == 0, pre = seed % 3 != 0;
                        MultiHeadAttention m = make(dim, heads, causal, pre, seed);
                        if (seed % 5 == 0) m.scaling(MultiHeadAttention.Scaling.FUSED);
                        float temp = seed % 4 == 0 ? 1f : 0.6f;
                        Tensor ones = Tensor.ones(t, t);
                        Tensor seedGrad = Tensor.randn(new Rng(seed + 2), 2, t, dim);
                        float[][] got = new float[2][];
                        for (int k = 0; k < 2; k++) {
                            Tensor x = Tensor.randn(new Rng(seed + 1), 2, t, dim).requiresGrad(true);
                            m.zeroGrad();
                            Tensor y = m.forward(x, k == 0 ? null : ones, temp, null);
                            y.backward(seedGrad);
                            int n = y.numel() + x.numel();
                            for (Tensor p : m.parameters()) n += p.numel();
                            float[] all = new float[n];
                            int o = 0;
                            System.arraycopy(y.data(), 0, all, o, y.numel()); o += y.numel();
                            System.arraycopy(x.gradData(), 0, all, o, x.numel()); o += x.numel();
                            for (Tensor p : m.parameters()) { System.arraycopy(p.gradData(), 0, all, o, p.numel()); o += p.numel(); }
                            got[k] = all;
                        }
                        for (int i = 0; i < got[0].length; i++)
                            if (Float.floatToRawIntBits(got[0][i]) != Float.floatToRawIntBits(got[1][i]))
                                fail("heads " + heads + ", T " + t + ", dim " + dim + ", causal " + causal + ", " + m.scaling() + ": value " + i
                                        + " (output, then d/dx, then parameter gradients) is " + got[0][i] + " packed, " + got[1][i] + " composed");
                    });
        } finally {
            dev.biflow.engine.kernels.Parallel.setThreads(saved);
        }
    }

    @Test
    void maskAndTemperature() {
        MultiHeadAttention m = make(8, 2, true, true, 3);
        int t = 5;
        Tensor x = Tensor.randn(new Rng(4), 2, t, 8);
        float[] mk = new float[t * t];
        for (int i = 0; i < t; i++) for (int j = 0; j < t; j++) mk[i * t + j] = (i + j) % 3 == 0 || i == j ? 1 : 0;
        Tensor mask = Tensor.of(mk, t, t);
        double[] md = d(mk);
        double[] want = NnRef.mha(NnRef.params(m), d(x.data()), 2, t, 8, 2, true, md, 1.7, true);
        assertClose(want, m.forward(x, mask, 1.7f, null).data(), 2e-5, "mask + temperature");
        m.scaling(MultiHeadAttention.Scaling.FUSED);
        assertClose(want, m.forward(x, mask, 1.7f, null).data(), 2e-5, "mask + temperature, fused scaling");
    }

    @Test
    void causalOutputIgnoresLaterTokens() {
        qt().withExamples(20).forAll(integers().between(2, 7), longs().between(0, 1L << 40)).checkAssert((t, seed) -> {
            MultiHeadAttention m = make(8, 2, true, true, seed);
            Rng rng = new Rng(seed + 7);
            Tensor x = Tensor.randn(rng, 2, t, 8);
            int cut = (int) (seed % (t - 1)) + 1; // tokens >= cut change
            float[] x2d = x.toArray();
            for (int b = 0; b < 2; b++)
                for (int i = cut; i < t; i++)
                    for (int j = 0; j < 8; j++) x2d[(b * t + i) * 8 + j] += (float) rng.nextGaussian() * 3;
            Tensor y1 = m.forward(x), y2 = m.forward(Tensor.of(x2d, 2, t, 8));
            for (int b = 0; b < 2; b++)
                for (int i = 0; i < cut; i++)
                    for (int j = 0; j < 8; j++)
                        assertEquals(y1.get(b, i, j), y2.get(b, i, j), "token " + i + " saw a later token");
            boolean changed = false;
            for (int j = 0; j < 8; j++) changed |= y1.get(0, t - 1, j) != y2.get(0, t - 1, j);
            assertTrue(changed, "the changed tokens' own outputs change");
        });
    }

    @Test
    void nonCausalSeesEverything() {
        MultiHeadAttention m = make(8, 2, false, false, 5);
        Tensor x = Tensor.randn(new Rng(1), 1, 4, 8);
        float[] x2 = x.toArray();
        x2[3 * 8] += 2;
        assertNotEquals(m.forward(x).get(0, 0, 0), m.forward(Tensor.of(x2, 1, 4, 8)).get(0, 0, 0));
    }

    @Test
    void kvCacheDecodingEqualsFullCausalForward() throws Exception {
        for (var scaling : MultiHeadAttention.Scaling.values()) {
            MultiHeadAttention m = make(12, 3, true, true, 21).scaling(scaling);
            int t = 7;
            Tensor x = Tensor.randn(new Rng(22), 2, t, 12);
            Tensor full = m.forward(x, null, 1.3f, null);
            try (var ng = Grad.noGrad()) {
                // one token at a time
                KVCache cache = new KVCache();
                for (int i = 0; i < t; i++) {
                    Tensor yi = m.forward(Ops.narrow(x, 1, i, 1), null, 1.3f, cache);
                    assertEquals(i + 1, cache.length());
                    assertClose(d(Ops.narrow(full, 1, i, 1).data()), yi.data(), 1e-5, scaling + " token " + i);
                }
                // uneven chunks (3, then 1, then 3) give the same rows
                KVCache c2 = new KVCache();
                int[] chunks = {3, 1, 3};
                int at = 0;
                for (int len : chunks) {
                    Tensor y = m.forward(Ops.narrow(x, 1, at, len), null, 1.3f, c2);
                    assertClose(d(Ops.narrow(full, 1, at, len).data()), y.data(), 1e-5, scaling + " chunk at " + at);
                    at += len;
                }
                c2.clear();
                assertEquals(0, c2.length());
            }
        }
    }

    @Test
    void separateCachesForConditionalAndUnconditionalPasses() throws Exception {
        MultiHeadAttention m = make(8, 2, true, false, 31);
        Tensor xc = Tensor.randn(new Rng(1), 1, 4, 8), xu = Tensor.randn(new Rng(2), 1, 4, 8);
        Tensor fc = m.forward(xc), fu = m.forward(xu);
        try (var ng = Grad.noGrad()) {
            KVCache cond = new KVCache(), uncond = new KVCache();
            for (int i = 0; i < 4; i++) { // interleaved, as a guided sampler does
                Tensor yc = m.forward(Ops.narrow(xc, 1, i, 1), null, 1f, cond);
                Tensor yu = m.forward(Ops.narrow(xu, 1, i, 1), null, 1f, uncond);
                assertClose(d(Ops.narrow(fc, 1, i, 1).data()), yc.data(), 1e-5, "cond " + i);
                assertClose(d(Ops.narrow(fu, 1, i, 1).data()), yu.data(), 1e-5, "uncond " + i);
            }
            KVCache wrong = new KVCache();
            m.forward(Tensor.zeros(2, 1, 8), null, 1f, wrong);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> m.forward(Tensor.zeros(1, 1, 8), null, 1f, wrong));
            assertTrue(e.getMessage().contains("separate cache"), e.getMessage());
        }
    }

    @Test
    void parameterGradientsMatchFiniteDifferences() {
        int b = 2, t = 4, dim = 6, heads = 2;
        MultiHeadAttention m = make(dim, heads, true, true, 41);
        Rng rng = new Rng(42);
        Tensor x = Tensor.randn(rng, b, t, dim);
        Tensor r = Tensor.randn(rng, b, t, dim);
        float[] mk = new float[t * t];
        java.util.Arrays.fill(mk, 1f);
        mk[3 * t + 1] = 0; // one blocked pair, to check the mask path too
        m.forward(x, Tensor.of(mk, t, t), 0.8f, null).mul(r).sum().backward();
        Map<String, double[]> p = NnRef.params(m);
        double[] xd = d(x.data()), md = d(mk);
        ToDoubleFunction<Map<String, double[]>> loss = q -> NnRef.dot(NnRef.mha(q, xd, b, t, dim, heads, true, md, 0.8, true), r.data());
        for (var e : m.namedParameters().entrySet())
            NnRef.checkParamGrad(e.getKey(), e.getValue(), p, loss, 60, 1e-3, 2e-5);
    }

    @Test
    void headDimConstructorAndErrors() {
        MultiHeadAttention m = MultiHeadAttention.withHeadDim(128, 64, true, true, new Rng(1));
        assertEquals(2, m.heads);
        assertEquals(64, m.headDim);
        assertThrows(IllegalArgumentException.class, () -> new MultiHeadAttention(10, 3, true));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> m.forward(Tensor.zeros(1, 2, 64)));
        assertTrue(e.getMessage().contains("128"), e.getMessage());
    }
}
