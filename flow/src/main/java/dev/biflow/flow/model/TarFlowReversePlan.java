// TARFlow's exact inverse (the KV-cached decode of every block) as one inference plan for one batch size: run on the host, or by OpenClPlan.
package dev.biflow.flow.model;

import dev.biflow.engine.Arena;
import dev.biflow.engine.Grad;
import dev.biflow.engine.Ops;
import dev.biflow.engine.Shape;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.plan.CpuExecutor;
import dev.biflow.engine.plan.Plan;
import dev.biflow.engine.plan.PlanBuilder;
import dev.biflow.engine.plan.Region;

/**
 * {@link TarFlow#lowerReverse} built once for batches of {@link #batch()} samples, without guidance or (for a
 * class-conditional flow) with it: guidance scale, annealing and attention temperature are per-run inputs, not part of
 * the plan. Everything a run reads is one contiguous arena region, {@link #input()}: x (B T, Cp^2), z sqrt(var), solved
 * in place into the tokens ({@link #tokens()}) | class rows (blocks B, D) | with guidance the unconditional class rows
 * (blocks B, D), the gains g_i (T - 1) and the unconditional logit scale (1). The host does only the gathers and the
 * O(B T Cp^2) elementwise work ({@link #fill}): z sqrt(var), class_embed[y] (MetaBlock.classTerm), g_i, the scale.
 * {@link TarFlow#reverse} runs it with {@link CpuExecutor} (the bits of the KV-cached decode it replaced);
 * ResidentTarFlow compiles it with OpenClPlan. Weights are read from the model at every CPU run.
 */
public final class TarFlowReversePlan {
    private final TarFlow f;
    private final Plan plan;
    private final boolean guided;
    private final Region in, x, cls, clsU, gains, uscale;

    private TarFlowReversePlan(TarFlow f, int batch, boolean guided) {
        TarFlowConfig c = f.config;
        if (guided && !c.conditional())
            throw new IllegalArgumentException("TarFlowReversePlan: guidance needs a class-conditional flow (num_classes > 0); build it without guidance");
        this.f = f;
        this.guided = guided;
        int b = batch, t = c.tokens(), td = c.tokenDim(), d = c.channels(), blocks = f.blocks.size();
        int nx = b * t * td, ncls = c.conditional() ? blocks * b * d : 0, n = nx + ncls * (guided ? 2 : 1) + (guided ? t : 0);
        PlanBuilder p = new PlanBuilder(batch);
        in = p.alloc(1, n);
        x = Region.of(in.off(), b * t, td);
        int o = in.off() + nx;
        cls = c.conditional() ? Region.of(o, blocks * b, d) : null;
        clsU = guided ? Region.of(o + ncls, blocks * b, d) : null;
        gains = guided ? Region.of(o + 2 * ncls, t - 1, 1) : null;
        uscale = guided ? Region.of(o + 2 * ncls + t - 1, 1, 1) : null;
        if (guided) f.decodeScale(1f); // every layer must scale alike: refused here, not at the first run
        f.lowerReverse(p, x, cls, clsU, gains, uscale);
        plan = p.build();
    }

    /** The plan of f's exact inverse for batches of exactly {@code batch} samples, with guidance (CFG) or without. */
    public static TarFlowReversePlan of(TarFlow f, int batch, boolean guided) { return new TarFlowReversePlan(f, batch, guided); }

    public Plan plan() { return plan; }

    public int batch() { return plan.batch(); }

    public boolean guided() { return guided; }

    /** The arena region a run's inputs are written to (see the class comment): one contiguous block. */
    public Region input() { return in; }

    /** The solved tokens (B T, Cp^2) in natural order, read after a run (the first floats of {@link #input()}). */
    public Region tokens() { return x; }

    /**
     * Writes a run's inputs into dst from off (the layout of {@link #input()}, relative to it): z (b, T, Cp^2) with
     * b &lt;= the plan's batch, scaled by sqrt(var); the class rows of labels y (as {@link TarFlow#reverse} takes them)
     * and, with guidance, the unconditional rows, the gains and the scale of g. Rows b .. batch are left as they are
     * (zero in a fresh array: padding; every op is per row, so padding never changes a real sample).
     */
    public void fill(float[] dst, int off, Tensor z, int[] y, TarFlow.Guidance g) {
        TarFlowConfig c = f.config;
        int batch = plan.batch(), t = c.tokens(), td = c.tokenDim(), d = c.channels(), blocks = f.blocks.size();
        if (z.dim() != 3 || z.size(0) > batch || z.size(1) != t || z.size(2) != td)
            throw new IllegalArgumentException("TarFlowReversePlan: z must be (b, " + t + ", " + td + ") with b <= " + batch + ", got " + Shape.str(z.shape())
                    + "; build a plan for the batch");
        if ((g.scale() > 0) != guided)
            throw new IllegalArgumentException("TarFlowReversePlan: this plan is " + (guided ? "for guidance > 0" : "without guidance") + ", got " + g
                    + "; use the plan built " + (guided ? "without" : "with") + " guidance");
        int b = z.size(0), base = off - in.off();
        try (var ng = Grad.noGrad()) {
            // reverse(): x = Ops.mul(z, Ops.sqrt(var))
            System.arraycopy(Ops.mul(z, Ops.sqrt(f.var)).data(), 0, dst, base + x.off(), b * t * td);
            if (cls != null)
                for (int k = 0; k < blocks; k++) {
                    TarFlow.MetaBlock blk = f.blocks.get(k);
                    // classTerm(y): (b, 1, D), or the mean (1, 1, D) for null labels; classTerm(null) for the unconditional pass
                    fillRows(dst, base + cls.row(k * batch), blk.classTerm(y).data(), b, d);
                    if (guided) fillRows(dst, base + clsU.row(k * batch), blk.classTerm(null).data(), b, d);
                }
        }
        if (guided) {
            // g_i = annealed ? (i + 1) / (T - 1) g : g, exactly as MetaBlock.solve computes it
            for (int i = 0; i < t - 1; i++) dst[base + gains.row(i)] = g.annealed() ? (i + 1f) / (t - 1) * g.scale() : g.scale();
            dst[base + uscale.off()] = f.decodeScale(g.attnTemp());
        }
    }

    /** rows b of d floats at dst[off ..): src holds b rows, or one row broadcast to all. */
    private static void fillRows(float[] dst, int off, float[] src, int b, int d) {
        for (int i = 0; i < b; i++) System.arraycopy(src, src.length == d ? 0 : i * d, dst, off + i * d, d);
    }

    /**
     * The exact inverse's tokens on the calling thread: z (B, T, Cp^2) with B the plan's batch, labels and guidance as
     * {@link TarFlow#reverse} takes them (checked there) -> x (B, T, Cp^2) in natural token order, before unpatchify.
     * The arena and the kernels' temporaries come from an Arena scope (a second call reuses the first one's arrays).
     */
    public Tensor tokens(Tensor z, int[] y, TarFlow.Guidance g) {
        int b = plan.batch(), n = b * f.config.tokens() * f.config.tokenDim();
        if (z.size(0) != b) throw new IllegalArgumentException("TarFlowReversePlan: z has " + z.size(0) + " samples, the plan " + b + "; build a plan for the batch");
        float[] out = new float[n];
        try (var ng = Grad.noGrad(); Arena scope = Arena.open()) {
            float[] a = Arena.floats(plan.size());
            fill(a, in.off(), z, y, g);
            CpuExecutor.run(plan, a);
            System.arraycopy(a, x.off(), out, 0, n);
        }
        return Tensor.of(out, b, f.config.tokens(), f.config.tokenDim());
    }
}
