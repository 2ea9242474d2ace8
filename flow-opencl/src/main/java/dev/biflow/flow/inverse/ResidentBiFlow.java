// BiFlow's 1-NFE sampler as one device-resident pass (module flow-opencl, so that flow needs no OpenCL): G's inference plan on the OpenCL device, one put (noise + condition) and one get (tokens) per call.
package dev.biflow.flow.inverse;

import dev.biflow.engine.Grad;
import dev.biflow.engine.Ops;
import dev.biflow.engine.Shape;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.plan.PlanBuilder;
import dev.biflow.engine.plan.Region;
import dev.biflow.gpu.OpenClBackend;
import dev.biflow.gpu.OpenClPlan;
import dev.biflow.gpu.Transfers;

import java.util.List;

/**
 * {@link BiFlowModel#sample} on the OpenCL device as one resident pass: G's inference plan
 * ({@link BiFlowModel#lower}, the one the CPU runs) compiled by {@link OpenClPlan}, on weights uploaded once at
 * build. Per {@link #sample} call: 1 put (the scaled noise z, the class-embedding row indices and the guidance
 * features of the batch), {@link #launchesPerSample()} launches (one per plan op, plus the copies in and out),
 * 1 get (G's output tokens). The host does only z = eps * sqrt(prior_var), [w, log1p(w)] and unpatchify.
 * Nothing goes through {@code Backend.active()}, so the counts hold whichever backend is active.
 *
 * <p>Supported: cfg NONE and TRAINING_TIME (any w the model accepts), TWO_PASS at w = 0 (one conditional
 * pass); every strategy (hidden alignment's projection heads are training-only: {@link BiFlowModel#sample}
 * never calls them). TWO_PASS with w &gt; 0 (two passes combined) throws {@link UnsupportedOperationException}.
 * Denoising by score (strategy SCORE) is {@link BiFlowSampler}'s step after G and needs F: this class returns
 * what {@code g.sample} returns, before it.
 *
 * <p>Batch: the program is built for a batch B; a call with b &lt; B samples pads the rest with zero noise and
 * class row 0 (every op is per row or per sample, so padding never changes a real sample; it costs the full
 * B's work), b &gt; B is an IllegalArgumentException: build one with a larger batch.
 *
 * <p>Weights are a snapshot taken at build ({@link #refreshWeights()} re-uploads, 1 put), except prior_var,
 * which is read on the host at every call.
 */
public final class ResidentBiFlow implements BiFlowSampler.Pass, AutoCloseable {
    private final BiFlowModel g;
    private final OpenClPlan plan;
    private final int batch, tokens, tokenDim;

    /** Builds G's resident pass for batches of up to {@code batch} samples on the backend's device (compiles, uploads the weights: 1 put, 1 empty launch). */
    public static ResidentBiFlow of(BiFlowModel g, OpenClBackend be, int batch) { return new ResidentBiFlow(g, be, batch); }

    private ResidentBiFlow(BiFlowModel g, OpenClBackend be, int batch) {
        if (batch < 1) throw new IllegalArgumentException("ResidentBiFlow: batch must be >= 1, got " + batch);
        BackwardConfig cfg = g.config;
        this.g = g;
        this.batch = batch;
        this.tokens = cfg.tokens();
        this.tokenDim = cfg.tokenDim();
        PlanBuilder p = new PlanBuilder(batch);
        Region z = p.alloc(batch * tokens, tokenDim), ids = p.alloc(batch, 1);
        Region features = g.wEmbed == null ? null : p.alloc(batch, 2);
        Region out = p.alloc(batch * tokens, tokenDim);
        g.lower(p, z, ids, features, out);
        this.plan = OpenClPlan.of(p.build(), be, features == null ? List.of(z, ids) : List.of(z, ids, features), List.of(out));
    }

    /**
     * {@code g.sample(eps, y, w)} in one resident pass: eps (b, T, C p^2) standard normal with
     * 1 &lt;= b &lt;= the built batch; labels as {@link BiFlowModel#forward}; returns data as
     * {@link BiFlowModel#toData}. 1 put, {@link #launchesPerSample()} launches, 1 get.
     */
    @Override
    public Tensor sample(Tensor eps, int[] y, float w) {
        BackwardConfig cfg = g.config;
        g.checkTokens(eps, "noise");
        int b = eps.size(0);
        if (b > batch)
            throw new IllegalArgumentException("ResidentBiFlow was built for batches of up to " + batch + " samples; eps " + Shape.str(eps.shape())
                    + " has " + b + ": build one with a larger batch or split the call");
        g.checkGuidance(w, y);
        if (cfg.cfg() == BackwardConfig.Cfg.TWO_PASS && w > 0)
            throw new UnsupportedOperationException("ResidentBiFlow runs one pass of G; cfg two-pass with w = " + w
                    + " needs two (conditional and null class): sample with --device cpu or per-op opencl (BiFlowModel.sample)");
        int zn = b * tokens * tokenDim;
        float[] z = new float[batch * tokens * tokenDim], ids = new float[batch]; // padding rows (b .. batch) stay zero
        try (var ng = Grad.noGrad()) {
            // sample(): generate(Ops.mul(eps, Ops.sqrt(priorVar)), y, w)
            System.arraycopy(Ops.mul(eps, Ops.sqrt(g.priorVar)).data(), 0, z, 0, zn);
        }
        int[] rows = g.classIds(y, b);
        for (int i = 0; i < b; i++) ids[i] = rows[i];
        float[][] out;
        if (g.wEmbed != null) {
            // generate() gives every sample the same w (training-time CFG)
            float[] ws = new float[batch];
            java.util.Arrays.fill(ws, 0, b, w);
            out = plan.run(z, ids, BiFlowModel.guidanceFeatures(ws, batch));
        } else {
            out = plan.run(z, ids);
        }
        return g.toData(Tensor.of(java.util.Arrays.copyOf(out[0], zn), b, tokens, tokenDim));
    }

    /** Launches of one {@link #sample} call (the copies in and out included). */
    public int launchesPerSample() { return plan.launchesPerRun(); }

    /** Launches and copies of this pass (build and calls). */
    public Transfers transfers() { return plan.transfers(); }

    /** The largest batch one call takes. */
    public int batch() { return batch; }

    /** The G this program was built from (its weights as of the build or the last {@link #refreshWeights}). */
    @Override
    public BiFlowModel model() { return g; }

    /** Re-uploads G's current parameters (1 put), e.g. after loading a checkpoint into the same model. */
    public void refreshWeights() { plan.refreshWeights(); }

    @Override
    public void close() { plan.close(); }
}
