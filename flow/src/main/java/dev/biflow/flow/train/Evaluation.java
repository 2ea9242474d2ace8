// Evaluation of the forward model: test-set bits per dimension with uniform dequantisation.
package dev.biflow.flow.train;

import dev.biflow.engine.Grad;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.flow.data.ImageDataset;
import dev.biflow.flow.model.TarFlow;

import java.util.function.LongConsumer;

/** Likelihood metrics. */
public final class Evaluation {
    private Evaluation() {}

    /**
     * Bits per dimension of 8-bit images: x = (x_int + u) / 256 * 2 - 1 with u ~ U[0,1), and
     * bpd = ( -[sum(-0.5 (z^2 + log 2 pi)) - D log 128] / D - logdet ) / ln 2, where logdet is
     * the model's per-dimension log-determinant (the standard-normal prior of ml-tarflow's loss;
     * log 128 accounts for mapping 256 levels onto [-1, 1]). Averaged over the first n images.
     */
    public static double bitsPerDim(TarFlow model, ImageDataset data, int n, int batch, long seed, LongConsumer progress) {
        Rng rng = new Rng(seed);
        int count = Math.min(n, data.n);
        int d = data.dims();
        double total = 0;
        try (var ng = Grad.noGrad()) {
            for (int start = 0; start < count; start += batch) {
                int b = Math.min(batch, count - start);
                int[] idx = new int[b];
                for (int i = 0; i < b; i++) idx[i] = start + i;
                Tensor x = data.batch(idx, ImageDataset.Noise.UNIFORM_DEQUANT, 0, rng);
                TarFlow.Forward f = model.forward(x, model.config.conditional() ? data.labelsOf(idx) : null);
                float[] z = f.z().data(), ld = f.logdet().data();
                for (int i = 0; i < b; i++) {
                    double s = 0;
                    for (int j = 0; j < d; j++) {
                        double v = z[i * d + j];
                        s += -0.5 * (v * v + Math.log(2 * Math.PI));
                    }
                    double nll = -(s - d * Math.log(128)) / d - ld[i];
                    total += nll / Math.log(2);
                }
                if (progress != null) progress.accept(start + b);
            }
        }
        return total / count;
    }
}
