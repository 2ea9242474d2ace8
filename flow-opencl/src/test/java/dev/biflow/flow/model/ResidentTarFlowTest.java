// ResidentTarFlow (TARFlow's exact-inverse plan on OpenClPlan) against TarFlow.reverse (the same plan on the CPU), with exact copies and launches per call.
package dev.biflow.flow.model;

import dev.biflow.engine.Backend;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.nn.Init;
import dev.biflow.gpu.OpenClBackend;
import dev.biflow.gpu.Transfers;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Small random TarFlows (every parameter random, the zero-initialised proj_out included, and a
 * random prior var, so no block is the identity) inverted by ResidentTarFlow on the OpenCL device
 * and by TarFlow.reverse on the CPU backend with the same noise, labels and guidance.
 *
 * <p>Tolerance: |resident - cpu| &lt;= 5e-5 + 5e-5 |cpu| per element. Both sides are float32 and
 * differ only in rounding (tiled vs blocked GEMM sums, device exp vs (float) Math.exp, tanh
 * through exp, the two attention scale factorisations); one ulp at |x| ~ 3 is 2.4e-7. The exact
 * inverse then amplifies: token t+1's (a, b) are functions of the solved tokens 0..t, and a
 * token's error is multiplied by exp(a) &lt;= e^3 (soft clip 3) per block, over 2 blocks and up
 * to 48 serial steps. The bound is ~50-200 ulp per element: observed on PoCL 2.4e-7 at |x| ~ 3 to
 * 1.0e-5 at |x| ~ 14 (a few ulp, printed), so it leaves room for a GPU's different exp and fused
 * multiply-adds, while a real bug (a wrong row, scale, flip, bound or gain) moves (a, b) and so x by
 * far more: guidance 1.5 vs 0 moves x by ~3, and the unconditional pass's temperature alone (0.1
 * vs 1) by more than 10 tolerances (asserted), so it is checked too.
 * Skipped only where no OpenCL device exists; a kernel that does not build or falls back fails.
 */
class ResidentTarFlowTest {
    static final double ABS = 5e-5, REL = 5e-5;
    static OpenClBackend cl;

    @BeforeAll
    static void open() {
        cl = dev.biflow.flow.OpenClTests.openOrSkip("ResidentTarFlowTest");
        Backend.use(Backend.CPU); // the reference runs on the CPU; ResidentTarFlow never goes through Backend.active()
    }

    @AfterAll
    static void close() {
        if (cl != null) cl.close();
    }

    /**
     * Every parameter random (proj_out too), prior var in [0.5, 1.5). qkv weights are larger
     * (std 1 / sqrt(in), logits of std ~1) so attention is far from uniform and the unconditional
     * pass's temperature visibly changes the sample (with 0.3 / sqrt(in) it moved x by 1e-6).
     */
    static TarFlow model(TarFlowConfig c, long seed) {
        Rng rng = new Rng(seed);
        TarFlow f = new TarFlow(c, rng);
        for (var e : f.namedParameters().entrySet()) {
            Tensor p = e.getValue();
            double std = p.dim() == 2 ? (e.getKey().endsWith("qkv.weight") || e.getKey().endsWith("proj_out.weight") ? 1.0 : 0.3) / Math.sqrt(p.size(1)) : 0.05;
            Init.normal(p, rng, 0, std);
        }
        float[] v = f.var.data();
        for (int i = 0; i < v.length; i++) v[i] = 0.5f + (float) rng.nextDouble();
        return f;
    }

    /** T = 16 (8x8 in 2x2 patches), width 32, 2 heads of 16, 2 blocks x 2 layers, 3 classes, soft clip 3. */
    static TarFlowConfig small() { return new TarFlowConfig(1, 8, 2, 32, 2, 2, 3, 16, NormControl.SOFT, 3f); }

    /** T = 49 (14x14 in 2x2 patches: not a multiple of the 64-item work-groups), width 32, 2 blocks x 1 layer, hard clip 2. */
    static TarFlowConfig t49() { return new TarFlowConfig(1, 14, 2, 32, 2, 1, 3, 16, NormControl.HARD, 2f); }

    /**
     * Copy in + copy out + one launch per plan op: per block and step, each pass (the unconditional one too with
     * guidance) proj_in, the pos_embed row, the class rows (conditional), 7 per layer (LayerNorm, qkv, decode attention,
     * proj + residual, LayerNorm, fc1 + GELU, fc2 + residual) and proj_out; then the coupling step.
     */
    static int launches(TarFlowConfig c, boolean cfg) {
        int pass = 3 + (c.conditional() ? 1 : 0) + 7 * c.layersPerBlock();
        return 2 + c.numBlocks() * (c.tokens() - 1) * (1 + (cfg ? 2 : 1) * pass);
    }

