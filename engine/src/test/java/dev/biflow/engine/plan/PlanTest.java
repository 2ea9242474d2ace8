// Plan versus forward: each layer's lower gives the bits of its forward, with and without a gradient recorded, and bad plans fail at build.
package dev.biflow.engine.plan;

import dev.biflow.engine.Arena;
import dev.biflow.engine.Grad;
import dev.biflow.engine.Ops;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.kernels.Parallel;
import dev.biflow.engine.nn.Activation;
import dev.biflow.engine.nn.LayerNorm;
import dev.biflow.engine.nn.Linear;
import dev.biflow.engine.nn.MLP;
import dev.biflow.engine.nn.MultiHeadAttention;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.quicktheories.QuickTheory.qt;
import static org.quicktheories.generators.SourceDSL.integers;
import static org.quicktheories.generators.SourceDSL.longs;

class PlanTest {

    /** A transformer layer's two residual blocks, lowered, against forward with a graph (training) and without. */
    @Test
    void loweredLayersGiveTheBitsOfForward() {
        qt().withExamples(40).forAll(integers().between(1, 3), integers().between(1, 9), integers().between(0, 7), longs().all())
                .checkAssert((b, t, kind, seed) -> {
                    Rng rng = new Rng(seed);
                    int heads = 1 + (int) (seed & 1), dh = 3 + (int) ((seed >>> 1) & 7), d = heads * dh;
                    boolean preNorm = (kind & 1) != 0, causal = (kind & 2) != 0, fused = (kind & 4) != 0;
                    MultiHeadAttention att = new MultiHeadAttention(d, heads, causal, preNorm, rng);
                    if (fused) att.scaling(MultiHeadAttention.Scaling.FUSED);
                    MLP mlp = new MLP(d, 4 * d, d, preNorm, fused ? Activation.Kind.SILU : Activation.Kind.GELU, rng);
                    Tensor x = Tensor.randn(rng, b, t, d), h = Tensor.randn(rng, b, t, d), gate = Tensor.randn(rng, b, 1, d);
                    for (boolean withGrad : new boolean[]{true, false}) {
                        Tensor[] want = new Tensor[4];
                        Runnable fwd = () -> {
                            want[0] = att.forward(x);
                            want[1] = Ops.add(x, Ops.mul(gate, att.forward(h)));
                            want[2] = mlp.forward(x);
                            want[3] = Ops.add(x, Ops.mul(gate, mlp.forward(h)));
                        };
                        if (withGrad) fwd.run();
                        else try (var ng = Grad.noGrad()) { fwd.run(); }
                        PlanBuilder p = new PlanBuilder(b);
                        Region rx = p.alloc(b * t, d), rh = p.alloc(b * t, d), rg = p.alloc(b, d);
                        Region[] out = {p.alloc(b * t, d), p.alloc(b * t, d), p.alloc(b * t, d), p.alloc(b * t, d)};
                        att.lower(p, rx, out[0]);
                        att.lower(p, rh, out[1], new PlanOp.Epilogue.GatedAdd(rx, rg));
                        mlp.lower(p, rx, out[2]);
                        mlp.lower(p, rh, out[3], new PlanOp.Epilogue.GatedAdd(rx, rg));
                        float[][] got = run(p.build(), new Region[]{rx, rh, rg}, new Tensor[]{x, h, gate}, out);
                        for (int i = 0; i < 4; i++)
                            assertArrayEquals(want[i].data(), got[i], "output " + i + (withGrad ? " vs training forward" : " vs inference forward"));
                    }
                });
    }

    /** Linear (with and without bias, GELU epilogue), LayerNorm (affine or not): the bits of forward, on 1 and 2 threads. */
    @Test
    void linearAndLayerNormGiveTheBitsOfForward() {
        int before = Parallel.threads();
        try {
            for (int threads : new int[]{1, 2}) {
                Parallel.setThreads(threads);
                Rng rng = new Rng(threads);
                Linear l = new Linear(37, 19, true, rng), nb = new Linear(19, 5, false, rng);
                LayerNorm ln = new LayerNorm(37, 1e-5f, true), plain = new LayerNorm(37, 1e-6f, false);
                Tensor x = Tensor.randn(rng, 23, 37);
                rng.fillNormal(ln.weight.data());
                PlanBuilder p = new PlanBuilder(1);
                Region rx = p.alloc(23, 37), a = p.alloc(23, 19), g = p.alloc(23, 19), c = p.alloc(23, 5), n1 = p.alloc(23, 37), n2 = p.alloc(23, 37);
                l.lower(p, rx, a);
                l.lower(p, rx, g, PlanOp.Epilogue.GELU);
                nb.lower(p, a, c);
                ln.lower(p, rx, n1);
                plain.lower(p, rx, n2);
                float[][] got = run(p.build(), new Region[]{rx}, new Tensor[]{x}, new Region[]{a, g, c, n1, n2});
                Tensor y = l.forward(x);
                assertArrayEquals(y.data(), got[0]);
                assertArrayEquals(Ops.gelu(y).data(), got[1]);
                assertArrayEquals(nb.forward(y).data(), got[2]);
                assertArrayEquals(ln.forward(x).data(), got[3]);
                assertArrayEquals(plain.forward(x).data(), got[4]);
            }
        } finally {
            Parallel.setThreads(before);
        }
    }

    @Test
    void wrongPlansFailAtBuildNamingTheOp() {
        Linear l = new Linear(4, 3, true, new Rng(1));
        PlanBuilder p = new PlanBuilder(2);
        Region x = p.alloc(6, 4), y = p.alloc(6, 3), wrong = p.alloc(6, 2);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> l.lower(p, x, wrong));
        assertTrue(e.getMessage().contains("Linear") && e.getMessage().contains("(out, in)"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> l.lower(p, x, y, PlanOp.Epilogue.add(y)));
        assertTrue(e.getMessage().contains("overlap"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> l.lower(p, x, Region.of(1000, 6, 3)));
        assertTrue(e.getMessage().contains("outside the allocated arena"), e.getMessage());
        MultiHeadAttention att = new MultiHeadAttention(4, 2, true, false, new Rng(2));
        Region odd = p.alloc(5, 4), oddOut = p.alloc(5, 4);
        e = assertThrows(IllegalArgumentException.class, () -> att.lower(p, odd, oddOut));
        assertTrue(e.getMessage().contains("2 examples"), e.getMessage());
        assertThrows(UnsupportedOperationException.class, () -> new MLP(4, 8, 4, false, Activation.Kind.RELU, new Rng(3)).lower(p, x, p.alloc(6, 4)));
    }

    /** Writes the inputs into an arena, runs the plan inside an Arena scope, returns copies of the outputs. */
    static float[][] run(Plan plan, Region[] in, Tensor[] values, Region[] out) {
        try (Arena scope = Arena.open()) {
            float[] a = Arena.floats(plan.size());
            for (int i = 0; i < in.length; i++) write(a, in[i], values[i].data());
            CpuExecutor.run(plan, a);
            float[][] got = new float[out.length][];
            for (int i = 0; i < out.length; i++) got[i] = read(a, out[i]);
            return got;
        }
    }

    static void write(float[] a, Region r, float[] v) {
        for (int i = 0; i < r.rows(); i++) System.arraycopy(v, i * r.cols(), a, r.row(i), r.cols());
    }

    static float[] read(float[] a, Region r) {
        float[] v = new float[r.rows() * r.cols()];
        for (int i = 0; i < r.rows(); i++) System.arraycopy(a, r.row(i), v, i * r.cols(), r.cols());
        return v;
    }
}
