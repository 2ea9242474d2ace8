// Sampling paths: the exact-inverse baseline, score denoising after G, and noise-space inpainting.
package dev.biflow.flow.inverse;

import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.kernels.Parallel;
import dev.biflow.engine.nn.Init;
import dev.biflow.flow.model.TarFlow;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import static dev.biflow.flow.inverse.BackwardConfigTest.assertMsg;
import static org.junit.jupiter.api.Assertions.*;
import static org.quicktheories.QuickTheory.qt;
import static org.quicktheories.generators.SourceDSL.integers;
import static org.quicktheories.generators.SourceDSL.longs;

class BiFlowSamplerTest {
    int threads;

    @BeforeEach
    void single() { threads = Parallel.threads(); Parallel.setThreads(1); }

    @AfterEach
    void restore() { Parallel.setThreads(threads); }

    static TarFlow flow() {
        TarFlow f = new TarFlow(BiFlowModelTest.F, new Rng(1));
        Rng r = new Rng(7);
        // a non-trivial flow: random output weights (a fresh TarFlow is affine per token)
        for (TarFlow.MetaBlock b : f.blocks) Init.normal(b.projOut.weight, r, 0, 0.05);
        Init.uniform(f.var, new Rng(8), 0.5, 1.5);
        return f;
    }

    static BiFlowModel g(TarFlow f, BackwardConfig.Denoise d) {
        BiFlowModel g = BiFlowModelTest.randomModel(BiFlowModelTest.cfg(BackwardConfig.Cfg.TRAINING_TIME).withDenoise(d), 21);
        System.arraycopy(f.var.data(), 0, g.priorVar.data(), 0, f.var.numel());
        return g;
    }

    @Test
    void exactInverseIsTheFlowsOwnSampler() {
        TarFlow f = flow();
        Tensor eps = Tensor.randn(new Rng(3), 2, 16, 4);
        int[] y = {0, 2};
        BiFlowSampler s = BiFlowSampler.exactInverse(FrozenFlow.of(f), BackwardConfig.Denoise.NONE, 0.1f);
        assertArrayEquals(f.reverse(eps, y, new TarFlow.Guidance(1.5f, false, 1f)).data(), s.sample(eps, y, 1.5f).data());
        BiFlowSampler sd = BiFlowSampler.exactInverse(FrozenFlow.of(f), BackwardConfig.Denoise.SCORE, 0.1f);
        Tensor x = f.reverse(eps, y, TarFlow.Guidance.NONE);
        assertArrayEquals(f.denoise(x, y, 0.1f).data(), sd.sample(eps, y, 0f).data());
        assertMsg(() -> BiFlowSampler.exactInverse(FrozenFlow.of(f), BackwardConfig.Denoise.LEARNED, 0.1f), "no learned denoiser");
        assertMsg(() -> BiFlowSampler.exactInverse(FrozenFlow.of(f), BackwardConfig.Denoise.SCORE, 0f), "sigma > 0");
    }

    @Test
    void oneNfeSamplesAndScoreDenoising() {
        TarFlow f = flow();
        Tensor eps = Tensor.randn(new Rng(4), 3, 16, 4);
        int[] y = {1, 0, 2};
        BiFlowModel learned = g(f, BackwardConfig.Denoise.LEARNED);
        BiFlowSampler s = BiFlowSampler.of(FrozenFlow.of(f), learned, Float.NaN);
        learned.resetEvaluations();
        Tensor x = s.sample(eps, y, 1f);
        assertEquals(1, learned.evaluations());
        assertEquals(1, s.evaluationsPerSample(1f));
        assertArrayEquals(new int[]{3, 1, 8, 8}, x.shape());
        assertArrayEquals(learned.sample(eps, y, 1f).data(), x.data());
        BiFlowModel score = g(f, BackwardConfig.Denoise.SCORE);
        BiFlowSampler ss = BiFlowSampler.of(FrozenFlow.of(f), score, 0.1f);
        assertArrayEquals(f.denoise(score.sample(eps, y, 1f), y, 0.1f).data(), ss.sample(eps, y, 1f).data());
        assertFalse(ss.sample(eps, y, 1f).needsGrad(), "samples carry no graph");
        assertMsg(() -> BiFlowSampler.of(FrozenFlow.of(f), score, Float.NaN), "sigma > 0");
    }

    /** Known tokens keep F's noise bit for bit; unknown tokens are fresh eps * sqrt(var); G sees exactly z'. */
    @Test
    void inpaintingLeavesTheKnownTokensNoiseUntouched() {
        TarFlow f = flow();
        BiFlowModel g = g(f, BackwardConfig.Denoise.LEARNED);
        BiFlowSampler s = BiFlowSampler.of(FrozenFlow.of(f), g, 0.1f);
        qt().withExamples(10).forAll(longs().between(0, 1L << 30), integers().between(1, 15)).checkAssert((seed, nKnown) -> {
            Tensor partial = Tensor.rand(new Rng(seed), 2, 1, 8, 8);
            int[] y = {(int) (seed % 3), 1};
            boolean[] known = new boolean[16];
            Rng r = new Rng(seed + 1);
            for (int k = 0; k < nKnown; k++) known[r.nextInt(16)] = true;
            float[] zKnown = f.forward(partial, y).z().data();
            g.resetEvaluations();
            BiFlowSampler.Inpainting a = s.inpaint(partial, known, y, 0.5f, new Rng(seed + 2));
            assertEquals(1, g.evaluations());
            Rng eps = new Rng(seed + 2);
            float[] z = a.z().data(), var = f.var.data();
            for (int b = 0; b < 2; b++)
                for (int t = 0; t < 16; t++)
                    for (int j = 0; j < 4; j++) {
                        int o = (b * 16 + t) * 4 + j;
                        float e = (float) eps.nextGaussian();
                        if (known[t]) assertEquals(Float.floatToRawIntBits(zKnown[o]), Float.floatToRawIntBits(z[o]), "known token " + t);
                        else assertEquals(e * (float) Math.sqrt(var[t * 4 + j]), z[o], "unknown token " + t);
                    }
            assertArrayEquals(g.generate(a.z(), y, 0.5f).data(), a.x().data());
        });
        assertMsg(() -> s.inpaint(Tensor.zeros(1, 1, 8, 8), new boolean[15], new int[]{0}, 0f, new Rng(1)), "one entry per token (16)");
        assertMsg(() -> s.inpaint(Tensor.zeros(1, 1, 4, 4), new boolean[16], new int[]{0}, 0f, new Rng(1)), "(B, 1, 8, 8)");
    }

    @Test
    void pixelMasksBecomeTokenMasks() {
        BiFlowSampler s = BiFlowSampler.of(FrozenFlow.of(flow()), g(flow(), BackwardConfig.Denoise.LEARNED), 0.1f);
        boolean[][] px = new boolean[8][8];
        for (int r = 0; r < 8; r++) for (int c = 0; c < 5; c++) px[r][c] = true; // left 5 columns known
        boolean[] m = s.tokenMask(px);
        for (int t = 0; t < 16; t++) assertEquals(t % 4 < 2, m[t], "token " + t); // patch columns 0-1 fully known, 2 partly
    }
}
