// The BiFlow backward model G: a bidirectional ViT that maps F's noise z back to a clean image in one pass (1-NFE).
package dev.biflow.flow.inverse;

import dev.biflow.engine.Fused;
import dev.biflow.engine.Grad;
import dev.biflow.engine.Ops;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Shape;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.nn.Activation;
import dev.biflow.engine.nn.Init;
import dev.biflow.engine.nn.Linear;
import dev.biflow.engine.nn.MLP;
import dev.biflow.engine.nn.Module;
import dev.biflow.engine.nn.ModuleList;
import dev.biflow.engine.nn.MultiHeadAttention;
import dev.biflow.engine.plan.PlanBuilder;
import dev.biflow.engine.plan.PlanOp;
import dev.biflow.engine.plan.Region;

import java.util.Arrays;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;

/**
 * G_eps of "Bidirectional Normalizing Flow": z (B, T, C p^2) -> x' over the same tokens as F, in
 * natural token order. One {@link #forward} call is one network evaluation (counted by
 * {@link #evaluations()}).
 * <pre>
 *   h_B = proj_in(z) + pos_embed                                  (B, T, D)
 *   c   = class_embed[y] + w_embed([w, log1p(w)])                  (B, D); y = -1 -> the null class
 *   stage k = 0 .. B-1 (F's blocks in reverse):  h_{B-k-1} = layers_k(h_{B-k} | c)
 *       HIDDEN_DISTILLATION: s_i = to_state_k(norm(h_i)) in C p^2, h_i = from_state_k(s_i) + pos_embed
 *   x'  = final(denoise_layers(h_0 | c) | c)                       (B, T, C p^2) -> unpatchify
 *   phi_i(norm(h_i)) = heads_i(...)                                (HIDDEN_ALIGNMENT only; i = 0 .. B-1)
 * </pre>
 * Each layer is a bidirectional pre-LN Transformer layer (attention + 4x GELU MLP) whose
 * LayerNorms are modulated by the condition as in DiT (adaLN-Zero: shift, scale and a residual
 * gate from Linear(SiLU(c)), zero-initialised, so every layer starts as the identity); the final
 * layer is adaLN-modulated LayerNorm + Linear(D -> C p^2), zero-initialised. The class table has
 * num_classes + 1 rows; the last is the null class of classifier-free guidance. The guidance
 * embedding exists only for training-time CFG.
 *
 * <p><b>Training-time CFG</b> (the paper's h_{i+1} = (1+w) G_i(h_i|c) - w G_i(h_i), our reading).
 * G_cfg(. | c, w) is parameterised so that the conditional model the losses train is, for every
 * stage output o in {h_{B-1}, .., h_0, x'} (and s_i for hidden distillation),
 * <pre>
 *   o_cond(z | c, w) = ( o(z | c, w) + w o(z | null, w) ) / (1 + w)
 * </pre>
 * computed from two full passes (conditional and null class, both given w), while the null class
 * model is o(z | null, w) itself. Then (1+w) o_cond(z|c,w) - w o_cond(z|null,w) = o(z | c, w)
 * exactly: one pass of G at sampling time is the guided output of the conditional model, at every
 * stage output. The combination is per whole-network output (each pass keeps its own chain of
 * states), so the guided sample is exactly two-pass CFG of the implicitly trained conditional model.
 * The paper's stage-by-stage re-feeding of guided states is cfg TRAINING_TIME_STAGE ({@link #forwardStageGuided}). At w = 0 the model is simply
 * conditional: o(z | c, 0) = o_cond(z | c, 0).
 *
 * <p>Inputs: {@link #forward} takes z in F's output space (what F produced, variance = F's prior
 * {@code var}); {@link #sample} takes standard-normal noise and multiplies it by
 * sqrt({@code prior_var}), a copy of F's prior variance kept in G's state dict, exactly as
 * {@code TarFlow.reverse} does, so the same eps gives comparable exact-inverse and 1-NFE samples.
 */
