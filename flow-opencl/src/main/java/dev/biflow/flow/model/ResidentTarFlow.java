// TARFlow's exact inverse (the KV-cached decode loop over every block) as one device-resident program: one put (noise, class rows, guidance gains) and one get (x) per call.
package dev.biflow.flow.model;

import dev.biflow.engine.Grad;
import dev.biflow.engine.Ops;
import dev.biflow.engine.Shape;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.nn.Activation;
import dev.biflow.engine.nn.MLP;
import dev.biflow.engine.nn.MultiHeadAttention;
import dev.biflow.gpu.OpenClBackend;
import dev.biflow.gpu.ResidentStack;
import dev.biflow.gpu.Transfers;

/**
 * {@link TarFlow#reverse} compiled into {@link ResidentStack} programs: the whole T-1 step decode
 * loop of every block (proj_in, pos and class embedding, each causal pre-norm layer with its KV
 * cache, proj_out, the norm-control bound, the CFG combine and the affine update x = z exp(a) + b)
 * is unrolled into launches of one kernel whose weights, activations and caches stay on the OpenCL
 * device. Per {@link #reverse} call: 1 put (z scaled by sqrt(var), every block's class rows, the
 * per-step guidance gains and the unconditional attention scale), {@link #launchesPerCall}
 * launches, 1 get (x in token form). The host does only gathers and O(B T C p^2) elementwise
 * work: z sqrt(var), class_embed[y] (MetaBlock.classTerm), the gains g_i, and unpatchify.
 *
 * <p>Launches per call: 2 (copy in, copy out) + per block (1 + (T - 1)(4 + 7 L)) for L layers per
 * block: a gather of token 0, then per step proj_in, pos + class add, 7 per layer (LayerNorm, qkv
 * straight into the cache row, decode attention, proj + residual, LayerNorm, fc1 + GELU, fc2 +
 * residual), proj_out, the coupling step (which also writes the solved token into the next step's
 * input rows). With guidance the conditional and unconditional passes are one batch of 2B rows (the
 * unconditional rows use the mean class embedding and scale / attn_temp), so the count is the same.
 *
 * <p>Two programs are built (weights uploaded once each): B rows for guidance 0, and, for a
 * class-conditional flow, 2B rows for CFG. Any guidance scale, annealing and temperature run on the
 * CFG program (they are per-call inputs, not baked into launches). Flipped blocks cost nothing:
 * a block's token i is natural token T-1-i by index (gather, pos_embed row, coupling target).
 *
 * <p>Batch: a call with b &lt; B samples pads the rest with zero noise and zero class rows (every
 * op is per row or per sample, so padding never changes a real sample); b &gt; B is an
 * IllegalArgumentException. Weights (class_embed and var included: they are read on the host at
 * every call, the rest at build) are a snapshot; {@link #refreshWeights()} re-uploads (1 put each program).
 *
 * <p>Activation regions (floats; R = B, or 2 B with CFG): IN = [x (B, T, td) | class rows (blocks,
 * R, D) | gains (T - 1) | unconditional scale (1)], copied in by one launch, x solved in place in
 * natural token order; XIN (R, td) a step's input token; H (R, D) the residual stream; N (R, D) a
 * pre-norm output; O (R, D) attention, heads merged; F (R, 4 D) MLP hidden; P (R, 2 td) proj_out;
 * a qkv cache (R, T, 3 D) per layer, reused by every block (step i writes row i before any query
 * reads it, so a block never sees the previous block's rows).
 */
public final class ResidentTarFlow implements AutoCloseable {
    private final TarFlow f;
    private final int batch, tokens, tokenDim, width, blocks;
    private final ResidentStack plain, guided; // guided is null for an unconditional flow
    private final int plainIn, guidedIn;        // io floats of each program

    /** Builds F's resident exact inverse for batches of up to {@code batch} samples (compiles, uploads the weights: 1 put + 1 launch per program). */
    public static ResidentTarFlow of(TarFlow f, OpenClBackend be, int batch) { return new ResidentTarFlow(f, be, batch); }

    private ResidentTarFlow(TarFlow f, OpenClBackend be, int batch) {
        if (f == null || be == null) throw new IllegalArgumentException("ResidentTarFlow: flow and backend must not be null");
        if (batch < 1) throw new IllegalArgumentException("ResidentTarFlow: batch must be >= 1, got " + batch);
        TarFlowConfig c = f.config;
        this.f = f;
        this.batch = batch;
        this.tokens = c.tokens();
        this.tokenDim = c.tokenDim();
        this.width = c.channels();
        this.blocks = f.blocks.size();
        if (tokens < 2) throw new UnsupportedOperationException("ResidentTarFlow: T = " + tokens + " has no decode step");
        for (TarFlow.MetaBlock b : f.blocks) for (TarFlow.AttentionBlock l : b.attnBlocks) checkLayer(l);
        this.plainIn = inFloats(false);
        this.guidedIn = inFloats(true);
        ResidentStack p = build(be, false), g = null;
        try {
            if (c.conditional()) g = build(be, true);
        } catch (RuntimeException e) {
            p.close();
            throw e;
        }
        this.plain = p;
        this.guided = g;
    }