    static double compare(String what, Tensor want, Tensor got) {
        return dev.biflow.flow.OpenClTests.assertClose("ResidentTarFlowTest", what, want, got, ABS, REL, 0.5);
    }

    /** max over elements of |a - b| / (ABS + REL |a|): how many tolerances b is from a. */
    static double tolerances(Tensor a, Tensor b) {
        double m = 0;
        for (int i = 0; i < a.numel(); i++) m = Math.max(m, Math.abs(a.data()[i] - b.data()[i]) / (ABS + REL * Math.abs(a.data()[i])));
        return m;
    }

    static double maxDiff(Tensor a, Tensor b) {
        double m = 0;
        for (int i = 0; i < a.numel(); i++) m = Math.max(m, Math.abs(a.data()[i] - b.data()[i]));
        return m;
    }

    /** One call's counts: 1 put and 1 get of the io array, the program's launches, and the backend saw nothing else. */
    static void assertOneCall(ResidentTarFlow r, boolean cfg, Runnable call) {
        Transfers t = r.transfers(cfg);
        t.reset();
        cl.transfers().reset();
        call.run();
        long io = 4L * r.inputFloats(cfg);
        assertEquals(1, t.puts(), "puts per call");
        assertEquals(1, t.gets(), "gets per call");
        assertEquals(r.launchesPerCall(cfg), t.launches(), "launches per call");
        assertEquals(io, t.bytesToDevice(), "bytes up per call: the inputs only, no weights");
        assertEquals(io, t.bytesFromDevice(), "bytes down per call: the io array");
        assertEquals(t.toString(), cl.transfers().toString(), "the backend counted the same copies and nothing else");
    }

    @Test
    void exactInverseWithoutGuidanceMatchesCpuInOnePutAndOneGet() {
        TarFlowConfig c = small();
        TarFlow f = model(c, 11);
        int batch = 3;
        try (ResidentTarFlow r = ResidentTarFlow.of(f, cl, batch)) {
            assertEquals(launches(c, false), r.launchesPerCall(false));
            assertEquals(launches(c, true), r.launchesPerCall(true));
            // x (B, T, td) + class rows (blocks, B, D); with CFG 2B class rows, T - 1 gains and the unconditional scale
            assertEquals(batch * c.tokens() * c.tokenDim() + c.numBlocks() * batch * c.channels(), r.inputFloats(false));
            assertEquals(batch * c.tokens() * c.tokenDim() + c.numBlocks() * 2 * batch * c.channels() + c.tokens(), r.inputFloats(true));
            Tensor z = Tensor.randn(new Rng(3), batch, c.tokens(), c.tokenDim());
            for (int[] y : new int[][]{{0, -1, 2}, null}) {
                Tensor want = f.reverse(z, y, TarFlow.Guidance.NONE);
                Tensor[] got = new Tensor[1];
                assertOneCall(r, false, () -> got[0] = r.reverse(z, y, TarFlow.Guidance.NONE));
                compare("T = 16, 2 blocks x 2 layers, no guidance, y = " + java.util.Arrays.toString(y), want, got[0]);
            }
            // the exact inverse inverts F: F(x) scaled back by 1/sqrt(var) comes back to x
            Tensor x = f.reverse(z, new int[]{1, 1, 0}, TarFlow.Guidance.NONE);
            Tensor zf = f.forward(x, new int[]{1, 1, 0}).z();
            float[] zs = zf.data().clone(), v = f.var.data();
            for (int i = 0; i < zs.length; i++) zs[i] /= (float) Math.sqrt(v[i % v.length]);
            Tensor back = r.reverse(Tensor.of(zs, zf.shape()), new int[]{1, 1, 0}, TarFlow.Guidance.NONE);
            double err = maxDiff(x, back);
            System.out.printf("[ResidentTarFlowTest] resident reverse(F(x)) vs x: max |diff| %.2e%n", err);
            assertTrue(err < 1e-3, "resident inverse of F(x) is not x: " + err);
            System.out.println("[ResidentTarFlowTest] " + cl.name() + ": per reverse call (B = " + batch + ", T = " + c.tokens() + ", 2 blocks x 2 layers): "
                    + r.launchesPerCall(false) + " launches, 1 put (" + 4 * r.inputFloats(false) + " B), 1 get");
        }
    }