public final class BiFlowModel extends Module {
    /** LayerNorm epsilon inside G and in the alignment normalisation. */
    public static final float NORM_EPS = 1e-6f;

    public final BackwardConfig config;
    public final Linear projIn;
    public final Tensor posEmbed;
    /** (num_classes + 1, D); row num_classes is the null class. */
    public final Tensor classEmbed;
    /** Null unless training-time CFG. */
    public final MLP wEmbed;
    public final ModuleList<Stage> stages;
    public final ModuleList<Layer> denoise;
    public final FinalLayer finalLayer;
    /** phi_i for i = 0 .. B-1; null unless hidden alignment. */
    public final ModuleList<Module> heads;
    /** F's prior variance (T, C p^2), copied in by the trainer. */
    public final Tensor priorVar;

    private final AtomicLong evaluations = new AtomicLong();
    /** The inference plan of the last batch size sampled (built on first use; it reads the weights at every call). */
    private volatile BiFlowPlan plan;

    public BiFlowModel(BackwardConfig config, Rng rng) {
        if (!config.hasModel())
            throw new IllegalArgumentException("strategy EXACT_INVERSE has no backward model; sample with BiFlowSampler.exactInverse(F, ...)");
        this.config = config;
        int d = config.width(), t = config.tokens(), td = config.tokenDim();
        projIn = registerModule("proj_in", new Linear(td, d, true, rng));
        posEmbed = registerParameter("pos_embed", Init.normal(Tensor.zeros(t, d), rng, 0, 1e-2));
        classEmbed = registerParameter("class_embed", Init.normal(Tensor.zeros(config.numClasses() + 1, d), rng, 0, 0.02));
        wEmbed = config.cfg().guidanceInput()
                ? registerModule("w_embed", new MLP(2, d, d, false, Activation.Kind.SILU, rng)) : null;
        stages = registerModule("stages", new ModuleList<>());
        boolean distill = config.strategy() == BackwardConfig.Strategy.HIDDEN_DISTILLATION;
        for (int k = 0; k < config.stages(); k++) stages.add(new Stage(config, distill, rng));
        denoise = registerModule("denoise", new ModuleList<>());
        for (int j = 0; j < config.denoiseLayers(); j++) denoise.add(new Layer(d, config.heads(), rng));
        finalLayer = registerModule("final", new FinalLayer(d, td, rng));
        if (config.strategy() == BackwardConfig.Strategy.HIDDEN_ALIGNMENT) {
            heads = registerModule("heads", new ModuleList<>());
            for (int i = 0; i < config.stages(); i++)
                heads.add(config.head() == BackwardConfig.Head.LINEAR ? new Linear(d, td, true, rng)
                        : new MLP(d, d, td, false, Activation.Kind.GELU, rng));
        } else {
            heads = null;
        }
        priorVar = registerBuffer("prior_var", Tensor.ones(t, td));
    }

    /**
     * One evaluation of G. hidden.get(i) is h_i (B, T, D) for i = 0 .. B-1 (h_0 after the last stage);
     * states.get(i) is the input-space state s_i (B, T, C p^2) of hidden distillation (empty
     * otherwise); tokens is x' (B, T, C p^2).
     */
    public record Output(List<Tensor> hidden, List<Tensor> states, Tensor tokens) {}

    /** Network evaluations so far (each {@link #forward} call adds one, whatever the batch). */
    public long evaluations() { return evaluations.get(); }

    public void resetEvaluations() { evaluations.set(0); }

