// Plan versus forward for G: the inference plan's tokens are forward's bits, with a graph (training) and without, every strategy and CFG mode.
package dev.biflow.flow.inverse;

import dev.biflow.engine.Grad;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.kernels.Parallel;
import org.junit.jupiter.api.Test;

import static dev.biflow.flow.inverse.BiFlowModelTest.cfg;
import static dev.biflow.flow.inverse.BiFlowModelTest.noise;
import static dev.biflow.flow.inverse.BiFlowModelTest.randomModel;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class BiFlowPlanTest {

    @Test
    void planTokensAreForwardsBits() {
        int before = Parallel.threads();
        try {
            for (int threads : new int[]{1, 2}) {
                Parallel.setThreads(threads);
                // every strategy and CFG mode on one thread; on two (the split of every parallel loop) one of them
                BackwardConfig.Strategy[] strategies = threads == 1 ? new BackwardConfig.Strategy[]{BackwardConfig.Strategy.NAIVE,
                        BackwardConfig.Strategy.HIDDEN_ALIGNMENT, BackwardConfig.Strategy.HIDDEN_DISTILLATION}
                        : new BackwardConfig.Strategy[]{BackwardConfig.Strategy.HIDDEN_DISTILLATION};
                BackwardConfig.Cfg[] modes = threads == 1 ? BackwardConfig.Cfg.values() : new BackwardConfig.Cfg[]{BackwardConfig.Cfg.TRAINING_TIME};
                for (BackwardConfig.Strategy s : strategies)
                    for (BackwardConfig.Cfg mode : modes) {
                        if (mode == BackwardConfig.Cfg.TRAINING_TIME_STAGE && s == BackwardConfig.Strategy.HIDDEN_DISTILLATION) continue; // refused
                        BiFlowModel g = randomModel(cfg(mode).withStrategy(s), 11 + threads);
                        Tensor z = noise(3, 3);
                        int[] y = {2, -1, 0};
                        float[] w = mode.guidanceInput() ? new float[]{0f, 1.5f, 2.75f} : null;
                        float[] got = BiFlowPlan.of(g, 3).tokens(z, y, w).data();
                        String what = s + " " + mode + ", " + threads + " thread(s)";
                        assertArrayEquals(g.forward(z, y, w).tokens().data(), got, what + ": training forward");
                        try (var ng = Grad.noGrad()) {
                            assertArrayEquals(g.forward(z, y, w).tokens().data(), got, what + ": forward without a graph");
                            assertArrayEquals(g.forward(z, null, w).tokens().data(), BiFlowPlan.of(g, 3).tokens(z, null, w).data(),
                                    what + ": null class");
                        }
                    }
            }
        } finally {
            Parallel.setThreads(before);
        }
    }

    @Test
    void aPlanIsForItsBatchAndItsCfg() {
        BiFlowModel g = randomModel(cfg(BackwardConfig.Cfg.NONE), 1);
        BiFlowPlan p = BiFlowPlan.of(g, 2);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> p.tokens(noise(1, 3), new int[3], null));
        assertTrue(e.getMessage().contains("BiFlowPlan.of(g, batch)"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> p.tokens(noise(1, 2), new int[2], new float[]{0f, 1f}));
        assertTrue(e.getMessage().contains("no guidance scale"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> p.tokens(noise(1, 2), new int[]{0, 7}, null), "a label outside the classes");
    }
}
