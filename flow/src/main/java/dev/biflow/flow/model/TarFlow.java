// TARFlow / iTARFlow (transformer autoregressive flow), read beside apple/ml-tarflow's transformer_flow.py.
package dev.biflow.flow.model;

import dev.biflow.engine.Arena;
import dev.biflow.engine.Fused;
import dev.biflow.engine.Grad;
import dev.biflow.engine.Ops;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.kernels.Parallel;
import dev.biflow.engine.nn.Init;
import dev.biflow.engine.nn.KVCache;
import dev.biflow.engine.nn.Linear;
import dev.biflow.engine.nn.MLP;
import dev.biflow.engine.nn.Module;
import dev.biflow.engine.nn.ModuleList;
import dev.biflow.engine.nn.MultiHeadAttention;

import java.util.ArrayList;
import java.util.List;

/**
 * The forward flow F: x (B, C, H, W) -> z (B, T, C p^2). Images are patchified into T tokens;
 * B blocks, alternately in identity and flipped token order, each an affine autoregressive
 * transform z_t = (x_t - b_t(x_<t)) * exp(-a_t(x_<t)) whose parameters come from a causal
 * Transformer, shifted by one token so token 0 passes unchanged. iTARFlow adds norm control:
 * (a, b) are clipped to [-c, c].
 *
 * <p>Parameter names equal ml-tarflow's {@code Model.state_dict()}, so checkpoints move both ways.
 */
public final class TarFlow extends Module {
    /** ml-tarflow's learning rate for the running prior variance. */
    public static final float VAR_LR = 0.1f;

    public final TarFlowConfig config;
    public final ModuleList<MetaBlock> blocks;
    /** Prior variance per token value (T, C p^2): z ~ N(0, var) at sampling. */
    public final Tensor var;

    public TarFlow(TarFlowConfig config, Rng rng) {
        this.config = config;
        this.blocks = registerModule("blocks", new ModuleList<>());
        for (int i = 0; i < config.numBlocks(); i++) blocks.add(new MetaBlock(config, i % 2 == 1, rng));
        this.var = registerBuffer("var", Tensor.ones(config.tokens(), config.tokenDim()));
    }

    /** z, each block's output, and the summed log-determinant per dimension, (B,). */
    public record Forward(Tensor z, List<Tensor> outputs, Tensor logdet) {}

    public Tensor patchify(Tensor x) { return Fused.patchify(x, config.patchSize()); }

    public Tensor unpatchify(Tensor z) {
        return Fused.unpatchify(z, config.inChannels(), config.imgSize(), config.imgSize(), config.patchSize());
    }

    /**
     * x (B, C, H, W) -> z (B, T, Cp^2). y: class labels (B), -1 for a dropped label (uses the
     * mean class embedding), or null for unconditional.
     */
    public Forward forward(Tensor x, int[] y) {
        checkImages(x);
        checkLabels(y, x.size(0));
        Tensor h = patchify(x); // (B, T, Cp^2)
        Tensor logdets = null;
        List<Tensor> outs = new ArrayList<>();
        for (MetaBlock block : blocks) {
            Tensor[] r = block.forward(h, y);
            h = r[0];
            logdets = logdets == null ? r[1] : Ops.add(logdets, r[1]);
            outs.add(h);
        }
        return new Forward(h, outs, logdets);
    }

    /** ml-tarflow's loss: NLL per dimension without constants, 0.5 mean(z^2) - mean(logdet). */
    public static Tensor loss(Forward f) {
        return Ops.sub(Ops.mulScalar(Ops.mean(Ops.square(f.z())), 0.5f), Ops.mean(f.logdet()));
    }

    /** Moves the prior variance toward the batch's E[z^2] (outside autograd). */
    public void updatePrior(Tensor z) { updatePrior(priorSquares(z), z.size(0)); }

    /** Per value of z (T * Cp^2), the sum over the batch of z^2: what {@link #updatePrior} needs, summable over shards of a batch. */
    public double[] priorSquares(Tensor z) {
        int b = z.size(0), n = var.numel();
        float[] zd = z.data();
        double[] s = new double[n];
        for (int j = 0; j < n; j++)
            for (int i = 0; i < b; i++) s[j] += (double) zd[i * n + j] * zd[i * n + j];
        return s;
    }

