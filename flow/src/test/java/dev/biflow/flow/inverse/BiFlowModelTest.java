// The backward model G: one evaluation per sample, the training-time-CFG contract, the null class, input checks, checkpoints.
package dev.biflow.flow.inverse;

import dev.biflow.engine.Grad;
import dev.biflow.engine.Ops;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.kernels.Parallel;
import dev.biflow.engine.nn.Init;
import dev.biflow.engine.nn.Module;
import dev.biflow.flow.model.Checkpoints;
import dev.biflow.flow.model.NormControl;
import dev.biflow.flow.model.TarFlow;
import dev.biflow.flow.model.TarFlowConfig;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Map;

import static dev.biflow.flow.inverse.BackwardConfigTest.assertMsg;
import static org.junit.jupiter.api.Assertions.*;
import static org.quicktheories.QuickTheory.qt;
import static org.quicktheories.generators.SourceDSL.floats;
import static org.quicktheories.generators.SourceDSL.longs;

class BiFlowModelTest {
    int threads;

    @BeforeEach
    void single() { threads = Parallel.threads(); Parallel.setThreads(1); }

    @AfterEach
    void restore() { Parallel.setThreads(threads); }

    static final TarFlowConfig F = new TarFlowConfig(1, 8, 2, 16, 2, 1, 3, 8, NormControl.SOFT, 3f);

    static BackwardConfig cfg(BackwardConfig.Cfg cfg) {
        return BackwardConfig.forFlow(F).withSize(32, 16, 1, 1).withCfg(cfg);
    }

    /**
     * Every parameter random (a fresh G outputs zeros: its adaLN gates and final layer start at
     * zero): matrices N(0, 1/fan_in), vectors and embeddings N(0, 0.3^2).
     */
    static BiFlowModel randomModel(BackwardConfig c, long seed) {
        BiFlowModel g = new BiFlowModel(c, new Rng(seed));
        randomize(g, new Rng(seed + 1000));
        return g;
    }

    static void randomize(Module m, Rng rng) {
        for (var e : m.namedParameters().entrySet()) {
            Tensor p = e.getValue();
            if (p.dim() == 2 && e.getKey().endsWith("weight")) Init.normal(p, rng, 0, 1 / Math.sqrt(p.size(1)));
            else Init.normal(p, rng, 0, 0.3);
        }
    }

    static Tensor noise(long seed, int b) { return Tensor.randn(new Rng(seed), b, 16, 4); }

    @Test
    void eachSampleCallIsOneEvaluationExceptTwoPassGuidance() {
        int[] y = {0, 1, 2, 1};
        for (BackwardConfig.Cfg mode : BackwardConfig.Cfg.values()) {
            BiFlowModel g = randomModel(cfg(mode), 1);
            g.sample(noise(2, 4), y, 0f);
            assertEquals(1, g.evaluations(), mode + " at w = 0");
            if (mode == BackwardConfig.Cfg.NONE) continue;
            g.resetEvaluations();
            g.sample(noise(2, 4), y, 1.5f);
            int expect = mode == BackwardConfig.Cfg.TWO_PASS ? 2 : 1;
            assertEquals(expect, g.evaluations(), mode + " at w = 1.5");
        }
        // the whole batch is one evaluation, whatever its size
        BiFlowModel g = randomModel(cfg(BackwardConfig.Cfg.TRAINING_TIME), 1);
        g.sample(noise(3, 32), new int[32], 2f);
        assertEquals(1, g.evaluations());
    }

    @Test
    void trainingTimeCfgAtWZeroIsTheConditionalModel() {
        BiFlowModel g = randomModel(cfg(BackwardConfig.Cfg.TRAINING_TIME), 3);
        Tensor eps = noise(4, 3);
        int[] y = {2, 0, 1};
        Tensor z = Ops.mul(eps, Ops.sqrt(g.priorVar));
        // the conditional prediction the losses train at w = 0 is (G(c,0) + 0 G(null,0)) / 1 = G(c, 0)
        Tensor cond, uncond;
        try (var ng = Grad.noGrad()) {
            cond = g.forward(z, y, new float[3]).tokens();
            uncond = g.forward(z, null, new float[3]).tokens();
        }
        Tensor trained = Ops.mul(Ops.add(cond, Ops.mulScalar(uncond, 0f)), Tensor.scalar(1f));
        assertArrayEquals(trained.data(), g.toTokens(g.sample(eps, y, 0f)).data());
        assertArrayEquals(cond.data(), g.toTokens(g.sample(eps, y, 0f)).data());
    }

