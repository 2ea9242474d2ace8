// BiFlow's 1-NFE sampler as one device-resident pass: G's whole forward on the OpenCL device, one put (noise + condition) and one get (tokens) per call.
package dev.biflow.flow.backward;

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

import java.util.ArrayList;
import java.util.List;

/**
 * {@link BiFlowModel#sample} compiled into one {@link ResidentStack} program: every Linear (the
 * adaLN ones included), LayerNorm, attention, GELU, modulate and gated residual of G runs on the
 * OpenCL device, on weights uploaded once at build. Per {@link #sample} call: 1 put (the scaled
 * noise z, the class-embedding rows and the guidance features of the batch), {@link #launchesPerSample()}
 * launches, 1 get (G's output tokens). The host does only what is a gather or O(B T C p^2)
 * elementwise: z = eps * sqrt(prior_var), class_embed[y], [w, log1p(w)], and unpatchify.
 * Launches: 13 + 12 L for L layers (stages' and denoising) with training-time CFG, 9 + 12 L
 * without (no w_embed), + 4 per stage with hidden distillation. Nothing goes through
 * {@code Backend.active()}, so the counts hold whichever backend is active.
 *
 * <p>Supported: cfg NONE and TRAINING_TIME (any w the model accepts), TWO_PASS at w = 0 (one
 * conditional pass); strategies NAIVE, HIDDEN_DISTILLATION (to_state / from_state run on the device)
 * and HIDDEN_ALIGNMENT (its projection heads are training-only: {@link BiFlowModel#sample} never
 * calls them). TWO_PASS with w &gt; 0 (two passes combined) throws {@link UnsupportedOperationException}.
 * Denoising by score (strategy SCORE) is {@link BiFlowSampler}'s step after G and needs F: this
 * class returns what {@code g.sample} returns, before it.
 *
 * <p>Batch: the program is built for a batch B; a call with b &lt; B samples pads the rest with zero
 * noise (every op is per row or per sample, so padding never changes a real sample; it costs the full
 * B's work), b &gt; B is an IllegalArgumentException: build one with a larger batch.
 *
 * <p>Weights are a snapshot taken at build ({@link #refreshWeights()} re-uploads, 1 put), except
 * class_embed and prior_var, which are read on the host at every call.
 *
 * <p>Activation regions (floats; rows = B T): IN = [z (B, T, C p^2) | class rows (B, D) | w
 * features (B, 2)], the io input copied in by one launch; E (B, D) w_embed's hidden; C (B, D) SiLU(c);
 * ADA (B, A) every adaLN output side by side, A = 6 D per layer + 2 D for the final layer; H (rows,
 * D) the residual stream; N (rows, D) norm + modulate; QKV (rows, 3 D); O (rows, D) attention,
 * heads merged; P (rows, D) a branch's output before its gated add; F (rows, 4 D) MLP hidden;
 * S (rows, C p^2) a distillation state, then the output tokens.
 */
public final class ResidentBiFlow implements AutoCloseable {
    private final BiFlowModel g;
    private final ResidentStack stack;
    private final int batch, tokens, tokenDim, width;
    private final int inFloats;

    /** Builds G's resident pass for batches of up to {@code batch} samples on the backend's device (compiles, uploads the weights: 1 put, 1 empty launch). */
    public static ResidentBiFlow of(BiFlowModel g, OpenClBackend be, int batch) { return new ResidentBiFlow(g, be, batch); }

