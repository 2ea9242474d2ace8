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
import dev.biflow.engine.plan.PlanBuilder;
import dev.biflow.engine.plan.PlanOp;
import dev.biflow.engine.plan.Region;

import java.util.ArrayList;
import java.util.List;

/**
 * The forward flow F: x (B, C, H, W) -> z (B, T, C p^2). Images are patchified into T tokens;
 * B blocks, alternately in identity and flipped token order, each an affine autoregressive
 * transform z_t = (x_t - b_t(x_<t)) * exp(-a_t(x_<t)) whose parameters come from a causal
 * Transformer, shifted by one token so token 0 passes unchanged. iTARFlow adds norm control:
 * (a, b) are clipped to [-c, c].
 *
 * <p>The exact inverse has two faces, written one beneath the other as every layer's forward and
 * lower: {@link MetaBlock#reverse} (the KV-cached decode on tensors, {@link #reverseKvCached}) and
 * {@link #lowerReverse} (the same decode as an inference plan). {@link #reverse} runs the plan on the
 * CPU; ResidentTarFlow (flow-opencl) runs it on an OpenCL device.
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
     * unconditional pass, which keeps its own caches). Runs {@link #lowerReverse}'s plan
     * ({@link TarFlowReversePlan}, built once per batch size and guidance on or off): the bits of
     * {@link #reverseKvCached}, the same decode on tensors.
     */
    public Tensor reverse(Tensor z, int[] y, Guidance g) {
        checkReverse(z, y, g);
        return splitRows(z, y, (zr, yr) -> reversePlan(zr.size(0), g.scale() > 0).tokens(zr, yr, g));
    }

    /**
     * {@link #reverse} on tensors: each block's {@link MetaBlock#reverse}, through the layers' KV-cached forward. What
     * the plan lowers, kept as its reference (the plan-versus-tensors tests compare the two bit for bit).
     */
    public Tensor reverseKvCached(Tensor z, int[] y, Guidance g) {
        checkReverse(z, y, g);
        return splitRows(z, y, (zr, yr) -> {
            try (var ng = Grad.noGrad(); Arena whole = Arena.open()) {
                Tensor x = Ops.mul(zr, Ops.sqrt(var));
                for (int i = blocks.size() - 1; i >= 0; i--) x = blocks.get(i).reverse(x, yr, g);
                return Tensor.of(x.toArray(), x.shape()); // (B, T, Cp^2), out of the scope's arrays
            }
        });
    }

    private void checkReverse(Tensor z, int[] y, Guidance g) {
        checkTokens(z);
        checkLabels(y, z.size(0));
        if (g.scale() > 0 && (!config.conditional() || y == null))
            throw new IllegalArgumentException("guidance needs a class-conditional model and labels; pass guidance 0 or give labels");
    }

    /** The plans of the exact inverse, by batch size and guidance (2 batch + 1 with guidance): built once each. */
    private final java.util.concurrent.ConcurrentHashMap<Integer, TarFlowReversePlan> reversePlans = new java.util.concurrent.ConcurrentHashMap<>();

    private TarFlowReversePlan reversePlan(int batch, boolean guided) {
        return reversePlans.computeIfAbsent(2 * batch + (guided ? 1 : 0), k -> TarFlowReversePlan.of(this, batch, guided));
    }

    /** How a thread turns its rows of z (and their labels) into tokens (rows, T, Cp^2). */
    @FunctionalInterface
    private interface RowsInverse {
        Tensor tokens(Tensor z, int[] y);
    }

    /** The exact inverse's tokens of all rows, split over threads, then unpatchified. */
    private Tensor splitRows(Tensor z, int[] y, RowsInverse rows) {
        int b = z.size(0);
        // (on the CPU only: an accelerator backend serialises its calls and gains nothing from host threads)
        if (Parallel.threads() == 1 || b < 2 || Parallel.inside() || dev.biflow.engine.Backend.active() != dev.biflow.engine.Backend.CPU)
            return image(rows.tokens(z, y));
        // Each thread decodes its own rows through every block, with its own KV caches: a decode step's ops (one token
        // of a batch) are too small to split between threads, a whole decode is not. Rows never mix, so the result is
        // the one-thread result bit for bit.
        int tokens = z.numel() / b;
        float[] out = new float[b * tokens], zd = z.data();
        Parallel.forRange(b, 1, (lo, hi) -> {
            Tensor zr = Tensor.of(java.util.Arrays.copyOfRange(zd, lo * tokens, hi * tokens), hi - lo, z.size(1), z.size(2));
            Tensor xr = rows.tokens(zr, y == null ? null : java.util.Arrays.copyOfRange(y, lo, hi));
            System.arraycopy(xr.data(), 0, out, lo * tokens, (hi - lo) * tokens);
        });
        return image(Tensor.of(out, z.shape()));
    }

    /** Tokens (B, T, Cp^2) -> images (B, C, H, W). */
    private Tensor image(Tensor tokens) {
        try (var ng = Grad.noGrad()) {
            return unpatchify(tokens);
        }
    }

    /**
     * {@link #reverse} after the host's z sqrt(var), for inference: x (B T, Cp^2), the scaled noise, is solved in place
     * into the tokens, block by block in reverse order ({@link MetaBlock#lowerReverse}). cls and clsU hold each block's
     * class rows, (blocks B, D) with block k's B rows at k B (classTerm(y) and, with guidance, classTerm(null)); null for
     * an unconditional flow, clsU null without guidance. gains (T - 1, 1) holds g_i per step and uscale (1, 1) the
     * unconditional pass's logit scale ({@link #decodeScale}); both null without guidance. {@link TarFlowReversePlan}
     * lays these out and fills them.
     */
    public void lowerReverse(PlanBuilder p, Region x, Region cls, Region clsU, Region gains, Region uscale) {
        int b = p.batch();
        for (int k = blocks.size() - 1; k >= 0; k--)
            blocks.get(k).lowerReverse(p, x, cls == null ? null : rows(cls, k * b, b), clsU == null ? null : rows(clsU, k * b, b), gains, uscale);
    }

    /** Rows [r0, r0 + n) of a region. */
    static Region rows(Region r, int r0, int n) {
        if (r0 < 0 || n < 0 || r0 + n > r.rows())
            throw new IllegalArgumentException("rows " + r0 + " .. " + (r0 + n) + " are outside " + r);
        return new Region(r.buf(), r.row(r0), n, r.cols(), r.ld());
    }

    /**
     * The unconditional pass's logit scale at an attention temperature, as the cached forward computes it
     * (MultiHeadAttention.decodeScale): the float a guided plan reads per run. Every layer must scale alike.
     */
    public float decodeScale(float attnTemp) {
        float s = blocks.get(0).attnBlocks.get(0).attention.decodeScale(attnTemp);
        for (MetaBlock blk : blocks)
            for (AttentionBlock l : blk.attnBlocks)
                if (Float.floatToIntBits(l.attention.decodeScale(attnTemp)) != Float.floatToIntBits(s))
                    throw new UnsupportedOperationException("TarFlow: the attention layers scale their logits differently (scaling or head dim); "
                            + "the exact inverse's plan takes one scale for the unconditional pass: give every layer the same scaling");
        return s;
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

        /**
         * Inverse of {@link #forward}: z (B, T, Cp^2) -> x, token by token, each step attending over KV caches. The
         * tensor face of the decode; {@link #lowerReverse} below lowers the same steps into a plan (what
         * TarFlow.reverse runs), and the plan-versus-tensors test holds the two to the same bits.
         */
        public Tensor reverse(Tensor z, int[] y, Guidance g) {
            int t = z.size(1);
            KVCache[] cond = KVCache.array(attnBlocks.size(), t), uncond = KVCache.array(attnBlocks.size(), t);
            return solve(z, y, g, (xt, pos, i, cls, temp, unconditional) -> step(xt, pos, i, cls, temp, unconditional ? uncond : cond));
        }

        /**
         * {@link #reverse} for inference: x (B T, Cp^2) in natural token order, solved in place (a flipped block's token
         * i is natural token T-1-i by index, so no flipped copy is made); cls (B, D) the class rows (null: none), clsU
         * (B, D) the unconditional pass's (null: no guidance), gains (T - 1, 1) g_i per step and uscale (1, 1) the
         * unconditional pass's logit scale (with guidance). Each pass keeps its own KV cache per layer: keys (B H Dh, T),
         * values (B H T, Dh), plan temporaries of this block (step i writes row i before any query reads it).
         */
        void lowerReverse(PlanBuilder p, Region x, Region cls, Region clsU, Region gains, Region uscale) {
            int b = p.batch(), t = cfg.tokens(), td = cfg.tokenDim(), layers = attnBlocks.size();
            boolean guided = gains != null;
            if (x.rows() != b * t || x.cols() != td || !x.contiguous())
                throw new IllegalArgumentException("MetaBlock.lowerReverse: x " + x + " must be (B T, Cp^2) = (" + b * t + ", " + td + "), contiguous");
            if (guided && (clsU == null && cfg.conditional() || uscale == null || gains.rows() < t - 1))
                throw new IllegalArgumentException("MetaBlock.lowerReverse: guidance needs the unconditional class rows, T - 1 gains and the unconditional scale");
            int mark = p.mark();
            Region[] keys = new Region[layers], values = new Region[layers], keysU = new Region[layers], valuesU = new Region[layers];
            for (int l = 0; l < layers; l++) {
                MultiHeadAttention a = attnBlocks.get(l).attention;
                keys[l] = p.alloc(b * a.heads * a.headDim, t);  // (B, H, Dh, T): KVCache's transposed keys
                values[l] = p.alloc(b * a.heads * t, a.headDim); // (B, H, T, Dh)
                if (guided) {
                    keysU[l] = p.alloc(b * a.heads * a.headDim, t);
                    valuesU[l] = p.alloc(b * a.heads * t, a.headDim);
                }
            }
            Region prm = p.alloc(b, 2 * td), prmU = guided ? p.alloc(b, 2 * td) : null; // (B, 2 Cp^2): [a | b] of token i + 1
            PlanOp.Bound bound = switch (cfg.normControl()) {
                case NONE -> PlanOp.Bound.NONE;
                case HARD -> PlanOp.Bound.HARD;
                case SOFT -> PlanOp.Bound.SOFT;
            };
            // solve(): for i = 0 .. T-2, the params of token i + 1 from tokens 0..i, then x_{i+1} = z_{i+1} exp(a) + b
            for (int i = 0; i < t - 1; i++) {
                Region xi = token(x, natural(i), b);
                lowerStep(p, xi, natural(i), i, cls, 1f, null, keys, values, prm);
                if (guided) lowerStep(p, xi, natural(i), i, clsU, 1f, uscale, keysU, valuesU, prmU);
                p.add(new PlanOp.CouplingStep(prm, prmU, guided ? new Region(gains.buf(), gains.row(i), 1, 1, 1) : null, bound, cfg.clip(),
                        token(x, natural(i + 1), b)));
            }
            p.release(mark);
        }

        /** The natural token of this block's i-th token: order() flips the token axis of a flipped block. */
        private int natural(int i) { return flip ? cfg.tokens() - 1 - i : i; }

        /** Token j of every example of x (B T, Cp^2): B rows T Cp^2 apart. */
        private Region token(Region x, int j, int b) {
            int td = cfg.tokenDim();
            return new Region(x.buf(), x.off() + j * td, b, td, cfg.tokens() * td);
        }

        /**
         * {@link #step} for inference: xi (B, Cp^2) the token at block position i (natural token pos), cls (B, D) or null,
         * the attention temperature (or the logit scale read at scaleAt), this pass's caches -> prm (B, 2 Cp^2), proj_out's
         * output before the bound (the coupling step bounds it).
         */
        private void lowerStep(PlanBuilder p, Region xi, int pos, int i, Region cls, float temp, Region scaleAt, Region[] keys, Region[] values,
                               Region prm) {
            int mark = p.mark();
            Region h = p.alloc(xi.rows(), cfg.channels()), tmp = p.alloc(xi.rows(), cfg.channels()); // (B, D) each
            projIn.lower(p, xi, h);
            p.add(new PlanOp.AddRow(h, posEmbed, pos, h));
            if (cls != null) p.add(new PlanOp.Add(h, cls, h));
            for (int l = 0; l < attnBlocks.size(); l++) attnBlocks.get(l).lowerDecode(p, h, tmp, keys[l], values[l], i, temp, scaleAt);
            projOut.lower(p, h, prm);
            p.release(mark);
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

        /**
         * {@link #forward} with a KV cache, for inference, one token per example: h (B, D) is updated in place (tmp (B, D)
         * holds h + attention(h) in between); keys and values are this layer's cache regions, step the token's position.
         */
        void lowerDecode(PlanBuilder p, Region h, Region tmp, Region keys, Region values, int step, float temp, Region scaleAt) {
            attention.lowerDecode(p, h, tmp, PlanOp.Epilogue.add(h), keys, values, step, temp, scaleAt); // x + attention(x, temp, cache)
            mlp.lower(p, tmp, h, PlanOp.Epilogue.add(tmp));                                               // x + mlp(x)
        }
    }
}
