// Mean squared error as an ImageDistance: BiFlow's default distance, and the reference implementation of the seam.
package dev.biflow.flow.backward;

import dev.biflow.engine.Fused;
import dev.biflow.engine.Tensor;
import dev.biflow.flow.features.ImageDistance;

/** D(a, b) = mean((a - b)^2) over every value of the batch; b is detached (it is the target). */
public final class MseDistance implements ImageDistance {
    public static final MseDistance INSTANCE = new MseDistance();

    @Override
    public String name() { return "mse"; }

    @Override
    public Tensor distance(Tensor a, Tensor b) { return Fused.mse(a, b.detach()); }
}