    private ResidentBiFlow(BiFlowModel g, OpenClBackend be, int batch) {
        if (batch < 1) throw new IllegalArgumentException("ResidentBiFlow: batch must be >= 1, got " + batch);
        BackwardConfig cfg = g.config;
        this.g = g;
        this.batch = batch;
        this.tokens = cfg.tokens();
        this.tokenDim = cfg.tokenDim();
        this.width = cfg.width();
        int d = width, t = tokens, td = tokenDim, rows = batch * t;
        List<BiFlowModel.Layer> layers = new ArrayList<>();
        for (BiFlowModel.Stage st : g.stages) for (BiFlowModel.Layer l : st.layers) layers.add(l);
        for (BiFlowModel.Layer l : g.denoise) layers.add(l);
        for (BiFlowModel.Layer l : layers) checkLayer(l);
        boolean tt = g.wEmbed != null;
        if (tt) checkWEmbed(g.wEmbed, d);
        int hidden = 1; // act[f] below holds the widest MLP hidden layer (4 D in BiFlowModel)
        for (BiFlowModel.Layer l : layers) hidden = Math.max(hidden, l.mlp.fc1().out);
        int a = 6 * d * layers.size() + 2 * d;    // ADA's columns: [layer 0: shift1 scale1 gate1 shift2 scale2 gate2 | layer 1 ... | final: shift scale]
        this.inFloats = rows * td + batch * (d + 2);

        ResidentStack.Program p = ResidentStack.program(be).input(inFloats).output(batch, t, td);
        int in = p.act(inFloats);                  // [z (B, T, td) | class rows (B, D) | w features (B, 2)]
        int z = in, cls = in + rows * td, feats = cls + batch * d;
        int e = tt ? p.act((long) batch * d) : -1; // (B, D)
        int c = tt ? p.act((long) batch * d) : cls;
        int ada = p.act((long) batch * a);         // (B, A)
        int h = p.act((long) rows * d), n = p.act((long) rows * d), qkv = p.act((long) rows * 3 * d), o = p.act((long) rows * d),
                pb = p.act((long) rows * d), f = p.act((long) rows * hidden), s = p.act((long) rows * td);
        int pos = p.weight(g.posEmbed);            // (T, D)
        List<Tensor> adaW = new ArrayList<>(), adaB = new ArrayList<>();
        for (BiFlowModel.Layer l : layers) { adaW.add(l.adaLN.weight); adaB.add(l.adaLN.bias); }
        adaW.add(g.finalLayer.adaLN.weight);
        adaB.add(g.finalLayer.adaLN.bias);
        int adaWOff = p.weights(adaW), adaBOff = p.weights(adaB); // stacked: one (A, D) matrix and one (A) bias

        p.copyIn(0, in, inFloats);
        // condition(): c = class_embed[y] + w_embed([w, log1p(w)]); forward(): c = Ops.silu(condition(y, w, b))
        if (tt) {
            p.linear(g.wEmbed.fc1(), feats, e, batch).silu(e, batch * d).linear(g.wEmbed.fc2(), e, c, batch).add(cls, c, batch * d);
        }
        p.silu(c, batch * d);
        // every Layer's and the FinalLayer's adaLN.forward(c) at once: they all read the same SiLU(c), so one (B, D) x (D, A) GEMM
        p.linear(adaWOff, adaBOff, d, a, c, ada, batch);
        // Tensor h = Ops.add(projIn.forward(z), posEmbed)
        p.linear(g.projIn, z, h, rows).addTable(pos, h, batch, t * d);
        int col = 0; // this layer's first ADA column
        for (BiFlowModel.Stage st : g.stages) {
            for (BiFlowModel.Layer l : st.layers) { layer(p, l, ada + col, a, h, n, qkv, o, pb, f, rows); col += 6 * d; }
            if (st.toState != null) {
                // Tensor s = st.toState.forward(norm(h)); h = Ops.add(st.fromState.forward(s), posEmbed)
                p.layerNorm(BiFlowModel.NORM_EPS, h, n, rows, d).linear(st.toState, n, s, rows).linear(st.fromState, s, h, rows).addTable(pos, h, batch, t * d);
            }
        }
        for (BiFlowModel.Layer l : g.denoise) { layer(p, l, ada + col, a, h, n, qkv, o, pb, f, rows); col += 6 * d; }
        // FinalLayer: m = chunk(adaLN(c), 2); linear.forward(modulate(LN(x), m[0], m[1]))
        p.layerNorm(BiFlowModel.NORM_EPS, h, n, rows, d).modulate(n, n, ada + col, ada + col + d, a, batch, t * d, d)
                .linear(g.finalLayer.linear, n, s, rows).copyOut(s, 0, rows * td);
        this.stack = p.build();
    }