    /** Moves the prior variance toward E[z^2] = sums / b of a batch of b (sums from {@link #priorSquares}, added over shards). */
    public void updatePrior(double[] sums, int b) {
        float[] v = var.data();
        if (sums.length != v.length) throw new IllegalArgumentException(sums.length + " sums of z^2 for a prior of " + v.length + " values");
        for (int j = 0; j < v.length; j++) v[j] += VAR_LR * ((float) (sums[j] / b) - v[j]);
    }

    /**
     * log p(x) per image (B,), in nats, under the prior N(0, var) on z: the density the sampler
     * draws from. log p = -0.5 sum(z^2 / var + log(2 pi var)) + D * sum_blocks logdet, where each
     * block's logdet is per dimension (ml-tarflow's convention).
     */
    public Tensor logProb(Tensor x, int[] y) {
        Forward f = forward(x, y);
        int d = config.dims();
        Tensor zz = Ops.div(Ops.square(f.z()), var); // (B, T, Cp^2)
        double logNorm = 0;
        for (float v : var.data()) logNorm += Math.log(2 * Math.PI * v);
        Tensor quad = Ops.sum(zz, new int[]{1, 2}, false); // (B,)
        return Ops.add(Ops.addScalar(Ops.mulScalar(quad, -0.5f), (float) (-0.5 * logNorm)), Ops.mulScalar(f.logdet(), d));
    }

    /**
     * Score-based denoising (Tweedie): x + sigma^2 * grad_x log p(x), one backward pass through
     * F. The model was trained on x + sigma * eps, so its density is that of noisy images.
     */
    public Tensor denoise(Tensor x, int[] y, float sigma) {
        Tensor xv = x.copy().requiresGrad(true);
        Tensor lp = Ops.sum(logProb(xv, y));
        Tensor score = dev.biflow.engine.Grad.grad(lp, null, xv)[0];
        try (var ng = Grad.noGrad()) {
            return Ops.add(x, Ops.mulScalar(score, sigma * sigma));
        }
    }

    /** Guidance at sampling: scale g, annealed g_i = (i+1)/(T-1) g, and the unconditional pass's attention temperature. */
    public record Guidance(float scale, boolean annealed, float attnTemp) {
        public static final Guidance NONE = new Guidance(0f, false, 1f);

        public Guidance {
            if (scale < 0) throw new IllegalArgumentException("guidance scale must be >= 0, got " + scale);
            if (!(attnTemp > 0)) throw new IllegalArgumentException("attention temperature must be > 0, got " + attnTemp);
        }
    }

    /**
     * The exact inverse: z (B, T, Cp^2) -> x (B, C, H, W). Blocks in reverse order; in each, T-1
     * serial steps feed token i through the layers with a KV cache and solve token i+1. z is
     * first scaled by the prior's sqrt(var). Guidance needs labels (it contrasts with the
     * unconditional pass, which keeps its own caches).
     */
    public Tensor reverse(Tensor z, int[] y, Guidance g) {
        checkTokens(z);
        checkLabels(y, z.size(0));
        if (g.scale() > 0 && (!config.conditional() || y == null))
            throw new IllegalArgumentException("guidance needs a class-conditional model and labels; pass guidance 0 or give labels");
        int b = z.size(0);
        // (on the CPU only: an accelerator backend serialises its calls and gains nothing from host threads)
        if (Parallel.threads() == 1 || b < 2 || Parallel.inside() || dev.biflow.engine.Backend.active() != dev.biflow.engine.Backend.CPU)
            return reverseRows(z, y, g);
        // Each thread decodes its own rows through every block, with its own KV caches: a decode step's ops (one token
        // of a batch) are too small to split between threads, a whole decode is not. Rows never mix, so the result is
        // the one-thread result bit for bit.
        int per = config.inChannels() * config.imgSize() * config.imgSize(), tokens = z.numel() / b;
        float[] out = new float[b * per], zd = z.data();
        Parallel.forRange(b, 1, (lo, hi) -> {
            Tensor zr = Tensor.of(java.util.Arrays.copyOfRange(zd, lo * tokens, hi * tokens), hi - lo, z.size(1), z.size(2));
            Tensor xr = reverseRows(zr, y == null ? null : java.util.Arrays.copyOfRange(y, lo, hi), g);
            System.arraycopy(xr.data(), 0, out, lo * per, (hi - lo) * per);
        });
        return Tensor.of(out, b, config.inChannels(), config.imgSize(), config.imgSize());
    }