    private int rows(boolean cfg) { return cfg ? 2 * batch : batch; }

    private int inFloats(boolean cfg) {
        int cls = f.config.conditional() ? blocks * rows(cfg) * width : 0;
        return batch * tokens * tokenDim + cls + (cfg ? tokens - 1 + 1 : 0);
    }

    /** The natural token of a block's i-th token: MetaBlock.order flips the token axis of flipped blocks. */
    private static int natural(TarFlow.MetaBlock b, int i, int t) { return b.flip ? t - 1 - i : i; }

    private ResidentStack build(OpenClBackend be, boolean cfg) {
        TarFlowConfig c = f.config;
        int t = tokens, td = tokenDim, d = width, r = rows(cfg), nIn = inFloats(cfg);
        int layers = c.layersPerBlock(), heads = d / c.headDim(), dh = c.headDim();
        boolean cond = c.conditional();
        ResidentStack.Program p = ResidentStack.program(be).input(nIn).output(batch, t, td);
        int in = p.act(nIn);
        int x = in, cls = x + batch * t * td;                       // x (B, T, td), natural order; class rows (blocks, R, D)
        int gains = cls + (cond ? blocks * r * d : 0), uscale = gains + t - 1; // only with CFG
        int hidden = f.blocks.get(0).attnBlocks.get(0).mlp.fc1().out;
        int xin = p.act((long) r * td), h = p.act((long) r * d), n = p.act((long) r * d), o = p.act((long) r * d),
                ff = p.act((long) r * hidden), prm = p.act((long) r * 2 * td);
        int[] cache = new int[layers];
        for (int l = 0; l < layers; l++) cache[l] = p.act((long) r * t * 3 * d); // (R, T, 3D): row i = token i's [q | k | v]
        double s = Math.pow(dh, -0.25);
        float scale = (float) (s * s); // MultiHeadAttention's headDim^-1/2 at temperature 1 (the conditional pass)
        ResidentStack.Program.Clip clip = switch (c.normControl()) {
            case NONE -> ResidentStack.Program.Clip.NONE;
            case HARD -> ResidentStack.Program.Clip.HARD;
            case SOFT -> ResidentStack.Program.Clip.SOFT;
        };

        p.copyIn(0, in, nIn);
        // TarFlow.reverse: for (i = blocks.size() - 1; i >= 0; i--) x = blocks.get(i).reverse(x, y, g)
        for (int k = blocks - 1; k >= 0; k--) {
            TarFlow.MetaBlock b = f.blocks.get(k);
            int pos = p.weight(b.posEmbed); // (T, D); order(posEmbed, 0)'s row i is row natural(i)
            int clsK = cls + k * r * d;
            // step i = 0 reads token 0 of order(z, 1); later steps' inputs are written by the coupling step
            p.gatherToken(x, xin, batch, t, td, natural(b, 0, t), r);
            for (int i = 0; i < t - 1; i++) {
                // step(): h = projIn(x[:, i]) + pos[i] (+ cls)                         (R, D)
                p.linear(b.projIn, xin, h, r);
                if (cond) p.addTable(pos + natural(b, i, t) * d, h, r, d, clsK);
                else p.addTable(pos + natural(b, i, t) * d, h, r, d);
                // for each AttentionBlock: x = x + attention(x, temp, cache[l]); x = x + mlp(x)
                for (int l = 0; l < layers; l++) {
                    TarFlow.AttentionBlock blk = b.attnBlocks.get(l);
                    MultiHeadAttention a = blk.attention;
                    MLP m = blk.mlp;
                    p.layerNorm(a.norm, h, n, r);
                    // qkv of this token appended to the cache (KVCache.append) by writing it at row i
                    p.linear(a.qkv, n, cache[l] + i * 3 * d, r, t * 3 * d, false, false);
                    // KVCache.attend(q, scale, causal): query i over keys 0..i; CFG rows B.. use scale / attnTemp
                    p.decodeAttention(cache[l], o, r, heads, t, dh, i, scale, cfg ? batch : r, cfg ? uscale : -1);
                    p.linear(a.proj, o, h, r, d, true, false);                    // x + proj(o)
                    p.layerNorm(m.norm, h, n, r);
                    p.linear(m.fc1(), n, ff, r, hidden, false, true);              // GELU(fc1(norm(x)))
                    p.linear(m.fc2(), ff, h, r, d, true, false);                   // x + fc2(...)
                }
                // normControl.apply(projOut(h), clip), chunk (xa, xb); guide(); x[i+1] = x[i+1] exp(xa) + xb
                p.linear(b.projOut, h, prm, r);
                p.coupleStep(prm, x, xin, batch, t, td, natural(b, i + 1, t), clip, c.clip(), cfg, gains, i);
            }
        }
        p.copyOut(x, 0, batch * t * td);
        return p.build();
    }