    /**
     * z (B, T, C p^2) in F's output space -> {@link Output}. y: labels in [0, num_classes), -1 for
     * the null class, or null (all null class). w: per-example guidance scales (training-time CFG
     * only; null means 0).
     */
    public Output forward(Tensor z, int[] y, float[] w) {
        checkTokens(z, "z");
        int b = z.size(0);
        Tensor c = Ops.silu(condition(y, w, b)); // (B, 1, D), shared by every adaLN
        evaluations.incrementAndGet();
        int nStages = config.stages();
        Tensor[] hidden = new Tensor[nStages];
        Tensor[] states = stages.get(0).toState != null ? new Tensor[nStages] : null;
        Tensor h = Ops.add(projIn.forward(z), posEmbed); // h_B (B, T, D)
        for (int k = 0; k < nStages; k++) {
            Stage st = stages.get(k);
            for (Layer l : st.layers) h = l.forward(h, c);
            int i = nStages - 1 - k;
            if (states != null) {
                Tensor s = st.toState.forward(norm(h)); // (B, T, C p^2): the state is forced into the input space
                states[i] = s;
                h = Ops.add(st.fromState.forward(s), posEmbed);
            }
            hidden[i] = h;
        }
        for (Layer l : denoise) h = l.forward(h, c);
        Tensor tokens = finalLayer.forward(h, c);
        return new Output(List.of(hidden), states == null ? List.of() : List.of(states), tokens);
    }

    /**
     * Training-time CFG stage by stage (cfg TRAINING_TIME_STAGE), the paper's h_{i+1} = (1+w) G_i(h_i|c) - w G_i(h_i).
     * Each stage k runs on the guided state h it is handed, with the class and with the null class (both given w),
     * as one batch of 2B rows:
     * <pre>
     *   o_c = stage_k(h | c, w),  o_n = stage_k(h | null, w)                    (B, T, D) each
     *   reported h_i   = (o_c + w o_n) / (1 + w)     what the losses supervise: the implicit conditional model
     *   next input     = o_c = (1+w) h_i - w o_n      the guided state
     * </pre>
     * Rows with a dropped label (-1) or w = 0 report o_c itself. So a plain {@link #forward} with (c, w) is the chain
     * of guided states, stage after stage, and sampling stays one evaluation; the training forward is what differs
     * from TRAINING_TIME, where the conditional and null passes each keep their own chain (see the class comment).
     * The last segment (denoising layers and the final layer) is combined the same way into x'. y: labels or -1,
     * w: per-example scales (both length B).
     */
    public Output forwardStageGuided(Tensor z, int[] y, float[] w) {
        checkTokens(z, "z");
        if (config.cfg() != BackwardConfig.Cfg.TRAINING_TIME_STAGE)
            throw new IllegalStateException("forwardStageGuided is the training forward of cfg training-time-stage; this model has cfg " + config.cfg());
        int b = z.size(0);
        if (y == null || w == null || y.length != b || w.length != b)
            throw new IllegalArgumentException("stage-wise CFG needs one label and one w per example (batch " + b + ")");
        int[] y2 = new int[2 * b];
        float[] w2 = new float[2 * b];
        for (int i = 0; i < b; i++) {
            y2[i] = y[i];
            y2[b + i] = -1;
            w2[i] = w[i];
            w2[b + i] = w[i];
        }
        Tensor c2 = Ops.silu(condition(y2, w2, 2 * b)); // (2B, 1, D): rows 0..B-1 with the class, B..2B-1 the null class
        evaluations.incrementAndGet();
        Guided mix = new Guided(y, w);
        int nStages = config.stages();
        Tensor[] hidden = new Tensor[nStages];
        Tensor h = Ops.add(projIn.forward(z), posEmbed); // h_B (B, T, D)
        for (int k = 0; k < nStages; k++) {
            Tensor h2 = Ops.concat(0, h, h); // (2B, T, D)
            for (Layer l : stages.get(k).layers) h2 = l.forward(h2, c2);
            hidden[nStages - 1 - k] = mix.implicitConditional(h2);
            h = Ops.narrow(h2, 0, 0, b); // o_c: the guided state handed on
        }
        Tensor h2 = Ops.concat(0, h, h);
        for (Layer l : denoise) h2 = l.forward(h2, c2);
        Tensor tokens = mix.implicitConditional(finalLayer.forward(h2, c2));
        return new Output(List.of(hidden), List.of(), tokens);
    }