    /**
     * The exact inverse of these rows on the calling thread (grad off here: the mode is per thread). Its KV caches and
     * temporaries come from an Arena scope, so a second call reuses the first call's arrays; the tokens are copied out.
     */
    private Tensor reverseRows(Tensor z, int[] y, Guidance g) {
        Tensor tokens;
        try (var ng = Grad.noGrad(); Arena whole = Arena.open()) {
            Tensor x = Ops.mul(z, Ops.sqrt(var));
            for (int i = blocks.size() - 1; i >= 0; i--) x = blocks.get(i).reverse(x, y, g);
            tokens = Tensor.of(x.toArray(), x.shape()); // (B, T, Cp^2), out of the scope's arrays
        }
        try (var ng = Grad.noGrad()) {
            return unpatchify(tokens);
        }
    }

    /** The exact inverse without a KV cache (each step re-runs the whole prefix): a reference for tests. */
    public Tensor reverseUncached(Tensor z, int[] y, Guidance g) {
        checkTokens(z);
        try (var ng = Grad.noGrad()) {
            Tensor x = Ops.mul(z, Ops.sqrt(var));
            for (int i = blocks.size() - 1; i >= 0; i--) x = blocks.get(i).reverseUncached(x, y, g);
            return unpatchify(x);
        }
    }

    private void checkImages(Tensor x) {
        int c = config.inChannels(), s = config.imgSize();
        if (x.dim() != 4 || x.size(1) != c || x.size(2) != s || x.size(3) != s)
            throw new IllegalArgumentException("TarFlow expects images (B, " + c + ", " + s + ", " + s + "), got "
                    + dev.biflow.engine.Shape.str(x.shape()) + "; the model was built for " + config.toJson());
    }

    private void checkTokens(Tensor z) {
        if (z.dim() != 3 || z.size(1) != config.tokens() || z.size(2) != config.tokenDim())
            throw new IllegalArgumentException("TarFlow expects noise (B, " + config.tokens() + ", " + config.tokenDim() + "), got "
                    + dev.biflow.engine.Shape.str(z.shape()));
    }

    private void checkLabels(int[] y, int batch) {
        if (y == null) return;
        if (!config.conditional())
            throw new IllegalArgumentException("labels given to an unconditional model (num_classes = 0); pass null");
        if (y.length != batch) throw new IllegalArgumentException(y.length + " labels for a batch of " + batch);
        for (int v : y)
            if (v < -1 || v >= config.numClasses())
                throw new IllegalArgumentException("label " + v + " is outside [0, " + config.numClasses() + ") (or -1 for a dropped label)");
    }

    // ==================================================================== one flow block

    /** ml-tarflow's MetaBlock: one affine autoregressive transform in a fixed token order. */
    public static final class MetaBlock extends Module {
        final TarFlowConfig cfg;
        /** True for blocks that read the tokens in reverse order. */
        public final boolean flip;
        public final Linear projIn, projOut;
        public final Tensor posEmbed, classEmbed;
        public final ModuleList<AttentionBlock> attnBlocks;