    /**
     * {@code f.reverse(z, y, g)} on the device: z (b, T, C p^2) with 1 &lt;= b &lt;= the built
     * batch, labels as {@link TarFlow#forward}; returns images (b, C, H, W). 1 put,
     * {@link #launchesPerCall(boolean)} launches, 1 get.
     */
    public Tensor reverse(Tensor z, int[] y, TarFlow.Guidance g) {
        TarFlowConfig c = f.config;
        if (z == null || z.dim() != 3 || z.size(1) != tokens || z.size(2) != tokenDim)
            throw new IllegalArgumentException("ResidentTarFlow expects noise (B, " + tokens + ", " + tokenDim + "), got "
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
        int r = rows(cfg), d = width, zn = b * tokens * tokenDim;
        float[] in = new float[cfg ? guidedIn : plainIn]; // padding samples (b .. batch) stay zero
        try (var ng = Grad.noGrad()) {
            // reverse(): x = Ops.mul(z, Ops.sqrt(var))
            System.arraycopy(Ops.mul(z, Ops.sqrt(f.var)).data(), 0, in, 0, zn);
            if (c.conditional()) {
                int cls = batch * tokens * tokenDim;
                for (int k = 0; k < blocks; k++) {
                    TarFlow.MetaBlock blk = f.blocks.get(k);
                    // classTerm(y): (b, 1, D), or the mean (1, 1, D) for null labels; classTerm(null) for the unconditional rows
                    fillRows(in, cls + k * r * d, blk.classTerm(y).data(), b, d);
                    if (cfg) fillRows(in, cls + k * r * d + batch * d, blk.classTerm(null).data(), b, d);
                }
                if (cfg) {
                    int gains = cls + blocks * r * d;
                    // g_i = annealed ? (i + 1) / (T - 1) g : g, exactly as MetaBlock.reverse computes it
                    for (int i = 0; i < tokens - 1; i++) in[gains + i] = g.annealed() ? (i + 1f) / (tokens - 1) * g.scale() : g.scale();
                    double s = Math.pow(f.config.headDim(), -0.25);
                    in[gains + tokens - 1] = (float) (s * s / g.attnTemp()); // the unconditional pass's attention scale
                }
            }
        }
        float[] out = (cfg ? guided : plain).run(in);
        float[] tok = new float[zn];
        System.arraycopy(out, 0, tok, 0, zn);
        try (var ng = Grad.noGrad()) {
            return f.unpatchify(Tensor.of(tok, b, tokens, tokenDim));
        }
    }

    /** rows b of d floats at in[off ..): src holds b rows, or one row broadcast to all. */
    private static void fillRows(float[] in, int off, float[] src, int b, int d) {
        for (int i = 0; i < b; i++) System.arraycopy(src, src.length == d ? 0 : i * d, in, off + i * d, d);
    }

    /** Launches of one {@link #reverse} call without guidance (false) or with it (true; the count is the same, the rows double). */
    public int launchesPerCall(boolean withGuidance) { return program(withGuidance).launchesPerRun(); }

    /** Launches and copies of one program (build and calls): false the guidance-0 program, true the CFG program. */
    public Transfers transfers(boolean withGuidance) { return program(withGuidance).transfers(); }

    /** Floats copied in per call (the io staging array; the get copies the same array back). */
    public int inputFloats(boolean withGuidance) { program(withGuidance); return withGuidance ? guidedIn : plainIn; }

    /** The largest batch one call takes. */
    public int batch() { return batch; }

    /** Re-uploads F's current parameters (1 put per program). */
    public void refreshWeights() {
        plain.refreshWeights();
        if (guided != null) guided.refreshWeights();
    }

    private ResidentStack program(boolean withGuidance) {
        if (withGuidance && guided == null) throw new IllegalStateException("ResidentTarFlow: an unconditional flow has no guided program");
        return withGuidance ? guided : plain;
    }

    @Override
    public void close() {
        plain.close();
        if (guided != null) guided.close();
    }

    private static void checkLayer(TarFlow.AttentionBlock l) {
        MultiHeadAttention a = l.attention;
        MLP m = l.mlp;
        if (a.norm == null || !a.causal || m.norm == null || !(m.main.get(1) instanceof Activation act) || act.kind != Activation.Kind.GELU
                || m.fc2().out != a.dim)
            throw new UnsupportedOperationException("ResidentTarFlow: layers must be ml-tarflow's AttentionBlock (causal pre-norm attention, "
                    + "pre-norm exact-GELU MLP); run the exact inverse with TarFlow.reverse instead");
    }
}
