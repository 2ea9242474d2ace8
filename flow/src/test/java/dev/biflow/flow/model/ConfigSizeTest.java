// The weight counts a config promises (checked against a file and the heap before a model is built) match the models built from it.
package dev.biflow.flow.model;

import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.flow.inverse.BackwardConfig;
import dev.biflow.flow.inverse.BiFlowModel;
import org.junit.jupiter.api.Test;

import java.util.Map;

import static org.junit.jupiter.api.Assertions.*;
import static org.quicktheories.QuickTheory.qt;
import static org.quicktheories.generators.SourceDSL.integers;

class ConfigSizeTest {
    static long values(Map<String, Tensor> state) {
        long n = 0;
        for (Tensor t : state.values()) n += t.numel();
        return n;
    }

    /** TarFlowConfig.stateValues is exactly the size of TarFlow's state dict, for any shape. */
    @Test
    void tarFlowStateValuesAreExact() {
        qt().withExamples(25).forAll(integers().between(1, 3), integers().between(1, 3), integers().between(1, 2), integers().between(0, 3))
                .checkAssert((c, blocks, layers, classes) -> {
                    int patch = 1 + (c + blocks) % 2, img = 4 * patch, width = 8 * (1 + (c + layers) % 2);
                    TarFlowConfig cfg = new TarFlowConfig(c, img, patch, width, blocks, layers, classes, 4, NormControl.NONE, 0f);
                    assertEquals(values(new TarFlow(cfg, new Rng(1)).stateDict()), (long) cfg.stateValues(), cfg.toJson());
                });
    }

    /** BackwardConfig.minStateValues never exceeds what BiFlowModel holds (else a valid file would be refused). */
    @Test
    void biflowMinStateValuesIsALowerBound() {
        for (BackwardConfig.Strategy s : BackwardConfig.Strategy.values())
            for (BackwardConfig.Cfg g : BackwardConfig.Cfg.values())
                for (int classes : new int[]{0, 3}) {
                    if (s == BackwardConfig.Strategy.EXACT_INVERSE) continue; // no model
                    BackwardConfig cfg;
                    try {
                        cfg = BackwardConfig.forFlow(TarFlowConfig.tarflow(1, 8, 2, 16, 2, 1, classes))
                            .withSize(16, 8, 1, 1).withStrategy(s).withCfg(g);
                    } catch (IllegalArgumentException e) {
                        continue; // a combination the config refuses
                    }
                    long actual = values(new BiFlowModel(cfg, new Rng(1)).stateDict());
                    assertTrue(cfg.minStateValues() <= actual, cfg.minStateValues() + " > " + actual + " for " + cfg.toJson());
                    assertTrue(cfg.minStateValues() > 0.5 * actual, "a useful bound: " + cfg.minStateValues() + " vs " + actual);
                }
    }
}
