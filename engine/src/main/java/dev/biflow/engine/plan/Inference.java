// A layer's lowering run once on tensors: the inference face of a module's forward when no graph is recorded.
package dev.biflow.engine.plan;

import dev.biflow.engine.Arena;
import dev.biflow.engine.Tensor;

/**
 * What nn modules call under {@code Grad.noGrad()} instead of keeping a hand-written inference copy of their
 * forward: the module's own {@code lower} is built into a small plan over the input tensors' arrays (bound, not
 * copied) and run by {@link CpuExecutor}; the temporaries live in a per-thread arena scope, reused by the next
 * call. The plan-versus-forward tests show the bits are forward's.
 */
public final class Inference {
    private Inference() {}

    /** Lowers a layer onto input regions (in the order given to {@link #run}) and an output region. */
    @FunctionalInterface
    public interface Lowering {
        void lower(PlanBuilder p, Region[] in, Region out);
    }

    /**
     * The output (outShape) of the lowering applied to inputs, each seen as rows of its last axis; batch is the
     * number of examples (attention's rows are batch x tokens). The output array comes from {@link Arena#floats}.
     */
    public static Tensor run(int batch, int[] outShape, Lowering lowering, Tensor... inputs) {
        PlanBuilder p = new PlanBuilder(batch);
        Region[] in = new Region[inputs.length];
        float[][] bound = new float[inputs.length + 1][];
        for (int i = 0; i < inputs.length; i++) {
            Tensor t = inputs[i];
            int c = t.size(-1);
            in[i] = p.external(c == 0 ? 0 : t.numel() / c, c);
            bound[i] = t.data();
        }
        int oc = outShape[outShape.length - 1], n = 1;
        for (int s : outShape) n *= s;
        Region out = p.external(oc == 0 ? 0 : n / oc, oc);
        lowering.lower(p, in, out);
        Plan plan = p.build();
        float[] y = Arena.floats(n);
        bound[inputs.length] = y;
        try (Arena temporaries = Arena.open()) {
            CpuExecutor.run(plan, Arena.floats(plan.size()), bound);
        }
        return Tensor.of(y, outShape);
    }
}