    @Test
    void twoPassAtWZeroIsTheConditionalModelAndGuidesOtherwise() {
        BiFlowModel g = randomModel(cfg(BackwardConfig.Cfg.TWO_PASS), 5);
        Tensor eps = noise(6, 3);
        int[] y = {1, 1, 0};
        Tensor z = Ops.mul(eps, Ops.sqrt(g.priorVar));
        Tensor cond, uncond;
        try (var ng = Grad.noGrad()) {
            cond = g.forward(z, y, null).tokens();
            uncond = g.forward(z, null, null).tokens();
        }
        assertArrayEquals(cond.data(), g.toTokens(g.sample(eps, y, 0f)).data());
        float w = 1.7f;
        float[] got = g.toTokens(g.sample(eps, y, w)).data(), c = cond.data(), u = uncond.data();
        for (int i = 0; i < got.length; i++) assertEquals((1 + w) * c[i] - w * u[i], got[i], 1e-5);
    }

    /** Stage-wise training-time CFG at w = 0 (and for rows without a label) is the plain conditional forward. */
    @Test
    void stageGuidedTrainingForwardAtWZeroIsThePlainForward() {
        BiFlowModel g = randomModel(cfg(BackwardConfig.Cfg.TRAINING_TIME_STAGE), 21);
        Tensor z = noise(22, 3);
        int[] y = {2, -1, 1};
        float[] w = {0f, 1.5f, 0f}; // row 1 has w > 0 but no label: no partner either
        try (var ng = Grad.noGrad()) {
            BiFlowModel.Output s = g.forwardStageGuided(z, y, w), p = g.forward(z, y, w);
            for (int i = 0; i < p.hidden().size(); i++) assertArrayEquals(p.hidden().get(i).data(), s.hidden().get(i).data(), 1e-5f, "h_" + i);
            assertArrayEquals(p.tokens().data(), s.tokens().data(), 1e-5f);
        }
    }

    /**
     * The paper's h_{i+1} = (1+w) G_i(h_i|c) - w G_i(h_i), stage by stage: what the stage-wise training forward reports
     * for stage k is (o_c + w o_n) / (1+w), where o_c is stage k of ONE plain forward pass with (c, w) (the guided chain)
     * and o_n is stage k run with the null class on the same guided input. Checked against that brute-force
     * construction, so one pass at sampling time is the guided chain the losses trained.
     */
    @Test
    void stageGuidedTrainingForwardCombinesEachStageOnTheGuidedChain() {
        qt().withExamples(8).forAll(longs().between(0, 1L << 30), floats().between(0.05f, 3f)).checkAssert((seed, wv) -> {
            BiFlowModel g = randomModel(cfg(BackwardConfig.Cfg.TRAINING_TIME_STAGE), seed);
            Tensor z = noise(seed + 1, 2);
            int[] y = {0, 2};
            float[] w = {wv, wv};
            try (var ng = Grad.noGrad()) {
                BiFlowModel.Output s = g.forwardStageGuided(z, y, w), p = g.forward(z, y, w);
                Tensor cNull = Ops.silu(g.condition(null, w, 2));
                int n = g.config.stages();
                Tensor in = Ops.add(g.projIn.forward(z), g.posEmbed); // h_B
                for (int k = 0; k < n; k++) {
                    int i = n - 1 - k;
                    Tensor on = in;
                    for (BiFlowModel.Layer l : g.stages.get(k).layers) on = l.forward(on, cNull);
                    assertCombined(p.hidden().get(i), on, wv, s.hidden().get(i), "h_" + i);
                    in = p.hidden().get(i); // the guided state handed on
                }
                Tensor on = in;
                for (BiFlowModel.Layer l : g.denoise) on = l.forward(on, cNull);
                assertCombined(p.tokens(), g.finalLayer.forward(on, cNull), wv, s.tokens(), "x'");
            }
        });
    }

    private static void assertCombined(Tensor oc, Tensor on, float w, Tensor got, String what) {
        float[] c = oc.data(), u = on.data(), r = got.data();
        for (int k = 0; k < r.length; k++) {
            double want = (c[k] + w * u[k]) / (1 + w);
            assertEquals(want, r[k], 1e-4 * (1 + Math.abs(want)), what + "[" + k + "]");
        }
    }

