// CouplingFlow: exact inverse, brute-force log-determinant, masks, checkpoints, and a short two-moons training run.
package dev.biflow.flow.model;

import dev.biflow.engine.Grad;
import dev.biflow.engine.Ops;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.nn.Activation;
import dev.biflow.engine.optim.AdamW;
import dev.biflow.flow.data.Toy2D;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.quicktheories.core.Gen;

import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;

import static org.junit.jupiter.api.Assertions.*;
import static org.quicktheories.QuickTheory.qt;
import static org.quicktheories.generators.Generate.enumValues;
import static org.quicktheories.generators.Generate.pick;
import static org.quicktheories.generators.SourceDSL.doubles;
import static org.quicktheories.generators.SourceDSL.integers;
import static org.quicktheories.generators.SourceDSL.longs;

class CouplingFlowTest {

    /** A random small flow with every parameter randomised (the zero-initialised output layers would make it the identity). */
    record Case(CouplingFlow.Config cfg, long seed) {
        CouplingFlow build() {
            Rng rng = new Rng(seed);
            CouplingFlow f = new CouplingFlow(cfg, rng);
            TarFlowPropertiesTest.randomize(f, rng, 0.3, 0.5);
            return f;
        }

        @Override
        public String toString() { return cfg.toJson() + " seed=" + seed; }
    }

    static Gen<Case> cases(int maxDim) {
        Gen<CouplingFlow.Config> cfgs = integers().between(2, maxDim).zip(integers().between(1, 4), integers().between(4, 16),
                enumValues(CouplingFlow.Mask.class), pick(List.of(Activation.Kind.SILU, Activation.Kind.GELU, Activation.Kind.TANH)),
                (d, l, h, m, act) -> new CouplingFlow.Config(d, l, h, m, act, NormControl.NONE, 0f));
        return cfgs.zip(enumValues(NormControl.class), doubles().between(0.5, 3), longs().between(0, 1L << 40),
                (c, nc, clip, seed) -> new Case(new CouplingFlow.Config(c.dim(), c.numLayers(), c.hidden(), c.mask(), c.activation(),
                        nc, nc == NormControl.NONE ? 0f : clip.floatValue()), seed));
    }

    /**
     * True when a flow without norm control is too ill-conditioned at x for float32: a state beyond
     * 100 or a log-scale |a| beyond 6 in some layer (random unbounded conditioners feed each
     * other's growth: seen z = -inf from x ~ N(0, 1) in three layers). Norm-controlled flows are never
     * skipped; properties that skip assert they skipped under half their examples.
     */
    static boolean ranAway(CouplingFlow f, Tensor x) {
        if (f.config.normControl() != NormControl.NONE) return false;
        try (var ng = Grad.noGrad()) {
            Tensor h = x;
            for (CouplingFlow.Layer layer : f.layers) {
                if (!(maxAbs(h) <= 100)) return true;
                Tensor a = layer.params(Ops.indexSelect(h, 1, layer.cond))[0];
                if (!(maxAbs(a) <= 6)) return true;
                h = layer.forward(h);
            }
            return !(maxAbs(h) <= 100);
        }
    }

    /** max |v|, or infinity if any value is not finite. */
    static float maxAbs(Tensor a) {
        float m = 0;
        for (float v : a.data()) m = Float.isFinite(v) ? Math.max(m, Math.abs(v)) : Float.POSITIVE_INFINITY;
        return m;
    }

    static void assertClose(Tensor want, Tensor got, double rel, String what) {
        assertArrayEquals(want.shape(), got.shape(), what + ": shape");
        for (int i = 0; i < want.numel(); i++) {
            double w = want.data()[i], g = got.data()[i];
            assertTrue(Math.abs(w - g) <= rel * (1 + Math.abs(w)), what + "[" + i + "]: want " + w + ", got " + g);
        }
    }

    @Test
    void reverseInvertsForwardAndForwardInvertsReverse() {
        AtomicInteger skipped = new AtomicInteger();
        int n = TarFlowPropertiesTest.examples(30);
        qt().withExamples(n).withShrinkCycles(TarFlowPropertiesTest.SHRINK).forAll(cases(9)).checkAssert(c -> {
            CouplingFlow f = c.build();
            Rng rng = new Rng(c.seed() + 1);
            Tensor x = Tensor.randn(rng, 5, c.cfg().dim());
            Tensor z = Tensor.randn(rng, 5, c.cfg().dim());
            Tensor xs = f.reverse(z);
            if (ranAway(f, x) || ranAway(f, xs)) { skipped.incrementAndGet(); return; }
            CouplingFlow.Forward fw = f.forwardWithLogdet(x);
            assertEquals(c.cfg().numLayers(), fw.outputs().size());
            assertSame(fw.z(), fw.outputs().get(fw.outputs().size() - 1));
            assertArrayEquals(fw.z().data(), f.forward(x).data(), "forward(x) is forwardWithLogdet(x).z");
            assertClose(x, f.reverse(fw.z()), 2e-5, "reverse(forward(x))");
            assertClose(z, f.forward(xs), 2e-5, "forward(reverse(z))");
        });
        TarFlowPropertiesTest.assertFewSkipped(skipped, n, "coupling round trips");
    }

