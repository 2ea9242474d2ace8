// TarFlow.reverse (the exact inverse's inference plan) against reverseKvCached (the same decode on tensors), bit for bit.
package dev.biflow.flow.model;

import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.kernels.Parallel;
import dev.biflow.engine.plan.PlanOp;
import org.junit.jupiter.api.Test;
import org.quicktheories.core.Gen;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.quicktheories.QuickTheory.qt;
import static org.quicktheories.generators.SourceDSL.booleans;
import static org.quicktheories.generators.SourceDSL.doubles;
import static org.quicktheories.generators.SourceDSL.integers;

/**
 * The plan calls the kernels the tensor path calls (the same GEMMs with their epilogues, the LayerNorm row kernel, the
 * decode kernel of KVCache.attend, the roundings of Ops.clamp / softClip, guide and (float) Math.exp), so the samples
 * must be equal bit for bit: over random configurations (conditional and unconditional, flipped blocks, every norm
 * control, T = 1 included), guidance 0 and > 0, annealed or not, attention temperatures != 1, dropped labels, on 1 and
 * 2 threads. A NaN from a run-away random model compares equal to a NaN (assertArrayEquals compares float bits).
 */
class TarFlowReversePlanTest {

    static Gen<TarFlowPropertiesTest.Case> casesBothKinds() {
        // half of the cases made class-conditional, so guidance is exercised
        return TarFlowPropertiesTest.cases(6).zip(booleans().all(), (c, cond) -> cond == c.cfg().conditional() ? c
                : new TarFlowPropertiesTest.Case(new TarFlowConfig(c.cfg().inChannels(), c.cfg().imgSize(), c.cfg().patchSize(),
                c.cfg().channels(), c.cfg().numBlocks(), c.cfg().layersPerBlock(), cond ? 3 : 0, c.cfg().headDim(), c.cfg().normControl(),
                c.cfg().clip()), c.seed()));
    }

    @Test
    void thePlanGivesTheTensorDecodeBitForBit() {
        int saved = Parallel.threads();
        Gen<TarFlow.Guidance> guidance = doubles().between(0, 3).zip(booleans().all(), doubles().between(0.3, 3),
                (g, ann, temp) -> new TarFlow.Guidance(g < 0.8 ? 0f : g.floatValue(), ann, temp.floatValue()));
        try {
            qt().withShrinkCycles(TarFlowPropertiesTest.SHRINK).withExamples(TarFlowPropertiesTest.examples(30))
                    .forAll(casesBothKinds(), guidance, integers().between(1, 4)).checkAssert((c, g0, batch) -> {
                        TarFlow m = c.build();
                        Rng rng = new Rng(c.seed() + 11);
                        Tensor z = c.noise(rng, batch);
                        int[] y = c.labels(rng, batch);
                        TarFlow.Guidance g = y == null ? TarFlow.Guidance.NONE : g0;
                        for (int th : new int[]{1, 2}) {
                            Parallel.setThreads(th);
                            float[] want = m.reverseKvCached(z, y, g).data();
                            assertArrayEquals(want, m.reverse(z, y, g).data(), "plan vs tensor decode, " + th + " threads, batch " + batch + ", " + g + " for " + c);
                        }
                    });
        } finally {
            Parallel.setThreads(saved);
        }
    }

