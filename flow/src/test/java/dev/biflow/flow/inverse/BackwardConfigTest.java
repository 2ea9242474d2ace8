// BackwardConfig: JSON round trip over random configurations, defaults from a TARFlow config, and clear rejections.
package dev.biflow.flow.inverse;

import dev.biflow.flow.model.TarFlowConfig;
import org.junit.jupiter.api.Test;
import org.quicktheories.core.Gen;

import static org.junit.jupiter.api.Assertions.*;
import static org.quicktheories.QuickTheory.qt;
import static org.quicktheories.generators.Generate.enumValues;
import static org.quicktheories.generators.SourceDSL.floats;
import static org.quicktheories.generators.SourceDSL.integers;

class BackwardConfigTest {
    static Gen<BackwardConfig> configs() {
        Gen<int[]> geo = integers().between(1, 3).zip(integers().between(1, 3), integers().between(1, 4),
                (c, p, n) -> new int[]{c, p, p * n});
        return geo.zip(integers().between(1, 4), integers().between(0, 5), enumValues(BackwardConfig.Strategy.class),
                (g, stages, classes, strat) -> {
                    int tokens = (g[2] / g[1]) * (g[2] / g[1]);
                    BackwardConfig c = new BackwardConfig(tokens, g[0] * g[1] * g[1], stages, classes, g[0], g[2], g[1],
                            16 * stages, 8, 1 + classes % 2, classes % 3, BackwardConfig.Head.values()[stages % 2], strat,
                            BackwardConfig.Denoise.values()[classes % 3], BackwardConfig.AlignNorm.values()[stages % 3],
                            cfgFor(classes, strat),
                            2.5f + stages, 0.1f * (classes % 4), 1f, 0.5f * stages, 0.01f, stages % 2);
                    return c;
                }).zip(floats().between(0f, 10f), (c, w) -> c.withCfg(c.cfg(), w, c.wZeroProb()));
    }

    /** Every CFG mode the class count allows (the stage-wise form does not combine with hidden distillation). */
    private static BackwardConfig.Cfg cfgFor(int classes, BackwardConfig.Strategy strat) {
        if (classes == 0) return BackwardConfig.Cfg.NONE;
        BackwardConfig.Cfg c = BackwardConfig.Cfg.values()[classes % BackwardConfig.Cfg.values().length];
        return c == BackwardConfig.Cfg.TRAINING_TIME_STAGE && strat == BackwardConfig.Strategy.HIDDEN_DISTILLATION ? BackwardConfig.Cfg.TRAINING_TIME : c;
    }

    @Test
    void jsonRoundTripIsExact() {
        qt().withExamples(200).forAll(configs()).checkAssert(c -> assertEquals(c, BackwardConfig.fromJson(c.toJson())));
    }

    @Test
    void vectorConfigRoundTrips() {
        BackwardConfig v = BackwardConfig.forVectors(1, 2, 6, 0);
        assertFalse(v.isImage());
        assertEquals(v, BackwardConfig.fromJson(v.toJson()));
    }

    @Test
    void forFlowCopiesTheForwardGeometry() {
        TarFlowConfig f = TarFlowConfig.tarflow(1, 28, 4, 128, 4, 2, 10);
        BackwardConfig g = BackwardConfig.forFlow(f);
        assertEquals(49, g.tokens());
        assertEquals(16, g.tokenDim());
        assertEquals(4, g.stages());
        assertEquals(10, g.numClasses());
        assertEquals(10, g.nullClass());
        assertEquals(BackwardConfig.Strategy.HIDDEN_ALIGNMENT, g.strategy());
        assertEquals(BackwardConfig.Denoise.LEARNED, g.denoise());
        assertEquals(BackwardConfig.Cfg.TRAINING_TIME, g.cfg());
        assertEquals(0.01f, g.adaptiveEps());
        assertEquals(1f, g.adaptiveP());
        assertEquals(BackwardConfig.Cfg.NONE, BackwardConfig.forFlow(TarFlowConfig.tarflow(1, 28, 4, 128, 4, 2, 0)).cfg());
    }

    @Test
    void namesParseInSeveralSpellings() {
        assertEquals(BackwardConfig.Strategy.HIDDEN_ALIGNMENT, BackwardConfig.Strategy.parse("hidden-alignment"));
        assertEquals(BackwardConfig.Strategy.EXACT_INVERSE, BackwardConfig.Strategy.parse("EXACT_INVERSE"));
        assertEquals(BackwardConfig.Cfg.TRAINING_TIME, BackwardConfig.Cfg.parse("training-time"));
        assertEquals(BackwardConfig.Cfg.TWO_PASS, BackwardConfig.Cfg.parse("two_pass"));
        assertEquals(BackwardConfig.Cfg.TRAINING_TIME_STAGE, BackwardConfig.Cfg.parse("training-time-stage"));
        assertEquals(BackwardConfig.Denoise.SCORE, BackwardConfig.Denoise.parse("score"));
        assertEquals(BackwardConfig.AlignNorm.TOKEN, BackwardConfig.AlignNorm.parse("on"));
        assertEquals(BackwardConfig.Head.MLP, BackwardConfig.Head.parse("mlp"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> BackwardConfig.Strategy.parse("magic"));
        assertTrue(e.getMessage().contains("hidden-alignment"), e.getMessage());
    }

    @Test
    void badConfigsAreRejectedWithReasons() {
        BackwardConfig ok = BackwardConfig.forFlow(TarFlowConfig.tarflow(1, 8, 2, 16, 2, 1, 3));
        assertMsg(() -> ok.withSize(30, 16, 1, 1), "multiple of head_dim");
        assertMsg(() -> ok.withSize(32, 16, 0, 1), "layers_per_stage");
        assertMsg(() -> ok.withCfg(BackwardConfig.Cfg.TRAINING_TIME, -1f, 0f), "w_max");
        assertMsg(() -> ok.withCfg(BackwardConfig.Cfg.TRAINING_TIME, 4f, 1.5f), "w_zero_prob");
        assertMsg(() -> ok.withAdaptive(0f, 1f), "eps > 0");
        assertMsg(() -> ok.withStrategy(BackwardConfig.Strategy.HIDDEN_DISTILLATION).withCfg(BackwardConfig.Cfg.TRAINING_TIME_STAGE),
                "use cfg training-time");
        assertMsg(() -> ok.withWeights(-1f, 1f), "loss weights");
        assertMsg(() -> BackwardConfig.forVectors(1, 2, 2, 0).withCfg(BackwardConfig.Cfg.TWO_PASS), "class-conditional");
        assertMsg(() -> new BackwardConfig(15, 4, 2, 3, 1, 8, 2, 32, 16, 1, 1, null, null, null, null, null, 4f, 0.1f, 1f, 1f, 0.01f, 1f),
                "16 tokens of 4 values");
        assertMsg(() -> BackwardConfig.fromJson("{\"tokens\": 4}"), "lacks 'token_dim'");
        assertMsg(() -> BackwardConfig.fromJson("[1, 2]"), "JSON object");
        assertMsg(() -> BackwardConfig.fromJson("{nope"), "not valid JSON");
    }

    static void assertMsg(org.junit.jupiter.api.function.Executable e, String part) {
        IllegalArgumentException ex = assertThrows(IllegalArgumentException.class, e);
        assertTrue(ex.getMessage().contains(part), "message should mention '" + part + "': " + ex.getMessage());
    }
}