        MetaBlock(TarFlowConfig cfg, boolean flip, Rng rng) {
            this.cfg = cfg;
            this.flip = flip;
            int d = cfg.channels(), t = cfg.tokens(), td = cfg.tokenDim();
            projIn = registerModule("proj_in", new Linear(td, d, true, rng));
            posEmbed = registerParameter("pos_embed", Init.normal(Tensor.zeros(t, d), rng, 0, 1e-2));
            classEmbed = cfg.conditional()
                    ? registerParameter("class_embed", Init.normal(Tensor.zeros(cfg.numClasses(), 1, d), rng, 0, 1e-2)) : null;
            attnBlocks = registerModule("attn_blocks", new ModuleList<>());
            for (int j = 0; j < cfg.layersPerBlock(); j++) attnBlocks.add(new AttentionBlock(d, cfg.headDim(), rng));
            projOut = registerModule("proj_out", new Linear(d, 2 * td, true, rng));
            Init.zeros(projOut.weight); // start as the identity map: a = 0 means no scaling
        }

        private Tensor order(Tensor x, int axis) { return flip ? Ops.flip(x, axis) : x; }

        /** The class term (B, 1, D) or (1, 1, D): embedding of y, the mean embedding where y = -1 or y is null. */
        Tensor classTerm(int[] y) {
            if (classEmbed == null) return null;
            Tensor mean = Ops.mean(classEmbed, new int[]{0}, true); // (1, 1, D)
            if (y == null) return mean;
            int[] ids = new int[y.length];
            boolean anyDropped = false;
            float[] m = new float[y.length];
            for (int i = 0; i < y.length; i++) {
                ids[i] = Math.max(0, y[i]);
                if (y[i] < 0) { m[i] = 1f; anyDropped = true; }
            }
            Tensor e = Ops.indexSelect(classEmbed, 0, ids); // (B, 1, D)
            if (!anyDropped) return e;
            return Ops.where(Tensor.of(m, y.length, 1, 1), mean, e);
        }

        /** x (B, T, Cp^2) in natural order -> {z (B, T, Cp^2), logdet (B,)}. */
        public Tensor[] forward(Tensor x, int[] y) {
            int b = x.size(0), t = x.size(1), td = x.size(2);
            Tensor xin = order(x, 1);
            Tensor h = Ops.add(projIn.forward(xin), order(posEmbed, 0)); // (B, T, D)
            Tensor c = classTerm(y);
            if (c != null) h = Ops.add(h, c);
            for (AttentionBlock blk : attnBlocks) h = blk.forward(h, 1f, null);
            Tensor out = projOut.forward(h); // (B, T, 2 Cp^2)
            // shift by one token: the params of token t come from tokens < t; token 0 passes unchanged
            out = Ops.concat(1, Tensor.zeros(b, 1, 2 * td), Ops.narrow(out, 1, 0, t - 1));
            out = cfg.normControl().apply(out, cfg.clip());
            Tensor[] ab = Ops.chunk(out, 2, 2);
            Tensor xa = ab[0], xb = ab[1]; // (B, T, Cp^2) each
            Tensor z = Ops.mul(Ops.sub(xin, xb), Ops.exp(Ops.neg(xa)));
            Tensor logdet = Ops.neg(Ops.mean(xa, new int[]{1, 2}, false)); // (B,)
            return new Tensor[]{order(z, 1), logdet};
        }

        /** The params (xa, xb) of token i+1 from token i, through the layers with KV caches; (B, 1, Cp^2) each. */
        private Tensor[] step(Tensor x, Tensor pos, int i, Tensor cls, float temp, KVCache[] caches) {
            Tensor h = Ops.add(projIn.forward(Ops.narrow(x, 1, i, 1)), Ops.narrow(pos, 0, i, 1)); // (B, 1, D)
            if (cls != null) h = Ops.add(h, cls);
            for (int l = 0; l < attnBlocks.size(); l++) h = attnBlocks.get(l).forward(h, temp, caches[l]);
            Tensor out = cfg.normControl().apply(projOut.forward(h), cfg.clip()); // (B, 1, 2 Cp^2)
            return Ops.chunk(out, 2, 2);
        }

        /** Inverse of {@link #forward}: z (B, T, Cp^2) -> x, token by token, each step attending over KV caches. */
        public Tensor reverse(Tensor z, int[] y, Guidance g) {
            int t = z.size(1);
            KVCache[] cond = KVCache.array(attnBlocks.size(), t), uncond = KVCache.array(attnBlocks.size(), t);
            return solve(z, y, g, (xt, pos, i, cls, temp, unconditional) -> step(xt, pos, i, cls, temp, unconditional ? uncond : cond));
        }