    /**
     * The implicit conditional model of training-time CFG: for a 2B-row output whose rows 0..B-1 are o(. | c, w) and
     * rows B..2B-1 the null-class o(. | null, w) of the same examples, (o_c + w o_n) / (1 + w) per example; rows
     * without a label or with w = 0 take o_c itself (their partner is their own row). Shared by both training forms.
     */
    static final class Guided {
        private final int b;
        private final int[] partner;
        private final Tensor w, inv; // (B, 1, 1)

        Guided(int[] y, float[] w) {
            b = w.length;
            partner = new int[b];
            float[] inv = new float[b];
            for (int i = 0; i < b; i++) {
                partner[i] = w[i] > 0 && y[i] >= 0 ? b + i : i;
                inv[i] = 1f / (1f + w[i]);
            }
            this.w = Tensor.of(w.clone(), b, 1, 1);
            this.inv = Tensor.of(inv, b, 1, 1);
        }

        /** o (2B, ...) -> (B, ...). */
        Tensor implicitConditional(Tensor o) {
            Tensor a = Ops.narrow(o, 0, 0, b);
            Tensor p = Ops.indexSelect(o, 0, partner);
            return Ops.mul(Ops.add(a, Ops.mul(p, w)), inv);
        }
    }

    /**
     * {@link #forward}'s tokens for inference, as plan ops (the hidden states and states it also returns are not
     * kept): z (B T, C p^2) in F's output space, ids (B, 1) the rows of class_embed ({@link #classIds}), wFeatures
     * (B, 2) the guidance features ({@link #guidanceFeatures}; training-time CFG only, else null) -> tokens (B T, C p^2).
     */
    public void lower(PlanBuilder p, Region z, Region ids, Region wFeatures, Region tokens) {
        int b = p.batch(), d = config.width(), rows = z.rows();
        int mark = p.mark();
        Region c = p.alloc(b, d); // Ops.silu(condition(y, w, b))
        p.add(new PlanOp.Gather(classEmbed, ids, c));
        if (wEmbed != null) {
            Region e = p.alloc(b, d);
            wEmbed.lower(p, wFeatures, e);
            p.add(new PlanOp.Add(c, e, c));
        }
        p.add(new PlanOp.Silu(c, c));
        Region h = p.alloc(rows, d), next = p.alloc(rows, d);
        projIn.lower(p, z, h);
        p.add(new PlanOp.AddTable(h, posEmbed, h));
        for (Stage st : stages) {
            for (Layer l : st.layers) {
                l.lower(p, h, c, next);
                Region t = h; h = next; next = t;
            }
            if (st.toState != null) {
                int m = p.mark();
                Region n = p.alloc(rows, d), s = p.alloc(rows, config.tokenDim());
                p.add(new PlanOp.LayerNorm(null, null, NORM_EPS, h, n)); // norm(h)
                st.toState.lower(p, n, s);
                st.fromState.lower(p, s, h);
                p.add(new PlanOp.AddTable(h, posEmbed, h));
                p.release(m);
            }
        }
        for (Layer l : denoise) {
            l.lower(p, h, c, next);
            Region t = h; h = next; next = t;
        }
        finalLayer.lower(p, h, c, tokens);
        p.release(mark);
    }

    /** The condition vector (B, 1, D): class embedding (null class for -1 / null labels) plus the guidance embedding. */
    Tensor condition(int[] y, float[] w, int b) {
        int[] ids = classIds(y, b);
        Tensor c = Ops.indexSelect(classEmbed, 0, ids); // (B, D)
        if (wEmbed != null) {
            c = Ops.add(c, wEmbed.forward(Tensor.of(guidanceFeatures(w, b), b, 2)));
        } else if (w != null) {
            for (float wi : w)
                if (wi != 0f)
                    throw new IllegalArgumentException("this backward model was built with cfg " + config.cfg()
                            + ": it takes no guidance scale w in a single pass (got w = " + wi + "); use sample(...) for two-pass CFG or train with cfg training-time");
        }
        return Ops.reshape(c, b, 1, config.width());
    }

