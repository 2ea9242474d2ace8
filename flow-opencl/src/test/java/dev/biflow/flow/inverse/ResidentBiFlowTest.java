// ResidentBiFlow (G's 1-NFE sample as one device-resident pass) against BiFlowModel.sample on the CPU, with exact copies and launches per call.
package dev.biflow.flow.inverse;

import dev.biflow.engine.Backend;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.flow.OpenClTests;
import dev.biflow.flow.model.NormControl;
import dev.biflow.flow.model.TarFlowConfig;
import dev.biflow.gpu.OpenClBackend;
import dev.biflow.gpu.Transfers;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A small random G (14x14 one-channel images in 2x2 patches: T = 49 tokens, not a multiple of the
 * 64-item work-groups; width 32, 2 heads of 16, 2 stages x 1 layer + 1 denoising layer, 3 classes;
 * every parameter random, the zero-initialised adaLN and final Linears included, and a random
 * prior_var, so no layer is the identity and the output is not zero) sampled by ResidentBiFlow on
 * the OpenCL device and by BiFlowModel.sample on the CPU backend, with the same noise and labels.
 * Tolerance: |resident - cpu| &lt;= 1e-4 + 1e-4 |cpu| per element (float32 on both sides; tiled
 * vs blocked GEMM summation order, device exp and erf, fused vs separate multiply-adds, through 3
 * residual layers and 4 GEMMs of adaLN; observed errors are printed). Skipped only where no OpenCL
 * device exists; a kernel that does not build or falls back fails.
 */
class ResidentBiFlowTest {
    static final double ABS = 1e-4, REL = 1e-4;
    static OpenClBackend cl;

    @BeforeAll
    static void open() {
        cl = OpenClTests.openOrSkip("ResidentBiFlowTest");
        Backend.use(Backend.CPU); // the reference runs on the CPU; ResidentBiFlow never goes through Backend.active()
    }

    @AfterAll
    static void close() {
        if (cl != null) cl.close();
    }

    static BackwardConfig config() {
        TarFlowConfig f = new TarFlowConfig(1, 14, 2, 32, 2, 1, 3, 16, NormControl.SOFT, 3f);
        return BackwardConfig.forFlow(f).withSize(32, 16, 1, 1);
    }

    /** randomModel plus a random positive prior_var (sample scales eps by its square root). */
    static BiFlowModel model(BackwardConfig c, long seed) {
        BiFlowModel g = BiFlowModelTest.randomModel(c, seed);
        Rng r = new Rng(seed + 7);
        float[] v = g.priorVar.data();
        for (int i = 0; i < v.length; i++) v[i] = 0.5f + (float) r.nextDouble();
        return g;
    }

    /** Max |got - want| after asserting every element within tolerance; also asserts the output is not trivially small. */
    static double compare(String what, Tensor want, Tensor got) {
        return OpenClTests.assertClose("ResidentBiFlowTest", what, want, got, ABS, REL, 1e-1);
    }

    /** BiFlowSampler.withResident: the sampler's output (G's pass, then the sampler's own finishing) matches op by op on the CPU. */
    @Test
    void samplerWithAResidentGMatchesTheCpuSampler() {
        BackwardConfig c = config();
        BiFlowModel g = model(c, 23);
        TarFlowConfig fc = new TarFlowConfig(1, 14, 2, 32, 2, 1, 3, 16, NormControl.SOFT, 3f);
        FrozenFlow ff = FrozenFlow.of(new dev.biflow.flow.model.TarFlow(fc, new Rng(5)));
        BiFlowSampler cpu = BiFlowSampler.of(ff, g, 0.1f);
        Tensor eps = Tensor.randn(new Rng(9), 2, c.tokens(), c.tokenDim());
        int[] y = {1, -1};
        try (ResidentBiFlow r = ResidentBiFlow.of(g, cl, 4)) {
            compare("BiFlowSampler.withResident, w = 1", cpu.sample(eps, y, 1f), cpu.withResident(r).sample(eps, y, 1f));
            BiFlowModel other = model(c, 24);
            assertThrows(IllegalArgumentException.class, () -> BiFlowSampler.of(ff, other, 0.1f).withResident(r), "a program built from another G");
            assertThrows(IllegalStateException.class, () -> BiFlowSampler.exactInverse(ff, BackwardConfig.Denoise.NONE, 0.1f).withResident(r));
        }
    }