    /** Fixed cases that must be covered whatever the generator draws: guided, annealed, hot and cold temperatures, flipped blocks. */
    @Test
    void guidedAnnealedTemperedAndFlippedCasesAreBitIdentical() {
        int saved = Parallel.threads();
        try {
            for (NormControl nc : NormControl.values()) {
                TarFlowConfig cfg = new TarFlowConfig(1, 8, 2, 16, 3, 2, 3, 8, nc, nc == NormControl.NONE ? 0f : 2f); // 3 blocks: 1 flipped
                TarFlow m = new TarFlowPropertiesTest.Case(cfg, 5).build();
                Tensor z = Tensor.randn(new Rng(9), 3, cfg.tokens(), cfg.tokenDim());
                int[] y = {2, 0, -1};
                for (TarFlow.Guidance g : new TarFlow.Guidance[]{TarFlow.Guidance.NONE, new TarFlow.Guidance(1.5f, false, 1f),
                        new TarFlow.Guidance(2f, true, 0.4f), new TarFlow.Guidance(0.7f, true, 2.5f)})
                    for (int th : new int[]{1, 2}) {
                        Parallel.setThreads(th);
                        assertArrayEquals(m.reverseKvCached(z, y, g).data(), m.reverse(z, y, g).data(), nc + ", " + g + ", " + th + " threads");
                    }
                // unlabelled (the mean class row) and unconditional
                Parallel.setThreads(1);
                assertArrayEquals(m.reverseKvCached(z, null, TarFlow.Guidance.NONE).data(), m.reverse(z, null, TarFlow.Guidance.NONE).data(), nc + ", no labels");
            }
            TarFlowConfig u = new TarFlowConfig(2, 4, 1, 12, 2, 1, 0, 6, NormControl.SOFT, 1f);
            TarFlow mu = new TarFlowPropertiesTest.Case(u, 7).build();
            Tensor z = Tensor.randn(new Rng(10), 2, u.tokens(), u.tokenDim());
            assertArrayEquals(mu.reverseKvCached(z, null, TarFlow.Guidance.NONE).data(), mu.reverse(z, null, TarFlow.Guidance.NONE).data(), "unconditional");
        } finally {
            Parallel.setThreads(saved);
        }
    }

    /** The shipped Fashion-MNIST TARFlow (the demo's exact inverse): the plan's samples are the tensor decode's, bit for bit. */
    @Test
    void theShippedModelSamplesBitForBit() throws java.io.IOException {
        java.nio.file.Path ckpt = java.nio.file.Path.of("../models/fmnist/forward.safetensors");
        org.junit.jupiter.api.Assumptions.assumeTrue(java.nio.file.Files.exists(ckpt), "no shipped model at " + ckpt.toAbsolutePath());
        TarFlow m = Checkpoints.loadTarFlow(ckpt);
        int saved = Parallel.threads();
        try {
            Parallel.setThreads(2);
            Tensor z = Tensor.randn(new Rng(2026), 4, m.config.tokens(), m.config.tokenDim());
            int[] y = {0, 3, 7, 9};
            for (TarFlow.Guidance g : new TarFlow.Guidance[]{TarFlow.Guidance.NONE, new TarFlow.Guidance(1f, false, 1f), new TarFlow.Guidance(1f, true, 0.8f)})
                assertArrayEquals(m.reverseKvCached(z, y, g).data(), m.reverse(z, y, g).data(), "shipped model, " + g);
        } finally {
            Parallel.setThreads(saved);
        }
    }

    @Test
    void thePlanHasOneDecodeStepPerTokenAndPassAndIsCheckedWhenBuilt() {
        TarFlowConfig cfg = new TarFlowConfig(1, 4, 2, 8, 2, 1, 3, 4, NormControl.HARD, 1f); // T = 4
        TarFlow m = new TarFlow(cfg, new Rng(0));
        TarFlowReversePlan plain = TarFlowReversePlan.of(m, 2, false), guided = TarFlowReversePlan.of(m, 2, true);
        long steps = plain.plan().ops().stream().filter(o -> o instanceof PlanOp.CouplingStep).count();
        assertEquals(cfg.numBlocks() * (cfg.tokens() - 1), steps);
        long decodes = guided.plan().ops().stream().filter(o -> o instanceof PlanOp.DecodeAttention).count();
        assertEquals(2L * cfg.numBlocks() * (cfg.tokens() - 1) * cfg.layersPerBlock(), decodes, "a conditional and an unconditional pass per step");
        // inputs: x, class rows; with guidance the unconditional rows, T - 1 gains and the scale
        assertEquals(2 * cfg.tokens() * cfg.tokenDim() + cfg.numBlocks() * 2 * cfg.channels(), plain.input().cols());
        assertEquals(2 * cfg.tokens() * cfg.tokenDim() + 2 * cfg.numBlocks() * 2 * cfg.channels() + cfg.tokens(), guided.input().cols());
        TarFlow u = new TarFlow(new TarFlowConfig(1, 4, 2, 8, 1, 1, 0, 4, NormControl.NONE, 0f), new Rng(0));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> TarFlowReversePlan.of(u, 1, true));
        assertTrue(e.getMessage().contains("class-conditional"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> plain.tokens(Tensor.zeros(2, 4, 4), new int[]{0, 1}, new TarFlow.Guidance(1f, false, 1f)));
        assertTrue(e.getMessage().contains("without guidance"), e.getMessage());
    }
}