    /**
     * BiFlowModel.Layer.forward(x = act[h], c): m = the layer's six (B, D) chunks at act[m0 + j D]
     * (row stride a). Adds 12 launches.
     */
    private void layer(ResidentStack.Program p, BiFlowModel.Layer l, int m0, int a, int h, int n, int qkv, int o, int pb, int f, int rows) {
        int d = width, per = tokens * d;
        MultiHeadAttention att = l.attention;
        // h = modulate(Fused.layerNorm(x, null, null, NORM_EPS), m[0], m[1])
        p.layerNorm(BiFlowModel.NORM_EPS, h, n, rows, d).modulate(n, n, m0, m0 + d, a, batch, per, d);
        // x = Ops.add(x, Ops.mul(m[2], attention.forward(h)))   (no pre-norm: qkv, attention, proj)
        p.linear(att.qkv, n, qkv, rows).attention(att, qkv, o, batch, tokens).linear(att.proj, o, pb, rows)
                .gatedAdd(pb, h, m0 + 2 * d, a, batch, per, d);
        // h = modulate(Fused.layerNorm(x, null, null, NORM_EPS), m[3], m[4])
        p.layerNorm(BiFlowModel.NORM_EPS, h, n, rows, d).modulate(n, n, m0 + 3 * d, m0 + 4 * d, a, batch, per, d);
        // return Ops.add(x, Ops.mul(m[5], mlp.forward(h)))   (fc1, exact GELU, fc2)
        int hid = l.mlp.fc1().out;
        p.linear(l.mlp.fc1(), n, f, rows).gelu(f, rows * hid).linear(l.mlp.fc2(), f, pb, rows)
                .gatedAdd(pb, h, m0 + 5 * d, a, batch, per, d);
    }

    /**
     * {@code g.sample(eps, y, w)} in one resident pass: eps (b, T, C p^2) standard normal with
     * 1 &lt;= b &lt;= the built batch; labels as {@link BiFlowModel#forward}; returns data as
     * {@link BiFlowModel#toData}. 1 put, {@link #launchesPerSample()} launches, 1 get.
     */
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
        int[] ids = g.classIds(y, b);
        int d = width, zn = b * tokens * tokenDim, cls = batch * tokens * tokenDim, feats = cls + batch * d;
        float[] in = new float[inFloats]; // padding rows (b .. batch) stay zero
        try (var ng = Grad.noGrad()) {
            // sample(): generate(Ops.mul(eps, Ops.sqrt(priorVar)), y, w)
            System.arraycopy(Ops.mul(eps, Ops.sqrt(g.priorVar)).data(), 0, in, 0, zn);
        }
        // condition(): Ops.indexSelect(classEmbed, 0, ids) and, for training-time CFG, the features [w, log1p(w)] (generate() fills w for every sample)
        float[] table = g.classEmbed.data();
        for (int i = 0; i < b; i++) System.arraycopy(table, ids[i] * d, in, cls + i * d, d);
        if (g.wEmbed != null)
            for (int i = 0; i < b; i++) {
                in[feats + 2 * i] = w;
                in[feats + 2 * i + 1] = (float) Math.log1p(w);
            }
        float[] out = stack.run(in);
        float[] tok = new float[zn];
        System.arraycopy(out, 0, tok, 0, zn);
        return g.toData(Tensor.of(tok, b, tokens, tokenDim));
    }

    /** Launches of one {@link #sample} call (the copy in and out included). */
    public int launchesPerSample() { return stack.launchesPerRun(); }

    /** Launches and copies of this pass (build and calls). */
    public Transfers transfers() { return stack.transfers(); }

    /** The largest batch one call takes. */
    public int batch() { return batch; }

    /** The G this program was built from (its weights as of the build or the last {@link #refreshWeights}). */
    public BiFlowModel model() { return g; }

    /** Re-uploads G's current parameters (1 put), e.g. after loading a checkpoint into the same model. */
    public void refreshWeights() { stack.refreshWeights(); }

    @Override
    public void close() { stack.close(); }

    private static void checkLayer(BiFlowModel.Layer l) {
        MultiHeadAttention a = l.attention;
        if (a.norm != null || a.causal || l.mlp.norm != null || !(l.mlp.main.get(1) instanceof Activation act) || act.kind != Activation.Kind.GELU)
            throw new UnsupportedOperationException("ResidentBiFlow: G's layers must be bidirectional attention and an exact-GELU MLP without "
                    + "pre-norm (BiFlowModel.Layer); this one is not: sample with --device cpu or per-op opencl");
    }

    private static void checkWEmbed(MLP m, int d) {
        if (m.norm != null || !(m.main.get(1) instanceof Activation act) || act.kind != Activation.Kind.SILU || m.fc2().out != d)
            throw new UnsupportedOperationException("ResidentBiFlow: w_embed must be Linear(2, D), SiLU, Linear(D, D) without norm");
    }
}