        /** Reference inverse without caches: step i re-runs tokens 0..i through the causal stack. */
        Tensor reverseUncached(Tensor z, int[] y, Guidance g) {
            return solve(z, y, g, (xt, pos, i, cls, temp, unconditional) -> prefixParams(xt, pos, i, cls, temp));
        }

        /** How a solve step gets (a, b) of token i + 1 from the tokens 0..i of xt solved so far. */
        @FunctionalInterface
        private interface StepParams {
            Tensor[] at(Tensor xt, Tensor pos, int i, Tensor cls, float temp, boolean unconditional);
        }

        /**
         * The exact inverse, shared by both forms: x_0 = z_0, then for i = 0 .. T-2,
         * x_{i+1} = z_{i+1} exp(a_i) + b_i with (a_i, b_i) from x_0..x_i; with guidance the
         * unconditional pass's parameters are extrapolated from, (a + g_i (a - a_u), b likewise).
         */
        private Tensor solve(Tensor z, int[] y, Guidance g, StepParams params) {
            int b = z.size(0), t = z.size(1), td = z.size(2);
            float[] x = order(z, 1).toArray(); // (B, T, Cp^2), solved in place
            Tensor xt = Tensor.of(x, b, t, td);
            Tensor pos = order(posEmbed, 0);
            Tensor cls = classTerm(y), clsU = classTerm(null);
            for (int i = 0; i < t - 1; i++) {
                // a decode step's temporaries are dead once token i+1 is solved (the KV caches keep copies): reused arrays
                try (Arena step = Arena.open()) {
                    Tensor[] ab = params.at(xt, pos, i, cls, 1f, false);
                    float[] xa = ab[0].data(), xb = ab[1].data();
                    if (g.scale() > 0) {
                        Tensor[] abU = params.at(xt, pos, i, clsU, g.attnTemp(), true);
                        float gi = g.annealed() ? (i + 1f) / (t - 1) * g.scale() : g.scale();
                        xa = guide(xa, abU[0].data(), gi);
                        xb = guide(xb, abU[1].data(), gi);
                    }
                    for (int s = 0; s < b; s++) {
                        int base = (s * t + i + 1) * td;
                        for (int j = 0; j < td; j++) x[base + j] = x[base + j] * (float) Math.exp(xa[s * td + j]) + xb[s * td + j];
                    }
                }
            }
            return order(xt, 1);
        }

        private Tensor[] prefixParams(Tensor x, Tensor pos, int i, Tensor cls, float temp) {
            Tensor h = Ops.add(projIn.forward(Ops.narrow(x, 1, 0, i + 1)), Ops.narrow(pos, 0, 0, i + 1));
            if (cls != null) h = Ops.add(h, cls);
            for (AttentionBlock blk : attnBlocks) h = blk.forward(h, temp, null);
            Tensor out = cfg.normControl().apply(projOut.forward(Ops.narrow(h, 1, i, 1)), cfg.clip());
            return Ops.chunk(out, 2, 2);
        }

        private static float[] guide(float[] c, float[] u, float g) {
            float[] r = new float[c.length];
            for (int k = 0; k < c.length; k++) r[k] = c[k] + g * (c[k] - u[k]);
            return r;
        }
    }

    /** ml-tarflow's AttentionBlock: x + attention(norm(x)), then x + mlp(norm(x)); causal. */
    public static final class AttentionBlock extends Module {
        public final MultiHeadAttention attention;
        public final MLP mlp;

        AttentionBlock(int d, int headDim, Rng rng) {
            attention = registerModule("attention", MultiHeadAttention.withHeadDim(d, headDim, true, true, rng));
            mlp = registerModule("mlp", new MLP(d, 4, true, rng));
        }

        public Tensor forward(Tensor x, float temp, KVCache cache) {
            x = Ops.add(x, attention.forward(x, null, temp, cache));
            return mlp.forwardAdd(x); // x + mlp(x); in a no-grad scope the add is fused into fc2's GEMM (same bits)
        }
    }
}
