// Multi-head self-attention with a fused qkv projection, as ml-tarflow's Attention: [norm ->] qkv -> attention -> proj.
package dev.biflow.engine.nn;

import dev.biflow.engine.Fused;
import dev.biflow.engine.Grad;
import dev.biflow.engine.Ops;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Shape;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.plan.Inference;
import dev.biflow.engine.plan.PlanBuilder;
import dev.biflow.engine.plan.PlanOp;
import dev.biflow.engine.plan.Region;

/**
 * Self-attention over (B, T, D). {@code qkv} is Linear(D -> 3D) whose output columns are
 * [q | k | v], each split into heads of {@code headDim} consecutive columns (ml-tarflow's
 * {@code reshape(B, T, 3H, Dh)} then chunk); {@code proj} is Linear(D -> D). With
 * {@code preNorm} a LayerNorm named {@code norm} comes first, registered before qkv and proj,
 * which gives ml-tarflow's names ({@code attention.norm/qkv/proj}). The residual add is the
 * caller's.
 *
 * <p>Scaling: logits are q.k * headDim^-1/2 / temperature. {@link Scaling#SPLIT_QK} (default)
 * multiplies q and k each by headDim^-1/4 as TARFlow writes it (its einsum path);
 * {@link Scaling#FUSED} passes headDim^-1/2 / temperature to the attention kernel as
 * ml-tarflow's default scaled_dot_product_attention path does. Same maths, float rounding apart.
 *
 * <p>Incremental decoding: pass a {@link KVCache} and only the new tokens; their k and v are
 * appended and their queries attend (causally, when this layer is causal) to everything cached.
 */
public class MultiHeadAttention extends Module {
    /** Where the 1/sqrt(headDim) factor is applied; see the class comment. */
    public enum Scaling { SPLIT_QK, FUSED }

    public final int dim, heads, headDim;
    public final boolean causal;
    /** Null without preNorm. */
    public final LayerNorm norm;
    public final Linear qkv, proj;
    private Scaling scaling = Scaling.SPLIT_QK;

    public MultiHeadAttention(int dim, int heads, boolean causal, boolean preNorm, Rng rng) {
        if (heads <= 0 || dim <= 0 || dim % heads != 0)
            throw new IllegalArgumentException("MultiHeadAttention: dim " + dim + " must be a positive multiple of heads " + heads);
        this.dim = dim;
        this.heads = heads;
        this.headDim = dim / heads;
        this.causal = causal;
        this.norm = preNorm ? registerModule("norm", new LayerNorm(dim)) : null;
        this.qkv = registerModule("qkv", new Linear(dim, 3 * dim, true, rng));
        this.proj = registerModule("proj", new Linear(dim, dim, true, rng));
    }

    public MultiHeadAttention(int dim, int heads, boolean causal) { this(dim, heads, causal, false, Init.globalRng()); }

    /** ml-tarflow's constructor form: heads = dim / headDim. */
    public static MultiHeadAttention withHeadDim(int dim, int headDim, boolean causal, boolean preNorm, Rng rng) {
        if (headDim <= 0 || dim % headDim != 0)
            throw new IllegalArgumentException("MultiHeadAttention: dim " + dim + " is not a multiple of head_dim " + headDim);
        return new MultiHeadAttention(dim, dim / headDim, causal, preNorm, rng);
    }

    public Scaling scaling() { return scaling; }

    /** Chooses where the scale is applied; returns this. */
    public MultiHeadAttention scaling(Scaling s) {
        this.scaling = s;
        return this;
    }

    /** Plain self-attention: x (B, T, D) -> (B, T, D), causal if this layer is. */
    @Override
    public Tensor forward(Tensor x) { return forward(x, null, 1f, null); }

    /** {@link #forward} (plain self-attention) for inference: in (B T, D) -> out (B T, D), B the plan's batch. */
    public void lower(PlanBuilder p, Region in, Region out) { lower(p, in, out, PlanOp.Epilogue.NONE); }

    /**
     * The same with proj's epilogue (a gated residual add: {@link #forwardAdd}). Attention reads the heads where the
     * qkv projection wrote them; the normalised input, the projection and the merged heads are plan temporaries.
     */
    public void lower(PlanBuilder p, Region in, Region out, PlanOp.Epilogue epilogue) { lower(p, in, out, epilogue, 1f); }

