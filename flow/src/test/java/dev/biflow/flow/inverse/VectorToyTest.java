// A 2-D toy: G learns to invert a frozen residual flow that has no closed-form inverse, from vectors rather than images.
package dev.biflow.flow.inverse;

import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.flow.data.Toy2D;
import dev.biflow.flow.train.TrainConfig;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

import static dev.biflow.flow.inverse.BackwardConfigTest.assertMsg;
import static org.junit.jupiter.api.Assertions.*;

class VectorToyTest {
    static final float SIGMA = 0.05f;

    static TrainConfig train(long steps, long seed) {
        return TrainConfig.defaults(steps).withBatch(64).withWarmup(Math.min(20, steps)).withLr(2e-3).withSeed(seed).withSigma(SIGMA);
    }

    static BackwardConfig config(BackwardConfig.Strategy s) {
        return BackwardConfig.forVectors(1, 2, 6, 0).withAlignNorm(BackwardConfig.AlignNorm.NONE).withSize(32, 16, 1, 1).withStrategy(s);
    }

    /**
     * Eight Gaussians through a 6-block residual flow: after 200 steps G(F(x + sigma eps)) is close
     * to x for held-out points, with hidden alignment and with naive distillation (same steps,
     * seed, data). The two are printed, not ranked.
     */
    @Test
    void gLearnsTheInverseOfAFlowWithoutAnAnalyticalOne() throws IOException {
        ResidualToyFlow f = new ResidualToyFlow(6, 3);
        Tensor x = Toy2D.EIGHT_GAUSSIANS.sample(new Rng(1), 512), held = Toy2D.EIGHT_GAUSSIANS.sample(new Rng(2), 256);
        float[] before = f.a.get(0).data().clone();
        Map<BackwardConfig.Strategy, double[]> res = new LinkedHashMap<>();
        for (BackwardConfig.Strategy s : new BackwardConfig.Strategy[]{BackwardConfig.Strategy.HIDDEN_ALIGNMENT, BackwardConfig.Strategy.NAIVE}) {
            BiFlowModel g = new BiFlowModel(config(s), new Rng(1));
            double initial = BackwardTrainer.reconstruction(f, g, held, null, SIGMA, new Rng(9)).mseClean();
            new BackwardTrainer(f, g, x, null, train(200, 1), null).run(new BackwardTrainer.Listener() {});
            double after = BackwardTrainer.reconstruction(f, g, held, null, SIGMA, new Rng(9)).mseClean();
            res.put(s, new double[]{initial, after});
            assertTrue(after < 0.05, s + ": held-out reconstruction MSE " + after + " should fall below 0.05");
            assertTrue(after < 0.1 * initial, s + ": should fall well below the initial " + initial + ", got " + after);
            assertArrayEquals(new int[]{4, 2}, g.sample(Tensor.randn(new Rng(3), 4, 1, 2), null, 0f).shape());
        }
        System.out.printf(Locale.ROOT, "2-D toy, held-out reconstruction MSE after 200 steps: alignment %.4f, naive %.4f (initial %.4f)%n",
                res.get(BackwardConfig.Strategy.HIDDEN_ALIGNMENT)[1], res.get(BackwardConfig.Strategy.NAIVE)[1],
                res.get(BackwardConfig.Strategy.NAIVE)[0]);
        assertArrayEquals(before, f.a.get(0).data(), "the flow must not change");
    }

    @Test
    void vectorInputsAreChecked() {
        ResidualToyFlow f = new ResidualToyFlow(6, 3);
        BiFlowModel g = new BiFlowModel(config(BackwardConfig.Strategy.HIDDEN_ALIGNMENT), new Rng(1));
        assertMsg(() -> new BackwardTrainer(f, g, Tensor.zeros(8, 3), null, train(1, 1), null), "(B, 2)");
        assertMsg(() -> new BackwardTrainer(f, g, Tensor.zeros(8, 2), new int[3], train(1, 1), null), "3 labels for 8 vectors");
        assertMsg(() -> g.toTokens(Tensor.zeros(8, 3)), "vectors must be (B, 2)");
        BiFlowModel imageG = new BiFlowModel(Fixtures.gConfig(), new Rng(1));
        assertMsg(() -> new BackwardTrainer(f, imageG, Tensor.zeros(8, 2), null, train(1, 1), null), "does not fit the forward model");
        BackwardTrainer t = new BackwardTrainer(f, g, Tensor.zeros(8, 2), null, train(1, 1), null);
        assertNotNull(t);
        assertMsg(() -> new BackwardTrainer(f, g, Fixtures.images(4, 1), train(1, 1), List.of(), null), "images");
    }
}