    /** w_embed's input (B, 2): [w, log1p(w)] per example (w null: 0). */
    static float[] guidanceFeatures(float[] w, int b) {
        float[] feats = new float[2 * b];
        for (int i = 0; i < b; i++) {
            float wi = w == null ? 0f : w[i];
            feats[2 * i] = wi;
            feats[2 * i + 1] = (float) Math.log1p(wi);
        }
        return feats;
    }

    /** Row indices into class_embed: the label, or the null class for -1 and for null labels. */
    int[] classIds(int[] y, int b) {
        int[] ids = new int[b];
        if (y == null) {
            Arrays.fill(ids, config.nullClass());
            return ids;
        }
        if (y.length != b) throw new IllegalArgumentException(y.length + " labels for a batch of " + b);
        for (int i = 0; i < b; i++) {
            if (y[i] < -1 || y[i] >= config.numClasses())
                throw new IllegalArgumentException("label " + y[i] + " is outside [0, " + config.numClasses()
                        + ") (or -1 for the null class)" + (config.conditional() ? "" : "; this model is unconditional: pass null labels"));
            ids[i] = y[i] < 0 ? config.nullClass() : y[i];
        }
        return ids;
    }

    /** The per-token normalisation of G's hidden states before the projection heads (none with align_norm NONE). */
    Tensor norm(Tensor h) {
        return Fused.layerNorm(h, null, null, NORM_EPS);
    }

    /** phi_i(norm(h_i)) (B, T, C p^2): the projection of hidden state i into F's state space (hidden alignment only). */
    public Tensor project(int i, Tensor h) {
        if (heads == null) throw new IllegalStateException("projection heads exist only for hidden alignment (strategy " + config.strategy() + ")");
        Tensor in = config.alignNorm() == BackwardConfig.AlignNorm.NONE ? h : norm(h);
        return heads.get(i).forward(in);
    }

    /** tokens (B, T, C p^2) -> data: unpatchified images (B, C, H, W) or vectors (B, T * C p^2). */
    public Tensor toData(Tensor tokens) {
        checkTokens(tokens, "tokens");
        if (config.isImage())
            return Fused.unpatchify(tokens, config.imageChannels(), config.imageSize(), config.imageSize(), config.patchSize());
        return Ops.reshape(tokens, tokens.size(0), config.dims());
    }

    /** data (images (B, C, H, W) or vectors (B, T * C p^2)) -> tokens (B, T, C p^2). */
    public Tensor toTokens(Tensor x) {
        if (config.isImage()) {
            int c = config.imageChannels(), s = config.imageSize();
            if (x.dim() != 4 || x.size(1) != c || x.size(2) != s || x.size(3) != s)
                throw new IllegalArgumentException("images must be (B, " + c + ", " + s + ", " + s + "), got " + Shape.str(x.shape()));
            return Fused.patchify(x, config.patchSize());
        }
        if (x.dim() != 2 || x.size(1) != config.dims())
            throw new IllegalArgumentException("vectors must be (B, " + config.dims() + "), got " + Shape.str(x.shape()));
        return Ops.reshape(x, x.size(0), config.tokens(), config.tokenDim());
    }

    /**
     * Samples: standard-normal eps (B, T, C p^2) -> data, without a graph. Scales eps by
     * sqrt(prior_var), then: cfg NONE needs w = 0 (one evaluation); TRAINING_TIME evaluates G once
     * with w; TWO_PASS evaluates G once for w = 0 and twice for w > 0, (1+w) x'(c) - w x'(null).
     * Labels as in {@link #forward}. Denoising by score (strategy SCORE) needs F: use {@link BiFlowSampler}.
     */
    public Tensor sample(Tensor eps, int[] y, float w) {
        checkTokens(eps, "noise");
        return generate(Ops.mul(eps, Ops.sqrt(priorVar)), y, w);
    }