    /** The same with an attention temperature (logits divided by it; ml-tarflow's attn_temp). */
    private void lower(PlanBuilder p, Region in, Region out, PlanOp.Epilogue epilogue, float temperature) {
        if (in.rows() % p.batch() != 0)
            throw new IllegalArgumentException("MultiHeadAttention.lower: " + in.rows() + " rows are not " + p.batch() + " examples of T tokens");
        int mark = p.mark();
        Region x = in;
        if (norm != null) norm.lower(p, in, x = p.alloc(in.rows(), dim));
        Region qkvOut = p.alloc(in.rows(), 3 * dim), o = p.alloc(in.rows(), dim);
        qkv.lower(p, x, qkvOut);
        double s = Math.pow(headDim, -0.25);
        p.add(scaling == Scaling.SPLIT_QK
                ? new PlanOp.SelfAttention(qkvOut, o, p.batch(), heads, causal, (float) s, 1f / temperature)
                : new PlanOp.SelfAttention(qkvOut, o, p.batch(), heads, causal, 1f, (float) (s * s / temperature)));
        proj.lower(p, o, out, epilogue);
        p.release(mark);
    }

    /**
     * x (B, T, D) -> (B, T, D).
     *
     * @param mask        null, or 0 where attention is blocked, (Tq, Tk) or anything that broadcasts to
     *                    (B, H, Tq, Tk); Tk counts cached tokens too; combined with causality
     * @param temperature divides the logits (1 = none); ml-tarflow's {@code attn_temp}
     * @param cache       null, or this layer's cache: x holds only new tokens, which are appended
     */
    public Tensor forward(Tensor x, Tensor mask, float temperature, KVCache cache) {
        requireInput(x);
        if (!(temperature > 0)) throw new IllegalArgumentException("MultiHeadAttention: temperature must be > 0, got " + temperature);
        int b = x.size(0), t = x.size(1);
        if (cache == null && mask == null && !Grad.enabled())
            return Inference.run(b, x.shape(), (p, in, y) -> lower(p, in[0], y, PlanOp.Epilogue.NONE, temperature), x);
        Tensor h = norm == null ? x : norm.forward(x);
        if (cache == null && mask == null) {
            // training: attention reads the heads where the qkv projection wrote them and writes its gradient there
            // (the same bits as the split / scale / permute composition below)
            double s = Math.pow(headDim, -0.25);
            Tensor qkvOut = Ops.reshape(qkv.forward(h), b, t, 3 * dim); // (B, T, 3D): [q heads | k heads | v heads]
            Tensor o = scaling == Scaling.SPLIT_QK
                    ? Fused.selfAttentionPacked(qkvOut, heads, causal, (float) s, 1f / temperature)
                    : Fused.selfAttentionPacked(qkvOut, heads, causal, 1f, (float) (s * s / temperature));
            return proj.forward(o); // (B, T, D)
        }
        Tensor packed = Ops.permute(Ops.reshape(qkv.forward(h), b, t, 3 * heads, headDim), 0, 2, 1, 3); // (B, 3H, T, Dh)
        Tensor[] qkvs = Ops.chunk(packed, 3, 1);
        Tensor q = qkvs[0], k = qkvs[1], v = qkvs[2]; // (B, H, T, Dh)
        float scale = decodeScale(temperature);
        if (scaling == Scaling.SPLIT_QK) {
            float s = decodeQkScale();
            q = Ops.mulScalar(q, s);
            k = Ops.mulScalar(k, s);
        }
        Tensor o;
        if (cache != null && mask == null && !Grad.enabled()) {
            // decoding: attend over the cache in place (no copy of the cached keys and values)
            cache.append(k, v);
            o = cache.attend(q, scale, causal);
        } else {
            if (cache != null) {
                cache.append(k, v);
                k = cache.keys();
                v = cache.values();
            }
            o = Fused.attention(q, k, v, causal, mask, scale);
        } // (B, H, T, Dh)
        o = Ops.reshape(Ops.permute(o, 0, 2, 1, 3), b, t, dim);
        return proj.forward(o);
    }