    /**
     * The documented reparameterisation: with o_cond(c, w) = (o(c, w) + w o(null, w)) / (1 + w), the
     * one-pass output o(c, w) is (1 + w) o_cond(c, w) - w o_cond(null, w) at every output.
     */
    @Test
    void onePassOutputIsTheGuidedConditionalModel() {
        qt().withExamples(15).forAll(longs().between(0, 1L << 30), floats().between(0f, 4f)).checkAssert((seed, w) -> {
            BiFlowModel g = randomModel(cfg(BackwardConfig.Cfg.TRAINING_TIME), seed);
            Tensor z = noise(seed + 1, 2);
            int[] y = {0, 2};
            float[] ws = {w, w};
            try (var ng = Grad.noGrad()) {
                BiFlowModel.Output a = g.forward(z, y, ws), b = g.forward(z, null, ws);
                for (int i = 0; i <= a.hidden().size(); i++) {
                    float[] ov = i < a.hidden().size() ? a.hidden().get(i).data() : a.tokens().data();
                    float[] uv = i < a.hidden().size() ? b.hidden().get(i).data() : b.tokens().data();
                    for (int k = 0; k < ov.length; k++) {
                        double cond = (ov[k] + w * uv[k]) / (1 + w), unc = (uv[k] + w * uv[k]) / (1 + w);
                        assertEquals(ov[k], (1 + w) * cond - w * unc, 1e-4 * (1 + Math.abs(ov[k])));
                    }
                }
            }
        });
    }

    @Test
    void guidanceScaleChangesTheOnePassOutput() {
        BiFlowModel g = randomModel(cfg(BackwardConfig.Cfg.TRAINING_TIME), 7);
        Tensor eps = noise(8, 2);
        int[] y = {0, 1};
        assertFalse(java.util.Arrays.equals(g.sample(eps, y, 0f).data(), g.sample(eps, y, 2f).data()));
    }

    @Test
    void droppedAndMissingLabelsUseTheNullClass() {
        BiFlowModel g = randomModel(cfg(BackwardConfig.Cfg.TWO_PASS), 9);
        Tensor eps = noise(10, 3);
        float[] viaMinusOne = g.sample(eps, new int[]{-1, -1, -1}, 0f).data();
        float[] viaNull = g.sample(eps, null, 0f).data();
        assertArrayEquals(viaNull, viaMinusOne);
        // and the null class is its own row, not any real class
        for (int c = 0; c < 3; c++)
            assertFalse(java.util.Arrays.equals(viaNull, g.sample(eps, new int[]{c, c, c}, 0f).data()), "class " + c);
        // gradients of a null-class pass reach only the null row of the class table
        Tensor out = g.forward(Ops.mul(eps, Ops.sqrt(g.priorVar)), new int[]{-1, -1, -1}, null).tokens();
        g.zeroGrad();
        Ops.mean(Ops.square(out)).backward();
        float[] grad = g.classEmbed.gradData();
        int d = g.config.width();
        for (int row = 0; row < 4; row++) {
            double s = 0;
            for (int j = 0; j < d; j++) s += Math.abs(grad[row * d + j]);
            if (row == g.config.nullClass()) assertTrue(s > 0, "the null row must get a gradient");
            else assertEquals(0, s, "class row " + row + " must get no gradient");
        }
    }

    @Test
    void badInputsAreRejectedWithClearMessages() {
        BiFlowModel g = randomModel(cfg(BackwardConfig.Cfg.TRAINING_TIME), 11);
        assertMsg(() -> g.sample(Tensor.zeros(2, 16, 3), new int[]{0, 1}, 0f), "(B, 16, 4)");
        assertMsg(() -> g.sample(Tensor.zeros(16, 4), new int[]{0}, 0f), "(B, 16, 4)");
        assertMsg(() -> g.sample(noise(1, 2), new int[]{0, 3}, 0f), "label 3 is outside [0, 3)");
        assertMsg(() -> g.sample(noise(1, 2), new int[]{0, -2}, 0f), "label -2");
        assertMsg(() -> g.sample(noise(1, 2), new int[]{0}, 0f), "1 labels for a batch of 2");
        assertMsg(() -> g.sample(noise(1, 2), new int[]{0, 1}, -0.5f), "finite and >= 0");
        assertMsg(() -> g.sample(noise(1, 2), new int[]{0, 1}, Float.NaN), "finite and >= 0");
        assertMsg(() -> g.sample(noise(1, 2), new int[]{0, 1}, 9f), "trained range [0, 4.0]");
        assertMsg(() -> g.sample(noise(1, 2), null, 1f), "needs class labels");
        assertMsg(() -> g.toTokens(Tensor.zeros(2, 1, 7, 7)), "(B, 1, 8, 8)");
        BiFlowModel plain = randomModel(cfg(BackwardConfig.Cfg.NONE), 12);
        assertMsg(() -> plain.sample(noise(1, 2), new int[]{0, 1}, 1f), "without CFG");
        assertMsg(() -> plain.forward(noise(1, 2), new int[]{0, 1}, new float[]{1f, 0f}), "no guidance scale");
        assertMsg(() -> new BiFlowModel(cfg(BackwardConfig.Cfg.NONE).withStrategy(BackwardConfig.Strategy.EXACT_INVERSE), new Rng(1)),
                "EXACT_INVERSE has no backward model");
        // a G whose tokens do not match F's
        TarFlow f = new TarFlow(F, new Rng(1));
        BackwardConfig other = BackwardConfig.forFlow(new TarFlowConfig(1, 8, 4, 16, 2, 1, 3, 8, NormControl.SOFT, 3f));
        assertMsg(() -> BiFlowSampler.of(FrozenFlow.of(f), new BiFlowModel(other, new Rng(1)), 0.1f), "tokens: G 4, F 16");
        BackwardConfig deeper = BackwardConfig.forFlow(new TarFlowConfig(1, 8, 2, 16, 3, 1, 3, 8, NormControl.SOFT, 3f));
        assertMsg(() -> BiFlowSampler.of(FrozenFlow.of(f), new BiFlowModel(deeper, new Rng(1)), 0.1f), "stages/blocks: G 3, F 2");
    }