    @Test
    void guidanceWithTemperatureAndAnnealingMatchesCpu() {
        TarFlowConfig c = t49();
        TarFlow f = model(c, 21);
        int batch = 2;
        try (ResidentTarFlow r = ResidentTarFlow.of(f, cl, batch)) {
            assertEquals(launches(c, true), r.launchesPerCall(true));
            Tensor z = Tensor.randn(new Rng(4), batch, c.tokens(), c.tokenDim());
            int[] y = {2, 0};
            TarFlow.Guidance[] gs = {new TarFlow.Guidance(1f, false, 1f), new TarFlow.Guidance(1.5f, true, 0.1f), TarFlow.Guidance.NONE};
            Tensor[] out = new Tensor[gs.length];
            for (int k = 0; k < gs.length; k++) {
                TarFlow.Guidance g = gs[k];
                Tensor want = f.reverse(z, y, g);
                Tensor[] got = new Tensor[1];
                assertOneCall(r, g.scale() > 0, () -> got[0] = r.reverse(z, y, g));
                compare("T = 49, hard clip, " + g, want, got[0]);
                out[k] = got[0];
            }
            // the attention temperature alone moves the CPU sample by many tolerances, so the comparison above checks it
            Tensor t1 = f.reverse(z, y, new TarFlow.Guidance(1.5f, true, 1f));
            double temp = tolerances(t1, f.reverse(z, y, gs[1]));
            System.out.printf("[ResidentTarFlowTest] attn_temp 0.1 vs 1 moves the CFG sample by %.1f tolerances (max %.2e)%n", temp, maxDiff(t1, out[1]));
            assertTrue(temp > 10, "the temperature barely matters in this model: " + temp + " tolerances");
            // guidance, annealing and temperature reach the device (each changes the sample)
            assertTrue(maxDiff(out[0], out[2]) > 1e-3, "guidance has no effect");
            assertTrue(maxDiff(out[0], out[1]) > 1e-3, "annealing / temperature have no effect");
            System.out.println("[ResidentTarFlowTest] " + cl.name() + ": per CFG reverse call (B = " + batch + ", two passes, T = " + c.tokens()
                    + ", 2 blocks x 1 layer): " + r.launchesPerCall(true) + " launches, 1 put (" + 4 * r.inputFloats(true) + " B), 1 get");
        }
    }

    @Test
    void smallerBatchIsPaddedAndGivesTheSameSamples() {
        TarFlowConfig c = small();
        TarFlow f = model(c, 31);
        try (ResidentTarFlow r = ResidentTarFlow.of(f, cl, 4)) {
            Tensor z = Tensor.randn(new Rng(5), 1, c.tokens(), c.tokenDim());
            TarFlow.Guidance g = new TarFlow.Guidance(2f, true, 1.2f);
            compare("b = 1 of a batch-4 build, CFG", f.reverse(z, new int[]{1}, g), r.reverse(z, new int[]{1}, g));
        }
    }

    @Test
    void wrongShapesAndArgumentsAreClearErrors() {
        TarFlowConfig c = small();
        TarFlow f = model(c, 41);
        try (ResidentTarFlow r = ResidentTarFlow.of(f, cl, 2)) {
            Tensor z = Tensor.randn(new Rng(6), 2, c.tokens(), c.tokenDim());
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> r.reverse(Tensor.randn(new Rng(6), 2, c.tokens() + 1, c.tokenDim()), null, TarFlow.Guidance.NONE));
            assertTrue(e.getMessage().contains("expects noise"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> r.reverse(Tensor.randn(new Rng(6), 3, c.tokens(), c.tokenDim()), null, TarFlow.Guidance.NONE));
            assertTrue(e.getMessage().contains("up to 2"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> r.reverse(z, new int[]{0, 3}, TarFlow.Guidance.NONE));
            assertTrue(e.getMessage().contains("label 3"), e.getMessage());
            assertThrows(IllegalArgumentException.class, () -> r.reverse(z, new int[]{0}, TarFlow.Guidance.NONE));
            e = assertThrows(IllegalArgumentException.class, () -> r.reverse(z, null, new TarFlow.Guidance(1f, false, 1f)));
            assertTrue(e.getMessage().contains("guidance needs"), e.getMessage());
            assertThrows(IllegalArgumentException.class, () -> ResidentTarFlow.of(f, cl, 0));
        }
        // an unconditional flow: no CFG program, labels refused
        TarFlowConfig u = new TarFlowConfig(1, 8, 2, 32, 1, 1, 0, 16, NormControl.NONE, 1f);
        TarFlow fu = model(u, 42);
        try (ResidentTarFlow r = ResidentTarFlow.of(fu, cl, 2)) {
            Tensor z = Tensor.randn(new Rng(7), 2, u.tokens(), u.tokenDim());
            compare("unconditional, 1 block, no norm control", fu.reverse(z, null, TarFlow.Guidance.NONE), r.reverse(z, null, TarFlow.Guidance.NONE));
            assertThrows(IllegalArgumentException.class, () -> r.reverse(z, new int[]{0, 0}, TarFlow.Guidance.NONE));
            assertThrows(IllegalStateException.class, () -> r.transfers(true));
        }
    }
}