    /** What q and k are each multiplied by on the cached path: headDim^-1/4 with SPLIT_QK, 1 (untouched) with FUSED. */
    public float decodeQkScale() { return scaling == Scaling.SPLIT_QK ? (float) Math.pow(headDim, -0.25) : 1f; }

    /**
     * The logit scale of the cached path at an attention temperature: 1 / temperature with SPLIT_QK (q and k carry
     * headDim^-1/2), headDim^-1/2 / temperature with FUSED. A plan that takes the temperature per run stores this
     * float in its arena ({@link #lowerDecode}'s scaleAt), so it rounds as the cached forward does.
     */
    public float decodeScale(float temperature) {
        if (scaling == Scaling.SPLIT_QK) return 1f / temperature;
        double s = Math.pow(headDim, -0.25);
        return (float) (s * s / temperature);
    }

    /**
     * One KV-cached decode step of {@link #forward}{@code (x, null, temperature, cache)} for inference, x one new token
     * per example: in (B, D) -> out (B, D) (then the epilogue: {@code x + attention(x)} is the residual add on proj's
     * output tiles), keys (B H Dh, T) and values (B H T, Dh) the cache regions this layer owns for the whole decode,
     * step the token's position (its k and v go there; the query sees keys 0..step). The logit scale is
     * {@link #decodeScale}(temperature), or the float at scaleAt (1 x 1, written per run) when that is not null. The
     * normalised input, the projection and the merged heads are plan temporaries.
     */
    public void lowerDecode(PlanBuilder p, Region in, Region out, PlanOp.Epilogue epilogue, Region keys, Region values, int step,
                            float temperature, Region scaleAt) {
        if (!causal) throw new IllegalArgumentException("MultiHeadAttention.lowerDecode: a decode step needs a causal layer (this one is bidirectional)");
        if (!(temperature > 0)) throw new IllegalArgumentException("MultiHeadAttention.lowerDecode: temperature must be > 0, got " + temperature);
        int mark = p.mark();
        Region x = in;
        if (norm != null) norm.lower(p, in, x = p.alloc(in.rows(), dim));
        Region qkvOut = p.alloc(in.rows(), 3 * dim), o = p.alloc(in.rows(), dim); // (B, 3D), (B, D)
        qkv.lower(p, x, qkvOut);
        p.add(new PlanOp.DecodeAttention(qkvOut, keys, values, o, heads, step, decodeQkScale(), decodeScale(temperature), scaleAt));
        proj.lower(p, o, out, epilogue);
        p.release(mark);
    }

    /**
     * x + forward(x) (plain self-attention), the residual block of a transformer layer. In a no-grad scope the
     * lowering, the add formed on proj's output tiles: no third array and no pass over three; the same bits
     * as {@code Ops.add(x, forward(x))}, which it is when a gradient is recorded.
     */
    public Tensor forwardAdd(Tensor x) { return forwardAdd(x, x, null); }

    /**
     * residual + gate * forward(h) (plain self-attention of h; gate (B, 1, D) or null), adaLN-Zero's gated
     * residual, fused the same way; the same bits as {@code Ops.add(residual, Ops.mul(gate, forward(h)))},
     * which it is when a gradient is recorded.
     */
    public Tensor forwardAdd(Tensor h, Tensor residual, Tensor gate) {
        if (Grad.enabled()) return Ops.add(residual, gate == null ? forward(h) : Ops.mul(gate, forward(h)));
        requireInput(h);
        Linear.checkResidual("MultiHeadAttention.forwardAdd", h.shape(), residual, gate);
        return Inference.run(h.size(0), h.shape(), (p, in, y) -> lower(p, in[0], y, new PlanOp.Epilogue.GatedAdd(in[1], gate == null ? null : in[2])),
                gate == null ? new Tensor[]{h, residual} : new Tensor[]{h, residual, gate});
    }

    /** x must be (B, T, dim). */
    private void requireInput(Tensor x) {
        Shape.requireRank(x, 3, "MultiHeadAttention", "(B, T, D)");
        if (x.size(2) != dim)
            throw new IllegalArgumentException("MultiHeadAttention(dim=" + dim + "): input " + Shape.str(x.shape()) + " must end in " + dim);
    }

    @Override
    protected String extraRepr() { return "dim=" + dim + ", heads=" + heads + ", causal=" + causal + ", scaling=" + scaling; }
}