    @Test
    void trainingTimeCfgSampleMatchesCpuInOnePutAndOneGet() {
        BackwardConfig c = config();
        assertEquals(BackwardConfig.Cfg.TRAINING_TIME, c.cfg());
        assertEquals(BackwardConfig.Strategy.HIDDEN_ALIGNMENT, c.strategy());
        BiFlowModel g = model(c, 21);
        int batch = 3, rows = batch * c.tokens();
        try (ResidentBiFlow r = ResidentBiFlow.of(g, cl, batch)) {
            // one launch per op of G's plan: 3 copies in (z, class ids, [w, log1p w]), the class rows, w_embed (fc1, SiLU,
            // fc2), + class row, SiLU(c), proj_in, + pos_embed, 10 per layer (adaLN, LayerNorm, modulate, qkv, attention,
            // proj + gated residual, LayerNorm, modulate, fc1 + GELU, fc2 + gated residual), final (adaLN, LayerNorm,
            // modulate, Linear), the copy out
            int layers = c.stages() * c.layersPerStage() + c.denoiseLayers();
            assertEquals(3 + 1 + 3 + 1 + 1 + 2 + 10 * layers + 4 + 1, r.launchesPerSample());
            long ioFloats = (long) rows * c.tokenDim() + 3L * batch; // z, class ids, [w, log1p w]
            Tensor eps = Tensor.randn(new Rng(8), batch, c.tokens(), c.tokenDim());
            int[][] labels = {{0, -1, 2}, {2, 1, 0}};
            float[] scales = {0f, 1.5f};
            for (int[] y : labels)
                for (float w : scales) {
                    Tensor want = g.sample(eps, y, w);
                    Transfers t = r.transfers();
                    t.reset();
                    cl.transfers().reset();
                    Tensor got = r.sample(eps, y, w);
                    compare("training-time CFG, y = " + java.util.Arrays.toString(y) + ", w = " + w, want, got);
                    // exactly one put (the io staging array: no weights), one get, the program's launches; the backend saw nothing else
                    assertEquals(1, t.puts(), "puts per sample call");
                    assertEquals(1, t.gets(), "gets per sample call");
                    assertEquals(r.launchesPerSample(), t.launches(), "launches per sample call");
                    assertEquals(4 * ioFloats, t.bytesToDevice(), "bytes up per call: the inputs only, no weights");
                    assertEquals(4 * ioFloats, t.bytesFromDevice(), "bytes down per call: the io array");
                    assertEquals(t.toString(), cl.transfers().toString(), "the backend counted the same copies and nothing else");
                }
            // the host part never goes through Backend.active(): with the OpenCL backend active (as `biflow bench --device opencl` runs) the counts are the same
            cl.transfers().reset();
            Backend.use(cl);
            try {
                r.sample(eps, labels[1], 1.5f);
            } finally {
                Backend.use(Backend.CPU);
            }
            assertEquals(1, cl.transfers().puts(), "puts with the OpenCL backend active");
            assertEquals(1, cl.transfers().gets(), "gets with the OpenCL backend active");
            assertEquals(r.launchesPerSample(), cl.transfers().launches(), "launches with the OpenCL backend active");
            // w changes the sample (the guidance embedding reaches the device), and so does the label
            Tensor a = r.sample(eps, labels[0], 0f), b = r.sample(eps, labels[0], 1.5f);
            assertTrue(maxDiff(a, b) > 1e-3, "w has no effect on the resident sample");
            System.out.println("[ResidentBiFlowTest] " + cl.name() + ": per sample call (B = " + batch + ", T = " + c.tokens() + "): "
                    + r.launchesPerSample() + " launches, 1 put (" + 4 * ioFloats + " B), 1 get");
        }
    }