    /** The same from z already in F's output space (what F(x) returns; used by inpainting). */
    public Tensor generate(Tensor z, int[] y, float w) {
        checkTokens(z, "z");
        checkGuidance(w, y);
        int b = z.size(0);
        try (var ng = Grad.noGrad()) {
            if (config.cfg() == BackwardConfig.Cfg.TWO_PASS && w > 0) {
                Tensor cond = inferTokens(z, y, null);
                Tensor uncond = inferTokens(z, null, null);
                return toData(guide(cond, uncond, w));
            }
            float[] ws = config.cfg().guidanceInput() ? filled(b, w) : null;
            return toData(inferTokens(z, y, ws));
        }
    }

    /** {@code forward(z, y, w).tokens()} through the inference plan (the same bits), one evaluation. */
    private Tensor inferTokens(Tensor z, int[] y, float[] w) {
        BiFlowPlan p = plan;
        if (p == null || p.batch() != z.size(0)) plan = p = BiFlowPlan.of(this, z.size(0));
        evaluations.incrementAndGet();
        return p.tokens(z, y, w);
    }

    /** (1 + w) c - w u, elementwise. */
    static Tensor guide(Tensor c, Tensor u, float w) {
        return Ops.sub(Ops.mulScalar(c, 1f + w), Ops.mulScalar(u, w));
    }

    static float[] filled(int n, float v) {
        float[] a = new float[n];
        Arrays.fill(a, v);
        return a;
    }

    /** Refuses a guidance scale this model cannot sample at (negative, non-finite, no CFG, no labels, beyond w_max). */
    public void checkGuidance(float w, int[] y) {
        if (!(w >= 0) || Float.isInfinite(w))
            throw new IllegalArgumentException("guidance scale w must be finite and >= 0, got " + w);
        if (w == 0) return;
        if (config.cfg() == BackwardConfig.Cfg.NONE)
            throw new IllegalArgumentException("this backward model was trained without CFG (cfg none): sample with w = 0, or train with cfg two-pass or training-time");
        if (y == null)
            throw new IllegalArgumentException("guidance (w = " + w + ") needs class labels; pass labels or w = 0");
        if (config.cfg().guidanceInput() && w > config.wMax())
            throw new IllegalArgumentException("guidance scale w = " + w + " is outside the trained range [0, " + config.wMax()
                    + "] of this training-time-CFG model; retrain with a larger w_max");
    }

    void checkTokens(Tensor z, String what) {
        if (z.dim() != 3 || z.size(0) < 1 || z.size(1) != config.tokens() || z.size(2) != config.tokenDim())
            throw new IllegalArgumentException("BiFlowModel expects " + what + " of shape (B, " + config.tokens() + ", " + config.tokenDim()
                    + "), got " + Shape.str(z.shape()));
    }

    @Override
    protected String extraRepr() { return config.toJson(); }

    // ==================================================================== building blocks

    /** One stage of G (inverting one block of F): layersPerStage layers, plus the input-space bottleneck for hidden distillation. */
    public static final class Stage extends Module {
        public final ModuleList<Layer> layers;
        /** Hidden distillation only: Linear(D -> C p^2) and Linear(C p^2 -> D). */
        public final Linear toState, fromState;

        Stage(BackwardConfig cfg, boolean distill, Rng rng) {
            layers = registerModule("layers", new ModuleList<>());
            for (int j = 0; j < cfg.layersPerStage(); j++) layers.add(new Layer(cfg.width(), cfg.heads(), rng));
            toState = distill ? registerModule("to_state", new Linear(cfg.width(), cfg.tokenDim(), true, rng)) : null;
            fromState = distill ? registerModule("from_state", new Linear(cfg.tokenDim(), cfg.width(), true, rng)) : null;
        }
    }

    /** A bidirectional Transformer layer with adaLN-Zero conditioning (DiT). */
    public static final class Layer extends Module {
        public final Linear adaLN;
        public final MultiHeadAttention attention;
        public final MLP mlp;

