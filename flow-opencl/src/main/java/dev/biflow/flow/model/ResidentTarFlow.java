// TARFlow's exact inverse on an OpenCL device: TarFlow.lowerReverse's plan compiled by OpenClPlan; one put (noise, class rows, guidance inputs) and one get (x) per call.
package dev.biflow.flow.model;

import dev.biflow.engine.Shape;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.plan.Region;
import dev.biflow.gpu.OpenClBackend;
import dev.biflow.gpu.OpenClPlan;
import dev.biflow.gpu.Transfers;

import java.util.List;

/**
 * {@link TarFlow#reverse} on the device: the plan the CPU runs ({@link TarFlowReversePlan}: the T-1 step KV-cached decode
 * of every block, with the conditional and unconditional passes, the norm-control bound, the CFG combine and the affine
 * update x = z exp(a) + b, all plan ops) compiled into one resident program by {@link OpenClPlan}, so there is one
 * lowering of the arithmetic and two executors of it. Per {@link #reverse} call: 1 put (the plan's input region: z
 * scaled by sqrt(var), every block's class rows, with guidance the unconditional rows, the gains g_i and the
 * unconditional logit scale, filled on the host by {@link TarFlowReversePlan#fill}), {@link #launchesPerCall} launches
 * (a copy in, one per plan op, a copy out), 1 get (x in token form); the host then unpatchifies.
 *
 * <p>Two programs are built (weights uploaded once each): one without guidance and, for a class-conditional flow, one
 * with it. Any guidance scale, annealing and temperature run on the guided program (per-call inputs, not baked into
 * launches). Flipped blocks cost nothing: a block's token i is natural token T-1-i by index.
 *
 * <p>Batch: a call with b &lt; B samples pads the rest with zero noise and zero class rows (every op is per row or per
 * sample, so padding never changes a real sample); b &gt; B is an IllegalArgumentException. Weights (class_embed and
 * var included: they are read on the host at every call, the rest at build) are a snapshot; {@link #refreshWeights()}
 * re-uploads (1 put each program). Results match the CPU within float reordering (ResidentTarFlowTest's tolerances).
 */
public final class ResidentTarFlow implements AutoCloseable {
    private final TarFlow f;
    private final int batch;
    private final TarFlowReversePlan plainPlan, guidedPlan; // guidedPlan is null for an unconditional flow
    private final OpenClPlan plain, guided;

    /** Builds F's resident exact inverse for batches of up to {@code batch} samples (compiles, uploads the weights: 1 put + 1 launch per program). */
    public static ResidentTarFlow of(TarFlow f, OpenClBackend be, int batch) { return new ResidentTarFlow(f, be, batch); }

    private ResidentTarFlow(TarFlow f, OpenClBackend be, int batch) {
        if (f == null || be == null) throw new IllegalArgumentException("ResidentTarFlow: flow and backend must not be null");
        if (batch < 1) throw new IllegalArgumentException("ResidentTarFlow: batch must be >= 1, got " + batch);
        if (f.config.tokens() < 2) throw new UnsupportedOperationException("ResidentTarFlow: T = " + f.config.tokens() + " has no decode step");
        this.f = f;
        this.batch = batch;
        this.plainPlan = TarFlowReversePlan.of(f, batch, false);
        this.guidedPlan = f.config.conditional() ? TarFlowReversePlan.of(f, batch, true) : null;
        OpenClPlan p = compile(plainPlan, be), g = null;
        try {
            if (guidedPlan != null) g = compile(guidedPlan, be);
        } catch (RuntimeException e) {
            p.close();
            throw e;
        }
        this.plain = p;
        this.guided = g;
    }

    private static OpenClPlan compile(TarFlowReversePlan plan, OpenClBackend be) {
        return OpenClPlan.of(plan.plan(), be, List.of(plan.input()), List.of(plan.tokens()));
    }

    /**
     * {@code f.reverse(z, y, g)} on the device: z (b, T, C p^2) with 1 &lt;= b &lt;= the built
     * batch, labels as {@link TarFlow#forward}; returns images (b, C, H, W). 1 put,
     * {@link #launchesPerCall(boolean)} launches, 1 get.
     */
    public Tensor reverse(Tensor z, int[] y, TarFlow.Guidance g) {
        TarFlowConfig c = f.config;
        int tokens = c.tokens(), td = c.tokenDim();
        if (z == null || z.dim() != 3 || z.size(1) != tokens || z.size(2) != td)
            throw new IllegalArgumentException("ResidentTarFlow expects noise (B, " + tokens + ", " + td + "), got "
                    + (z == null ? "null" : Shape.str(z.shape())));
        int b = z.size(0);
        if (b > batch)
            throw new IllegalArgumentException("ResidentTarFlow was built for batches of up to " + batch + " samples; z " + Shape.str(z.shape())
                    + " has " + b + ": build one with a larger batch or split the call");
        if (g == null) throw new IllegalArgumentException("ResidentTarFlow: guidance is null; pass TarFlow.Guidance.NONE");
        if (y != null) {
            if (!c.conditional()) throw new IllegalArgumentException("labels given to an unconditional model (num_classes = 0); pass null");
            if (y.length != b) throw new IllegalArgumentException(y.length + " labels for a batch of " + b);
            for (int v : y)
                if (v < -1 || v >= c.numClasses())
                    throw new IllegalArgumentException("label " + v + " is outside [0, " + c.numClasses() + ") (or -1 for a dropped label)");
        }
        boolean cfg = g.scale() > 0;
        if (cfg && (!c.conditional() || y == null))
            throw new IllegalArgumentException("guidance needs a class-conditional model and labels; pass guidance 0 or give labels");
        TarFlowReversePlan plan = cfg ? guidedPlan : plainPlan;
        Region in = plan.input();
        float[] io = new float[in.rows() * in.cols()]; // padding samples (b .. batch) stay zero
        plan.fill(io, 0, z, y, g);
        float[] x = (cfg ? guided : plain).run(io)[0];
        int n = b * tokens * td;
        float[] tok = n == x.length ? x : java.util.Arrays.copyOf(x, n);
        try (var ng = dev.biflow.engine.Grad.noGrad()) {
            return f.unpatchify(Tensor.of(tok, b, tokens, td));
        }
    }

    /** Launches of one {@link #reverse} call without guidance (false) or with it (true: both passes' ops). */
    public int launchesPerCall(boolean withGuidance) { return program(withGuidance).launchesPerRun(); }

    /** Launches and copies of one program (build and calls): false the guidance-0 program, true the CFG program. */
    public Transfers transfers(boolean withGuidance) { return program(withGuidance).transfers(); }

    /** Floats copied in per call (the plan's input region). */
    public int inputFloats(boolean withGuidance) {
        program(withGuidance);
        Region in = (withGuidance ? guidedPlan : plainPlan).input();
        return in.rows() * in.cols();
    }

    /** The largest batch one call takes. */
    public int batch() { return batch; }

    /** Re-uploads F's current parameters (1 put per program). */
    public void refreshWeights() {
        plain.refreshWeights();
        if (guided != null) guided.refreshWeights();
    }

    private OpenClPlan program(boolean withGuidance) {
        if (withGuidance && guided == null) throw new IllegalStateException("ResidentTarFlow: an unconditional flow has no guided program");
        return withGuidance ? guided : plain;
    }

    @Override
    public void close() {
        plain.close();
        if (guided != null) guided.close();
    }
}
