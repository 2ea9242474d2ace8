// Mean squared error as an ImageDistance: the paper's base distance, BiFlow's default, and the reference
// implementation of the seam.
package dev.biflow.flow.features;

import dev.biflow.engine.Fused;
import dev.biflow.engine.Tensor;

/** D(a, b) = mean((a - b)^2) over all elements (so the mean over the batch of per-image MSE); b gets no gradient. */
public final class MseDistance implements ImageDistance {
    /** Stateless: one instance serves every caller. */
    public static final MseDistance INSTANCE = new MseDistance();

    @Override
    public String name() { return "mse"; }

    @Override
    public Tensor distance(Tensor a, Tensor b) { return Fused.mse(a, b.detach()); }
}