    @Test
    void logdetEqualsLogAbsDetOfTheBruteForceJacobian() {
        AtomicInteger skipped = new AtomicInteger();
        int n = TarFlowPropertiesTest.examples(30);
        qt().withExamples(n).withShrinkCycles(TarFlowPropertiesTest.SHRINK).forAll(cases(8)).checkAssert(c -> {
            CouplingFlow f = c.build();
            int d = c.cfg().dim();
            Tensor x = Tensor.randn(new Rng(c.seed() + 2), 1, d);
            if (ranAway(f, x)) { skipped.incrementAndGet(); return; }
            double[][] jac = TarFlowPropertiesTest.jacobian(t -> f.forward(t), x);
            double want = TarFlowPropertiesTest.logAbsDet(jac);
            double got = f.forwardWithLogdet(x).logdet().item();
            assertEquals(want, got, 1e-4 * (1 + Math.abs(want)), "log|det| of " + c);
        });
        TarFlowPropertiesTest.assertFewSkipped(skipped, n, "coupling log-det");
    }

    @Test
    void eachLayerPassesItsConditioningCoordinatesThroughBitExactly() {
        qt().withExamples(TarFlowPropertiesTest.examples(20)).withShrinkCycles(TarFlowPropertiesTest.SHRINK).forAll(cases(9)).checkAssert(c -> {
            CouplingFlow f = c.build();
            Tensor x = Tensor.randn(new Rng(c.seed() + 3), 4, c.cfg().dim());
            int d = c.cfg().dim();
            Tensor h = x;
            boolean[] everTransformed = new boolean[d];
            for (CouplingFlow.Layer layer : f.layers) {
                assertEquals(d, layer.cond.length + layer.trans.length);
                assertTrue(layer.cond.length >= 1 && layer.trans.length >= 1, "both parts non-empty");
                Tensor out = layer.forward(h);
                for (int s = 0; s < 4; s++)
                    for (int j : layer.cond) assertEquals(h.get(s, j), out.get(s, j), 0f, "coordinate " + j + " is conditioning");
                for (int j : layer.trans) everTransformed[j] = true;
                h = out;
            }
            if (c.cfg().numLayers() >= 2)
                for (int j = 0; j < d; j++) assertTrue(everTransformed[j], "coordinate " + j + " is transformed by some layer");
        });
    }

    @Test
    void untrainedFlowIsTheIdentity() {
        CouplingFlow f = new CouplingFlow(CouplingFlow.Config.of(3, 4, 8), new Rng(1));
        Tensor x = Tensor.randn(new Rng(2), 6, 3);
        CouplingFlow.Forward fw = f.forwardWithLogdet(x);
        assertArrayEquals(x.data(), fw.z().data());
        for (float v : fw.logdet().data()) assertEquals(0.0, v, 0.0);
        // so the NLL is the standard normal's: 0.5 (mean x^2 + log 2 pi)
        double want = 0.5 * (Ops.mean(Ops.square(x)).item() + Math.log(2 * Math.PI));
        assertEquals(want, f.loss(x).item(), 1e-5);
    }

    @Test
    void logProbIsNormalisedOnTwoDimensions() {
        // integrate p(x) over a grid: a density must integrate to 1 whatever the weights
        CouplingFlow f = new CouplingFlow(new CouplingFlow.Config(2, 4, 8, CouplingFlow.Mask.ALTERNATE, Activation.Kind.TANH, NormControl.SOFT, 1f), new Rng(3));
        TarFlowPropertiesTest.randomize(f, new Rng(4), 0.3, 0.5);
        int n = 241;
        double lo = -12, step = 24.0 / (n - 1);
        float[] pts = new float[2 * n * n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                pts[2 * (i * n + j)] = (float) (lo + i * step);
                pts[2 * (i * n + j) + 1] = (float) (lo + j * step);
            }
        Tensor lp;
        try (var ng = Grad.noGrad()) {
            lp = f.logProb(Tensor.of(pts, n * n, 2));
        }
        double mass = 0;
        for (float v : lp.data()) mass += Math.exp(v) * step * step;
        assertEquals(1.0, mass, 0.02, "integral of p over [-12, 12]^2");
    }

    @Test
    void parameterNamesFollowTheModuleTree() {
        CouplingFlow f = new CouplingFlow(CouplingFlow.Config.of(2, 2, 16), new Rng(0));
        assertEquals(java.util.List.of(
                "layers.0.net.main.0.weight", "layers.0.net.main.0.bias", "layers.0.net.main.2.weight", "layers.0.net.main.2.bias",
                "layers.1.net.main.0.weight", "layers.1.net.main.0.bias", "layers.1.net.main.2.weight", "layers.1.net.main.2.bias"),
                java.util.List.copyOf(f.namedParameters().keySet()));
        assertArrayEquals(new int[]{16, 1}, f.namedParameters().get("layers.0.net.main.0.weight").shape());
        assertArrayEquals(new int[]{2, 16}, f.namedParameters().get("layers.0.net.main.2.weight").shape());
    }

