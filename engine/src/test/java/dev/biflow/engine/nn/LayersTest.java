// Linear, LayerNorm, Embedding, MLP, Conv2d, Sequential and the initialisers against double references.
package dev.biflow.engine.nn;

import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import org.junit.jupiter.api.Test;

import java.util.Map;

import static dev.biflow.engine.nn.NnRef.d;
import static org.junit.jupiter.api.Assertions.*;
import static org.quicktheories.QuickTheory.qt;
import static org.quicktheories.generators.SourceDSL.integers;
import static org.quicktheories.generators.SourceDSL.longs;

class LayersTest {
    static void assertClose(double[] want, float[] got, double tol, String what) {
        assertEquals(want.length, got.length, what + ": length");
        double scale = 1;
        for (double w : want) scale = Math.max(scale, Math.abs(w));
        for (int i = 0; i < want.length; i++)
            assertEquals(want[i], got[i], tol * scale, what + "[" + i + "]");
    }

    @Test
    void linearMatchesManualMatmulForAnyLeadingShape() {
        qt().withExamples(40).forAll(integers().between(1, 9), integers().between(1, 9), longs().between(0, 1L << 40))
                .checkAssert((in, out, seed) -> {
                    Rng rng = new Rng(seed);
                    Linear lin = new Linear(in, out, seed % 2 == 0, rng);
                    int b = 1 + (int) (seed % 3), t = 1 + (int) (seed % 4);
                    Tensor x = Tensor.randn(rng, b, t, in);
                    Tensor y = lin.forward(x);
                    assertArrayEquals(new int[]{b, t, out}, y.shape());
                    double[] want = NnRef.linear(d(x.data()), b * t, in, out, d(lin.weight.data()),
                            lin.bias == null ? null : d(lin.bias.data()));
                    assertClose(want, y.data(), 1e-5, "linear");
                    // a 2-D input gives the same rows
                    Tensor y2 = lin.forward(x.reshape(b * t, in));
                    assertArrayEquals(y.data(), y2.data());
                });
    }

