// Global gradient-norm clipping and a finiteness check over a parameter list.
package dev.biflow.engine.optim;

import dev.biflow.engine.Tensor;
import dev.biflow.engine.kernels.Parallel;

import java.util.Collection;

/** Gradients are read from {@link Tensor#gradData()}; parameters without one are skipped. */
public final class GradClip {
    private GradClip() {}

    /** sqrt(sum of squared gradients over all parameters), accumulated in double. */
    public static double globalNorm(Collection<Tensor> params) {
        double s = 0;
        for (Tensor p : params) {
            float[] g = p.gradData();
            if (g == null) continue;
            for (float v : g) s += (double) v * v;
        }
        return Math.sqrt(s);
    }

    /**
     * Scales all gradients by maxNorm / norm when the global norm exceeds maxNorm, so that the
     * clipped norm is maxNorm (no epsilon: PyTorch's clip_grad_norm_ divides by norm + 1e-6,
     * which lands a hair below). Returns the norm before clipping. A non-finite norm leaves the
     * gradients untouched and is returned as is: check it (or {@link #allFinite}) and skip the step.
     */
    public static double clipGlobalNorm(Collection<Tensor> params, double maxNorm) {
        if (!(maxNorm > 0)) throw new IllegalArgumentException("clipGlobalNorm: maxNorm must be > 0, got " + maxNorm);
        double norm = globalNorm(params);
        if (!Double.isFinite(norm) || norm <= maxNorm) return norm;
        float c = (float) (maxNorm / norm);
        for (Tensor p : params) {
            float[] g = p.gradData();
            if (g == null) continue;
            Parallel.forRange(g.length, Optimizer.GRAIN, (lo, hi) -> { for (int j = lo; j < hi; j++) g[j] *= c; });
        }
        return norm;
    }

    /** True when every gradient present is finite (no NaN or infinity). */
    public static boolean allFinite(Collection<Tensor> params) {
        for (Tensor p : params) {
            float[] g = p.gradData();
            if (g == null) continue;
            for (float v : g) if (!Float.isFinite(v)) return false;
        }
        return true;
    }

    /** The opposite of {@link #allFinite}: some gradient holds a NaN or an infinity. */
    public static boolean hasNonFinite(Collection<Tensor> params) { return !allFinite(params); }
}