    @Test
    void strategiesBuildTheirOwnParts() {
        BiFlowModel align = new BiFlowModel(cfg(BackwardConfig.Cfg.NONE), new Rng(1));
        assertTrue(align.stateDict().containsKey("heads.1.weight"));
        assertFalse(align.stateDict().containsKey("w_embed.main.0.weight"));
        BiFlowModel mlpHeads = new BiFlowModel(cfg(BackwardConfig.Cfg.NONE).withHead(BackwardConfig.Head.MLP), new Rng(1));
        assertTrue(mlpHeads.stateDict().containsKey("heads.0.main.2.weight"));
        BiFlowModel naive = new BiFlowModel(cfg(BackwardConfig.Cfg.NONE).withStrategy(BackwardConfig.Strategy.NAIVE), new Rng(1));
        assertTrue(naive.stateDict().keySet().stream().noneMatch(k -> k.startsWith("heads.")));
        BiFlowModel distill = new BiFlowModel(cfg(BackwardConfig.Cfg.NONE).withStrategy(BackwardConfig.Strategy.HIDDEN_DISTILLATION), new Rng(1));
        assertTrue(distill.stateDict().containsKey("stages.0.to_state.weight"));
        assertTrue(distill.stateDict().containsKey("stages.1.from_state.weight"));
        BiFlowModel cfgModel = new BiFlowModel(cfg(BackwardConfig.Cfg.TRAINING_TIME), new Rng(1));
        assertTrue(cfgModel.stateDict().containsKey("w_embed.main.2.weight"));
        assertArrayEquals(new int[]{4, 32}, cfgModel.classEmbed.shape(), "3 classes + the null class");
        // one stage per forward block, each with its layers; a fresh G outputs zeros (zero-initialised final layer)
        assertEquals(2, align.stages.size());
        for (float v : align.sample(noise(1, 1), new int[]{0}, 0f).data()) assertEquals(0f, v);
    }

    @Test
    void checkpointReproducesOutputsBitExactly(@TempDir Path tmp) throws IOException {
        for (BackwardConfig c : new BackwardConfig[]{cfg(BackwardConfig.Cfg.TRAINING_TIME),
                cfg(BackwardConfig.Cfg.TWO_PASS).withStrategy(BackwardConfig.Strategy.HIDDEN_DISTILLATION).withHead(BackwardConfig.Head.MLP)}) {
            BiFlowModel g = randomModel(c, 13);
            Init.uniform(g.priorVar, new Rng(3), 0.5, 1.5);
            Path p = tmp.resolve(c.strategy() + ".safetensors");
            BackwardCheckpoints.save(g, p, Map.of("sigma", "0.1"));
            BackwardCheckpoints.Loaded back = BackwardCheckpoints.read(p);
            assertEquals(c, back.model().config);
            assertEquals(0.1f, back.sigma());
            Tensor eps = noise(14, 3);
            int[] y = {0, 1, 2};
            assertArrayEquals(g.sample(eps, y, 1.25f).data(), back.model().sample(eps, y, 1.25f).data());
        }
        // a forward-model file is refused by name
        Path fp = tmp.resolve("f.safetensors");
        Checkpoints.save(new TarFlow(F, new Rng(1)), fp, null);
        assertMsg(() -> BackwardCheckpoints.load(fp), "not a BiFlow backward model");
        assertThrows(IOException.class, () -> BackwardCheckpoints.load(tmp.resolve("missing.safetensors")));
    }
}