        Layer(int d, int heads, Rng rng) {
            adaLN = registerModule("ada_ln", new Linear(d, 6 * d, true, rng));
            Init.zeros(adaLN.weight);
            Init.zeros(adaLN.bias);
            attention = registerModule("attention", new MultiHeadAttention(d, heads, false, false, rng).scaling(MultiHeadAttention.Scaling.FUSED));
            mlp = registerModule("mlp", new MLP(d, 4 * d, d, false, Activation.Kind.GELU, rng));
        }

        /** x (B, T, D), c = SiLU(condition) (B, 1, D). */
        public Tensor forward(Tensor x, Tensor c) {
            Tensor[] m = Ops.chunk(adaLN.forward(c), 6, 2); // shift, scale, gate for attention, then for the MLP; (B, 1, D) each
            Tensor h = modulate(Fused.layerNorm(x, null, null, NORM_EPS), m[0], m[1]);
            x = attention.forwardAdd(h, x, m[2]); // x + gate * attn(h): fused into proj's GEMM when sampling (same bits)
            h = modulate(Fused.layerNorm(x, null, null, NORM_EPS), m[3], m[4]);
            return mlp.forwardAdd(h, x, m[5]); // x + gate * mlp(h)
        }

        /** {@link #forward} for inference: x (B T, D), c = SiLU(condition) (B, D) -> out (B T, D). */
        void lower(PlanBuilder p, Region x, Region c, Region out) {
            int b = p.batch(), d = c.cols(), mark = p.mark();
            Region m = p.alloc(b, 6 * d), n = p.alloc(x.rows(), d), mid = p.alloc(x.rows(), d);
            adaLN.lower(p, c, m); // shift, scale, gate for attention, then for the MLP: (B, D) column blocks
            p.add(new PlanOp.LayerNorm(null, null, NORM_EPS, x, n)).add(new PlanOp.Modulate(n, m.cols(0, d), m.cols(d, d), n));
            attention.lower(p, n, mid, new PlanOp.Epilogue.GatedAdd(x, m.cols(2 * d, d)));
            p.add(new PlanOp.LayerNorm(null, null, NORM_EPS, mid, n)).add(new PlanOp.Modulate(n, m.cols(3 * d, d), m.cols(4 * d, d), n));
            mlp.lower(p, n, out, new PlanOp.Epilogue.GatedAdd(mid, m.cols(5 * d, d)));
            p.release(mark);
        }
    }

    /** adaLN-modulated LayerNorm, then Linear(D -> C p^2); zero-initialised. */
    public static final class FinalLayer extends Module {
        public final Linear adaLN, linear;

        FinalLayer(int d, int td, Rng rng) {
            adaLN = registerModule("ada_ln", new Linear(d, 2 * d, true, rng));
            Init.zeros(adaLN.weight);
            Init.zeros(adaLN.bias);
            linear = registerModule("linear", new Linear(d, td, true, rng));
            Init.zeros(linear.weight);
            Init.zeros(linear.bias);
        }

        public Tensor forward(Tensor x, Tensor c) {
            Tensor[] m = Ops.chunk(adaLN.forward(c), 2, 2);
            return linear.forward(modulate(Fused.layerNorm(x, null, null, NORM_EPS), m[0], m[1]));
        }

        /** {@link #forward} for inference: x (B T, D), c (B, D) -> out (B T, C p^2). */
        void lower(PlanBuilder p, Region x, Region c, Region out) {
            int d = c.cols(), mark = p.mark();
            Region m = p.alloc(p.batch(), 2 * d), n = p.alloc(x.rows(), d);
            adaLN.lower(p, c, m);
            p.add(new PlanOp.LayerNorm(null, null, NORM_EPS, x, n)).add(new PlanOp.Modulate(n, m.cols(0, d), m.cols(d, d), n));
            linear.lower(p, n, out);
            p.release(mark);
        }
    }

    /** h * (1 + scale) + shift. */
    static Tensor modulate(Tensor h, Tensor shift, Tensor scale) {
        return Ops.add(Ops.add(h, Ops.mul(h, scale)), shift);
    }
}
