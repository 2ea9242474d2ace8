// G's one network evaluation as an inference plan for one batch size, run on the host: forward's tokens, bit for bit.
package dev.biflow.flow.inverse;

import dev.biflow.engine.Arena;
import dev.biflow.engine.Shape;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.plan.CpuExecutor;
import dev.biflow.engine.plan.Plan;
import dev.biflow.engine.plan.PlanBuilder;
import dev.biflow.engine.plan.Region;

/**
 * {@link BiFlowModel#lower} built once for batches of {@link #batch()} examples. A call writes z, the class rows and
 * the guidance features into one arena, runs the plan with {@link CpuExecutor} and copies the tokens out: no autograd
 * bookkeeping, no intermediate tensors, every temporary in the arena (inside an {@link Arena} scope, so a second
 * call reuses the first one's array). Weights are read from the model at every call.
 */
public final class BiFlowPlan {
    private final BiFlowModel g;
    private final Plan plan;
    private final Region z, ids, features, tokens;

    private BiFlowPlan(BiFlowModel g, int batch) {
        this.g = g;
        BackwardConfig c = g.config;
        int rows = batch * c.tokens();
        PlanBuilder p = new PlanBuilder(batch);
        z = p.alloc(rows, c.tokenDim());
        ids = p.alloc(batch, 1);
        features = g.wEmbed == null ? null : p.alloc(batch, 2);
        tokens = p.alloc(rows, c.tokenDim());
        g.lower(p, z, ids, features, tokens);
        plan = p.build();
    }

    /** The plan of g for batches of exactly {@code batch} examples. */
    public static BiFlowPlan of(BiFlowModel g, int batch) { return new BiFlowPlan(g, batch); }

    public int batch() { return plan.batch(); }

    /**
     * {@code g.forward(z, y, w).tokens()} without a graph: z (B, T, C p^2) in F's output space, labels and per-example
     * guidance scales as {@link BiFlowModel#forward} takes them -> tokens (B, T, C p^2).
     */
    public Tensor tokens(Tensor zIn, int[] y, float[] w) {
        BackwardConfig c = g.config;
        int b = plan.batch(), t = c.tokens(), td = c.tokenDim();
        if (zIn.dim() != 3 || zIn.size(0) != b || zIn.size(1) != t || zIn.size(2) != td)
            throw new IllegalArgumentException("BiFlowPlan: z must be (" + b + ", " + t + ", " + td + ") for this plan, got " + Shape.str(zIn.shape())
                    + "; build a plan for the batch (BiFlowPlan.of(g, batch))");
        if (features == null && w != null)
            for (float wi : w)
                if (wi != 0f)
                    throw new IllegalArgumentException("this backward model was built with cfg " + c.cfg()
                            + ": it takes no guidance scale w in a single pass (got w = " + wi + ")");
        if (w != null && w.length != b) throw new IllegalArgumentException(w.length + " guidance scales for a batch of " + b);
        int[] rowsOf = g.classIds(y, b);
        float[] out = new float[b * t * td];
        try (Arena scope = Arena.open()) {
            float[] a = Arena.floats(plan.size());
            System.arraycopy(zIn.data(), 0, a, z.off(), b * t * td);
            for (int i = 0; i < b; i++) a[ids.row(i)] = rowsOf[i];
            if (features != null) System.arraycopy(BiFlowModel.guidanceFeatures(w, b), 0, a, features.off(), 2 * b);
            CpuExecutor.run(plan, a);
            System.arraycopy(a, tokens.off(), out, 0, out.length);
        }
        return Tensor.of(out, b, t, td);
    }
}