    @Test
    void linearWrongWidthIsAClearError() {
        Linear lin = new Linear(3, 2, true, new Rng(1));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> lin.forward(Tensor.zeros(2, 4)));
        assertTrue(e.getMessage().contains("Linear(3 -> 2)") && e.getMessage().contains("(2, 4)"), e.getMessage());
    }

    @Test
    void linearGradientsMatchFiniteDifferences() {
        Rng rng = new Rng(7);
        Linear lin = new Linear(5, 3, true, rng);
        Tensor x = Tensor.randn(rng, 2, 4, 5).requiresGrad(true);
        Tensor r = Tensor.randn(rng, 2, 4, 3);
        lin.forward(x).mul(r).sum().backward();
        Map<String, double[]> p = NnRef.params(lin);
        double[] xd = d(x.data());
        var loss = (java.util.function.ToDoubleFunction<Map<String, double[]>>) q ->
                NnRef.dot(NnRef.linear(xd, 8, 5, 3, q.get("weight"), q.get("bias")), r.data());
        NnRef.checkParamGrad("weight", lin.weight, p, loss, 100, 1e-4, 1e-5);
        NnRef.checkParamGrad("bias", lin.bias, p, loss, 100, 1e-4, 1e-5);
        // the input gradient is r W
        double[] gx = NnRef.linear(d(r.data()), 8, 3, 5, transpose(d(lin.weight.data()), 3, 5), null);
        assertClose(gx, x.gradData(), 1e-5, "dx");
    }

    static double[] transpose(double[] a, int rows, int cols) {
        double[] t = new double[a.length];
        for (int i = 0; i < rows; i++) for (int j = 0; j < cols; j++) t[j * rows + i] = a[i * cols + j];
        return t;
    }

    @Test
    void torchDefaultInitBoundsAndDeterminism() {
        Linear a = new Linear(16, 32, true, new Rng(42)), b = new Linear(16, 32, true, new Rng(42));
        assertArrayEquals(a.weight.data(), b.weight.data(), "same seed, same weights");
        assertArrayEquals(a.bias.data(), b.bias.data());
        double bound = 1 / Math.sqrt(16);
        double max = 0, sumSq = 0;
        for (float v : a.weight.data()) { max = Math.max(max, Math.abs(v)); sumSq += v * v; }
        assertTrue(max <= bound && max > 0.9 * bound, "U(-1/sqrt(in), 1/sqrt(in)), max " + max);
        double var = sumSq / a.weight.numel();
        assertEquals(bound * bound / 3, var, 0.2 * bound * bound / 3, "variance of U(-b, b) is b^2/3");
        for (float v : a.bias.data()) assertTrue(Math.abs(v) <= bound);
        Linear c = new Linear(16, 32, true, new Rng(43));
        assertFalse(java.util.Arrays.equals(a.weight.data(), c.weight.data()));
    }

    @Test
    void otherInitialisers() {
        Rng rng = new Rng(9);
        Tensor t = Tensor.zeros(200, 100);
        Init.xavierUniform(t, rng, 1);
        double a = Math.sqrt(6.0 / 300);
        for (float v : t.data()) assertTrue(Math.abs(v) <= a);
        Init.normal(t, rng, 2, 0.5);
        double m = 0, s = 0;
        for (float v : t.data()) m += v;
        m /= t.numel();
        for (float v : t.data()) s += (v - m) * (v - m);
        assertEquals(2, m, 0.01);
        assertEquals(0.5, Math.sqrt(s / t.numel()), 0.01);
        Init.truncNormal(t, rng, 0, 1, -0.5, 0.5);
        for (float v : t.data()) assertTrue(Math.abs(v) <= 0.5);
        assertArrayEquals(new int[]{3 * 9, 8 * 9}, Init.fans(Tensor.zeros(8, 3, 3, 3)));
        Init.zeros(t);
        for (float v : t.data()) assertEquals(0f, v);
    }

    @Test
    void layerNormMatchesReference() {
        Rng rng = new Rng(2);
        LayerNorm ln = new LayerNorm(6);
        Init.normal(ln.weight, rng, 1, 0.3);
        Init.normal(ln.bias, rng, 0, 0.3);
        Tensor x = Tensor.randn(rng, 2, 3, 6).mul(3f).add(1f);
        assertClose(NnRef.layerNorm(d(x.data()), 6, 6, d(ln.weight.data()), d(ln.bias.data()), 1e-5), ln.forward(x).data(), 1e-5, "ln");
        LayerNorm plain = new LayerNorm(6, 1e-6f, false);
        assertTrue(plain.namedParameters().isEmpty());
        assertClose(NnRef.layerNorm(d(x.data()), 6, 6, null, null, 1e-6), plain.forward(x).data(), 1e-5, "ln no affine");
    }

    @Test
    void embeddingPicksRowsAndScattersGradients() {
        Embedding emb = new Embedding(5, 3, new Rng(4));
        Tensor y = emb.forward(new int[]{4, 0, 4}, 1, 3);
        assertArrayEquals(new int[]{1, 3, 3}, y.shape());
        for (int j = 0; j < 3; j++) assertEquals(emb.weight.get(4, j), y.get(0, 0, j));
        y.sum().backward();
        float[] g = emb.weight.gradData();
        for (int j = 0; j < 3; j++) {
            assertEquals(1f, g[j]);          // row 0 once
            assertEquals(2f, g[4 * 3 + j]);  // row 4 twice
            assertEquals(0f, g[2 * 3 + j]);
        }
    }

    @Test
    void mlpMatchesReferenceAndItsGradients() {
        Rng rng = new Rng(11);
        MLP mlp = new MLP(4, 2, true, rng);
        Init.normal(mlp.norm.weight, rng, 1, 0.2);
        Init.normal(mlp.norm.bias, rng, 0, 0.2);
        Tensor x = Tensor.randn(rng, 2, 3, 4);
        Tensor r = Tensor.randn(rng, 2, 3, 4);
        Tensor y = mlp.forward(x);
        Map<String, double[]> p = NnRef.params(mlp);
        double[] xd = d(x.data());
        assertClose(NnRef.mlp(p, xd, 6, 4, 8, true), y.data(), 1e-5, "mlp");
        y.mul(r).sum().backward();
        var loss = (java.util.function.ToDoubleFunction<Map<String, double[]>>) q -> NnRef.dot(NnRef.mlp(q, xd, 6, 4, 8, true), r.data());
        for (var e : mlp.namedParameters().entrySet())
            NnRef.checkParamGrad(e.getKey(), e.getValue(), p, loss, 40, 1e-3, 1e-5);
    }

    /** Inference applies GELU in place on fc1's output: the same bits as the training path, and the input untouched. */
    @Test
    void mlpInferencePathIsBitIdenticalAndLeavesItsInputAlone() {
        qt().withExamples(20).forAll(integers().between(1, 40), integers().between(1, 5), longs().between(0, 1L << 40)).checkAssert((dim, mult, seed) -> {
            MLP m = new MLP(dim, mult, seed % 2 == 0, new Rng(seed));
            Tensor x = Tensor.randn(new Rng(seed + 1), 2, 3, dim);
            float[] before = x.data().clone();
            float[] train = m.forward(x).data();
            float[] infer;
            try (var ng = dev.biflow.engine.Grad.noGrad()) {
                infer = m.forward(x).data();
            }
            assertArrayEquals(before, x.data(), "the input is not overwritten");
            for (int i = 0; i < train.length; i++)
                assertEquals(Float.floatToRawIntBits(train[i]), Float.floatToRawIntBits(infer[i]), "element " + i + ": " + infer[i] + " vs " + train[i]);
        });
    }

    /** Linear's residual add: without a graph the lowering (the add on the GEMM's tiles), the bits of the explicit add. */
    @Test
    void linearResidualAddIsTheExplicitAdd() {
        Linear l = new Linear(7, 5, true, new Rng(3));
        Tensor x = Tensor.randn(new Rng(4), 2, 3, 7);
        Tensor res = Tensor.randn(new Rng(12), 2, 3, 5);
        float[] addWant;
        Tensor addGot;
        try (var ng = dev.biflow.engine.Grad.noGrad()) {
            addWant = dev.biflow.engine.Ops.add(res, l.forward(x)).data();
            addGot = l.forwardAdd(x, res);
            Tensor wrong = Tensor.randn(new Rng(13), 2, 5, 3);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> l.forwardAdd(x, wrong));
            assertTrue(e.getMessage().contains("residual (2, 5, 3) must have the output's shape (2, 3, 5)"), e.getMessage());
        }
        assertArrayEquals(new int[]{2, 3, 5}, addGot.shape());
        for (int i = 0; i < addWant.length; i++)
            assertEquals(Float.floatToRawIntBits(addWant[i]), Float.floatToRawIntBits(addGot.data()[i]), "res + linear element " + i);
        assertArrayEquals(dev.biflow.engine.Ops.add(res, l.forward(x)).data(), l.forwardAdd(x, res).data(), "with gradients: the plain add");
    }

    /**
     * MLP and MultiHeadAttention's x + f(x): in a no-grad scope (add fused into the last GEMM) the bits of
     * Ops.add(x, f(x)); with gradients recorded, the same graph as that add (gradients equal).
     */
    @Test
    void residualBlocksMatchAnExplicitAdd() {
        Rng rng = new Rng(21);
        MLP mlp = new MLP(16, 4, true, rng);
        MultiHeadAttention att = MultiHeadAttention.withHeadDim(16, 8, false, true, rng);
        Tensor x = Tensor.randn(rng, 3, 7, 16);
        for (int which = 0; which < 2; which++) {
            java.util.function.Function<Tensor, Tensor> f = which == 0 ? mlp::forward : att::forward;
            java.util.function.Function<Tensor, Tensor> fAdd = which == 0 ? mlp::forwardAdd : att::forwardAdd;
            String name = which == 0 ? "MLP" : "MultiHeadAttention";
            try (var ng = dev.biflow.engine.Grad.noGrad()) {
                float[] want = dev.biflow.engine.Ops.add(x, f.apply(x)).data(), got = fAdd.apply(x).data();
                for (int i = 0; i < want.length; i++)
                    assertEquals(Float.floatToRawIntBits(want[i]), Float.floatToRawIntBits(got[i]), name + " no-grad element " + i);
            }
            Tensor xg = x.detach().requiresGrad(true);
            fAdd.apply(xg).sum().backward();
            float[] gFused = xg.grad().data().clone();
            Tensor xh = x.detach().requiresGrad(true);
            dev.biflow.engine.Ops.add(xh, f.apply(xh)).sum().backward();
            assertArrayEquals(xh.grad().data(), gFused, name + ": the input's gradient");
        }
        // adaLN-Zero's gated form: residual + gate * f(h), gate (B, 1, D)
        Tensor h = Tensor.randn(rng, 3, 7, 16), gate = Tensor.randn(rng, 3, 1, 16);
        try (var ng = dev.biflow.engine.Grad.noGrad()) {
            float[][] want = {dev.biflow.engine.Ops.add(x, dev.biflow.engine.Ops.mul(gate, mlp.forward(h))).data(),
                    dev.biflow.engine.Ops.add(x, dev.biflow.engine.Ops.mul(gate, att.forward(h))).data()};
            float[][] got = {mlp.forwardAdd(h, x, gate).data(), att.forwardAdd(h, x, gate).data()};
            for (int w = 0; w < 2; w++)
                for (int i = 0; i < want[w].length; i++)
                    assertEquals(Float.floatToRawIntBits(want[w][i]), Float.floatToRawIntBits(got[w][i]), (w == 0 ? "MLP" : "attention") + " gated element " + i);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> mlp.forwardAdd(h, x, Tensor.randn(new Rng(1), 1, 1, 16)));
            assertTrue(e.getMessage().contains("one row of 16 per example"), e.getMessage());
        }
        Tensor gg = gate.detach().requiresGrad(true);
        mlp.forwardAdd(h, x, gg).sum().backward();
        float[] gFused = gg.grad().data().clone();
        Tensor gh = gate.detach().requiresGrad(true);
        dev.biflow.engine.Ops.add(x, dev.biflow.engine.Ops.mul(gh, mlp.forward(h))).sum().backward();
        assertArrayEquals(gh.grad().data(), gFused, "the gate's gradient");
    }

    @Test
    void sequentialAppliesInOrder() {
        Rng rng = new Rng(6);
        Linear a = new Linear(3, 4, true, rng), b = new Linear(4, 2, false, rng);
        Sequential s = new Sequential(a, Activation.relu(), b);
        Tensor x = Tensor.randn(rng, 5, 3);
        assertArrayEquals(b.forward(a.forward(x).relu()).data(), s.forward(x).data());
        assertEquals(3, s.size());
        assertEquals(java.util.List.of("0.weight", "0.bias", "2.weight"), new java.util.ArrayList<>(s.stateDict().keySet()));
    }

    @Test
    void conv2dMatchesDirectSum() {
        Rng rng = new Rng(8);
        Conv2d conv = new Conv2d(2, 3, 3, 2, 1, true, rng);
        assertArrayEquals(new int[]{3, 2, 3, 3}, conv.weight.shape());
        Tensor x = Tensor.randn(rng, 2, 2, 5, 5);
        Tensor y = conv.forward(x);
        assertArrayEquals(new int[]{2, 3, 3, 3}, y.shape());
        for (int n = 0; n < 2; n++)
            for (int o = 0; o < 3; o++)
                for (int i = 0; i < 3; i++)
                    for (int j = 0; j < 3; j++) {
                        double s = conv.bias.get(o);
                        for (int c = 0; c < 2; c++)
                            for (int u = 0; u < 3; u++)
                                for (int v = 0; v < 3; v++) {
                                    int yy = i * 2 - 1 + u, xx = j * 2 - 1 + v;
                                    if (yy < 0 || yy >= 5 || xx < 0 || xx >= 5) continue;
                                    s += conv.weight.get(o, c, u, v) * x.get(n, c, yy, xx);
                                }
                        assertEquals(s, y.get(n, o, i, j), 1e-5);
                    }
        double bound = 1 / Math.sqrt(2 * 9);
        for (float v : conv.weight.data()) assertTrue(Math.abs(v) <= bound);
    }
}