    @Test
    void smallerBatchIsPaddedAndGivesTheSameSamples() {
        BackwardConfig c = config();
        BiFlowModel g = model(c, 31);
        try (ResidentBiFlow r = ResidentBiFlow.of(g, cl, 4)) {
            Tensor eps = Tensor.randn(new Rng(9), 2, c.tokens(), c.tokenDim());
            compare("b = 2 of a batch-4 build", g.sample(eps, new int[]{1, -1}, 2f), r.sample(eps, new int[]{1, -1}, 2f));
            Tensor one = Tensor.randn(new Rng(10), 1, c.tokens(), c.tokenDim());
            compare("b = 1, null labels, w = 0", g.sample(one, null, 0f), r.sample(one, null, 0f));
        }
    }

    @Test
    void hiddenDistillationAndTwoPassAtWZeroMatchCpu() {
        BackwardConfig c = config().withStrategy(BackwardConfig.Strategy.HIDDEN_DISTILLATION).withCfg(BackwardConfig.Cfg.TWO_PASS);
        BiFlowModel g = model(c, 41);
        try (ResidentBiFlow r = ResidentBiFlow.of(g, cl, 2)) {
            // no w_embed (2 copies in, the class rows, SiLU), + 4 launches per stage for to_state / from_state
            int layers = c.stages() * c.layersPerStage() + c.denoiseLayers();
            assertEquals(2 + 1 + 1 + 2 + 10 * layers + 4 * c.stages() + 4 + 1, r.launchesPerSample());
            Tensor eps = Tensor.randn(new Rng(11), 2, c.tokens(), c.tokenDim());
            compare("hidden distillation, two-pass CFG at w = 0", g.sample(eps, new int[]{0, 2}, 0f), r.sample(eps, new int[]{0, 2}, 0f));
            UnsupportedOperationException u = assertThrows(UnsupportedOperationException.class, () -> r.sample(eps, new int[]{0, 2}, 1f));
            assertTrue(u.getMessage().contains("two-pass") && u.getMessage().contains("--device cpu"), u.getMessage());
        }
    }

    @Test
    void wrongShapesAndArgumentsAreClearErrors() {
        BackwardConfig c = config();
        BiFlowModel g = model(c, 51);
        try (ResidentBiFlow r = ResidentBiFlow.of(g, cl, 2)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> r.sample(Tensor.zeros(2, c.tokens(), c.tokenDim() + 1), new int[]{0, 1}, 0f));
            assertTrue(e.getMessage().contains("(B, " + c.tokens() + ", " + c.tokenDim() + ")"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> r.sample(Tensor.zeros(3, c.tokens(), c.tokenDim()), new int[]{0, 1, 2}, 0f));
            assertTrue(e.getMessage().contains("up to 2"), e.getMessage());
            assertThrows(IllegalArgumentException.class, () -> r.sample(Tensor.zeros(2, c.tokens(), c.tokenDim()), new int[]{0, 3}, 0f)); // label out of range
            assertThrows(IllegalArgumentException.class, () -> r.sample(Tensor.zeros(2, c.tokens(), c.tokenDim()), new int[]{0, 1}, -1f));
            assertThrows(IllegalArgumentException.class, () -> ResidentBiFlow.of(g, cl, 0));
            // nothing was sent for the rejected calls
            assertEquals(0, r.transfers().gets());
        }
    }

    static double maxDiff(Tensor a, Tensor b) {
        double m = 0;
        for (int i = 0; i < a.data().length; i++) m = Math.max(m, Math.abs(a.data()[i] - b.data()[i]));
        return m;
    }
}