    @Test
    void checkpointRoundTripsAndRefusesOtherKinds(@TempDir Path tmp) throws Exception {
        CouplingFlow f = new CouplingFlow(new CouplingFlow.Config(5, 3, 7, CouplingFlow.Mask.HALVES, Activation.Kind.GELU, NormControl.HARD, 2.5f), new Rng(5));
        TarFlowPropertiesTest.randomize(f, new Rng(6), 0.3, 0.5);
        Path p = tmp.resolve("c.safetensors");
        CouplingCheckpoints.save(f, p, Map.of("step", "7"));
        CouplingFlow back = CouplingCheckpoints.load(p);
        assertEquals(f.config, back.config);
        Tensor x = Tensor.randn(new Rng(7), 3, 5);
        assertArrayEquals(f.forward(x).data(), back.forward(x).data());

        var tar = new TarFlow(TarFlowConfig.tarflow(1, 4, 2, 8, 1, 1, 0), new Rng(0));
        Path tp = tmp.resolve("t.safetensors");
        Checkpoints.save(tar, tp, null);
        var e = assertThrows(IllegalArgumentException.class, () -> CouplingCheckpoints.load(tp));
        assertTrue(e.getMessage().contains("'tarflow'"), e.getMessage());
        var e2 = assertThrows(IllegalArgumentException.class, () -> Checkpoints.loadTarFlow(p));
        assertTrue(e2.getMessage().contains("'coupling'"), e2.getMessage());
    }

    @Test
    void badInputsAreRejectedWithAMessage() {
        var e = assertThrows(IllegalArgumentException.class, () -> CouplingFlow.Config.of(1, 2, 8));
        assertTrue(e.getMessage().contains("dim >= 2"), e.getMessage());
        CouplingFlow f = new CouplingFlow(CouplingFlow.Config.of(3, 2, 8), new Rng(0));
        var e2 = assertThrows(IllegalArgumentException.class, () -> f.forwardWithLogdet(Tensor.zeros(4, 2)));
        assertTrue(e2.getMessage().contains("(B, 3)") && e2.getMessage().contains("(4, 2)"), e2.getMessage());
        assertThrows(IllegalArgumentException.class, () -> f.reverse(Tensor.zeros(3)));
        assertThrows(IllegalArgumentException.class, () -> f.logProb(Tensor.zeros(1, 3, 1)));
        assertThrows(IllegalArgumentException.class, () -> CouplingFlow.Config.fromJson("{\"dim\": 2}"));
        assertEquals(CouplingFlow.Config.of(4, 6, 32), CouplingFlow.Config.fromJson(CouplingFlow.Config.of(4, 6, 32).toJson()));
    }

    /**
     * Training lowers the two-moons NLL from the standard normal's (1.53 nats/dim on this data) to
     * well below 1. Measured with this setup over seeds 1-4: 0.54-0.65 after 800 steps.
     */
    @Test
    void shortTrainingOnTwoMoonsLowersTheNll() {
        Rng rng = new Rng(3);
        CouplingFlow f = new CouplingFlow(CouplingFlow.Config.of(2, 8, 32), rng);
        Tensor test = Toy2D.TWO_MOONS.sample(new Rng(7), 4000);
        double before = evalNll(f, test);
        AdamW opt = new AdamW(f.parameters(), 5e-3, 0.9, 0.99, 1e-8, 0);
        int steps = 800;
        long t0 = System.nanoTime();
        for (int s = 0; s < steps; s++) {
            opt.setLr(5e-3 * 0.5 * (1 + Math.cos(Math.PI * s / steps)));
            Tensor loss = f.loss(Toy2D.TWO_MOONS.sample(rng, 128));
            opt.zeroGrad();
            loss.backward();
            opt.step();
        }
        double after = evalNll(f, test);
        System.out.printf("two moons: NLL %.3f -> %.3f nats/dim in %d steps (%.1f s)%n", before, after, steps, (System.nanoTime() - t0) / 1e9);
        assertEquals(1.53, before, 0.05, "initial NLL is the standard normal's");
        assertTrue(after < 0.85, "NLL after training " + after + " nats/dim (measured 0.54-0.65)");
        // the trained flow still inverts, and its samples have the data's spread
        try (var ng = Grad.noGrad()) {
            Tensor z = Tensor.randn(new Rng(9), 2000, 2);
            Tensor x = f.reverse(z);
            assertTrue(maxAbs(Ops.sub(f.forward(x), z)) < 1e-3, "forward(reverse(z)) = z after training");
            Tensor xm = Ops.mean(x, new int[]{0}, false), dm = Ops.mean(test, new int[]{0}, false);
            assertEquals(dm.data()[0], xm.data()[0], 0.15, "sample mean x");
            assertEquals(dm.data()[1], xm.data()[1], 0.15, "sample mean y");
        }
    }

    static double evalNll(CouplingFlow f, Tensor x) {
        try (var ng = Grad.noGrad()) {
            return f.loss(x).item();
        }
    }
}
