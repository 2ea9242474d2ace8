// The strategy ablation on the tiny image set (opt-in, minutes): hidden alignment vs naive vs hidden distillation over three seeds.
package dev.biflow.flow.inverse;

import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.flow.data.ImageDataset;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.condition.EnabledIfEnvironmentVariable;

import java.io.IOException;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Run with {@code BIFLOW_ABLATION=1 mvn -o -q test -pl flow -Dtest=AblationTest}. Same F, data,
 * steps (300), batch and seeds for each strategy; prints held-out reconstruction MSE per seed
 * and the means. Hidden distillation is the worst by a wide margin in every run so far (as in the
 * paper), and that is asserted. Alignment vs naive is NOT asserted: on these toys it depends on F
 * and the step count. Measured 2026-11-28 (means over seeds 1-3, held-out MSE vs the clean image,
 * noise floor sigma^2 = 0.01): with an 80-step F and 300 steps alignment 0.0439, naive 0.0463,
 * distillation 0.0835 (alignment ahead on each seed); with the 50-step F of {@link Fixtures} this
 * test gave alignment 0.0118, naive 0.0094, distillation 0.0231 (naive ahead on each seed), and at 200
 * steps without CFG alignment 0.0220, naive 0.0156, distillation 0.0672. The toy inverse is easy enough
 * that the terminal loss alone suffices.
 */
@EnabledIfEnvironmentVariable(named = "BIFLOW_ABLATION", matches = "1")
class AblationTest {
    @Test
    void distillationIsWorstAndAlignmentVsNaiveIsReported() throws IOException {
        FrozenFlow ff = FrozenFlow.of(Fixtures.trainedFlow());
        ImageDataset data = Fixtures.images(96, 5), held = Fixtures.images(48, 77);
        Tensor xh = Fixtures.clean(held, 48);
        int[] yh = Fixtures.labels(held, 48);
        Map<BackwardConfig.Strategy, Double> mean = new LinkedHashMap<>();
        for (BackwardConfig.Strategy s : new BackwardConfig.Strategy[]{BackwardConfig.Strategy.HIDDEN_ALIGNMENT,
                BackwardConfig.Strategy.NAIVE, BackwardConfig.Strategy.HIDDEN_DISTILLATION}) {
            double sum = 0;
            StringBuilder line = new StringBuilder(String.format(Locale.ROOT, "%-20s", s));
            for (long seed = 1; seed <= 3; seed++) {
                BiFlowModel g = new BiFlowModel(Fixtures.gConfig().withStrategy(s), new Rng(seed));
                new BackwardTrainer(ff, g, data, Fixtures.train(300).withSeed(seed), List.of(), null).run(new BackwardTrainer.Listener() {});
                double e = BackwardTrainer.reconstruction(ff, g, xh, yh, Fixtures.SIGMA, new Rng(9)).mseClean();
                line.append(String.format(Locale.ROOT, "  seed %d %.4f", seed, e));
                sum += e;
            }
            mean.put(s, sum / 3);
            System.out.println(line.append(String.format(Locale.ROOT, "  mean %.4f", sum / 3)));
        }
        double a = mean.get(BackwardConfig.Strategy.HIDDEN_ALIGNMENT), n = mean.get(BackwardConfig.Strategy.NAIVE),
                d = mean.get(BackwardConfig.Strategy.HIDDEN_DISTILLATION);
        assertTrue(d > n && d > a, "hidden distillation should be the worst: " + mean);
        System.out.printf(Locale.ROOT, "alignment - naive = %+.4f (negative: alignment wins)%n", a - n);
    }
}
