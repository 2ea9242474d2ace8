// Stage 2 of BiFlow: trains the backward model G against a frozen forward flow F, with resumable checkpoints.
package dev.biflow.flow.inverse;

import dev.biflow.engine.Fused;
import dev.biflow.engine.Grad;
import dev.biflow.engine.Ops;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.optim.AdamW;
import dev.biflow.engine.optim.Ema;
import dev.biflow.flow.data.ImageDataset;
import dev.biflow.flow.features.ImageDistance;
import dev.biflow.flow.train.GuardedStep;
import dev.biflow.flow.train.RunCheckpoint;
import dev.biflow.flow.train.TrainConfig;
import dev.biflow.flow.train.TrainLoop;
import dev.biflow.flow.train.TrainingState;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.BooleanSupplier;

/**
 * Trains G with F frozen. For a batch of clean x in [-1, 1] with labels c:
 * <pre>
 *   x~ = x + sigma eps;  x_0 .. x_B = F's trajectory of x~ (x_0 = tokens of x~, z = x_B), run without a graph
 *   G(z | c, w) -> h_{B-1} .. h_0, x'       (training-time CFG: combined per output, see BiFlowModel)
 *   L = recon_weight * a(D(x*, x'))                         x* = x (LEARNED denoising) or x~ (NONE, SCORE)
 *     + sum_terms weight * a(D_term(image(x'), image(x*)))   perceptual ImageDistance terms, images only
 *     + align_weight * sum_{i=0}^{B-1} a(D(norm(x_i), phi_i(norm(h_i))))          HIDDEN_ALIGNMENT
 *     + align_weight * sum_{i=0}^{B-1} a(D(n_i(x_i), n_i(s_i)))                   HIDDEN_DISTILLATION
 *   a(L) = L / sg((L + eps)^p)   (adaptive re-weighting; eps 0.01, p 1 by default; p = 0 is off)
 * </pre>
 * D is MSE. norm is {@link BackwardConfig.AlignNorm}; for hidden distillation n_i standardises
 * both s_i and x_i with x_i's own statistics (per token or per example), i.e. a per-token-weighted
 * MSE, so that the state handed to the next stage stays in F's raw input space. Alignment of
 * h_B with x_B = z is trivially available from the input and is left out.
 *
 * <p>Labels: with CFG (two-pass or training-time) each label is dropped with probability
 * {@code TrainConfig.labelDropout}; a dropped example uses G's null class AND F's unconditional
 * path (label -1), so that G(.|null) learns to invert F(.|null). Training-time CFG draws w per
 * example as {@link BackwardConfig} says. {@code TrainConfig.sigma} is the noise of x~ (use F's
 * training sigma). The rest of TrainConfig works as for {@link dev.biflow.flow.train.ForwardTrainer}:
 * AdamW with warm-up + cosine, optional clipping and EMA, non-finite steps skipped and counted,
 * checkpoints committed as one unit ({@link #MODEL_FILE} loadable by {@link BackwardCheckpoints}, plus
 * {@link #STATE_FILE} and {@link #EMA_FILE}; see {@link RunCheckpoint}) and an exact {@link #resume},
 * all through the loop both trainers share ({@link TrainLoop}).
 *
 * <p>F never changes: its trajectory is computed under {@link Grad#noGrad()}, and the optimizer
 * holds only G's parameters.
 */
public final class BackwardTrainer {
    /** Per-step report: the objective, the raw reconstruction MSE and the mean raw alignment term. */
    public record StepStats(long step, double loss, double recon, double align, double lr, double gradNorm,
                            boolean skipped, long badInARow, double seconds) {}

    /** Hooks for progress bars, metric logs and sample grids. */
    public interface Listener {
        default void onStep(StepStats s) {}
        default void onCheckpoint(long step, Path model) {}
    }

    /** A perceptual distance at the image end and its weight (applied after adaptive re-weighting). */
    public record Term(ImageDistance distance, float weight) {
        public Term {
            if (distance == null) throw new IllegalArgumentException("perceptual term needs a distance");
            if (!(weight >= 0) || Float.isInfinite(weight)) throw new IllegalArgumentException("perceptual weight must be finite and >= 0, got " + weight);
        }
    }

    /** The objective of one batch: the differentiable total and the raw value of every term (by name). */
    public record Losses(Tensor total, double recon, double align, Map<String, Double> terms) {}

    public static final String MODEL_FILE = "backward.safetensors";
    /** G with the EMA of its parameters (written when EMA is on): the weights to sample with. */
    public static final String EMA_FILE = "backward-ema.safetensors";
    public static final String STATE_FILE = "backward-state.safetensors";

    public final FrozenFlow flow;
    public final BiFlowModel model;
    public final TrainConfig cfg;
    private final BackwardConfig bc;
    private final Source data;
    private final List<Term> perceptual;
    private final Path dir;
    private final List<Tensor> params;
    private final AdamW opt;
    private final Ema ema;
    private final Rng rng;
    private final TrainLoop loop;
    private Listener listener = new Listener() {};
    private Gradients gradients;
    private int[] order;
    private int cursor;

    /** The examples to train on: clean data and labels by index. */
    private interface Source {
        int n();
        Tensor clean(int[] idx);
        int[] labels(int[] idx);
        int numClasses();
    }

    /** Trains on images; perceptual terms may be empty. dir null: no checkpoints. */
    public BackwardTrainer(FrozenFlow flow, BiFlowModel model, ImageDataset data, TrainConfig cfg, List<Term> perceptual, Path dir) {
        this(flow, model, imageSource(flow, data), cfg, perceptual, dir);
    }

    /** Trains on vectors (N, T * C p^2) with labels (N) or null, e.g. a 2-D toy under a coupling flow. */
    public BackwardTrainer(FrozenFlow flow, BiFlowModel model, Tensor vectors, int[] labels, TrainConfig cfg, Path dir) {
        this(flow, model, vectorSource(flow, vectors, labels), cfg, List.of(), dir);
    }

    private BackwardTrainer(FrozenFlow flow, BiFlowModel model, Source data, TrainConfig cfg, List<Term> perceptual, Path dir) {
        flow.checkMatches(model.config);
        if (perceptual == null) perceptual = List.of();
        if (!perceptual.isEmpty() && !model.config.isImage())
            throw new IllegalArgumentException("perceptual terms compare images; this backward model works on vectors");
        if (flow.numClasses() > 0 && data.numClasses() > flow.numClasses())
            throw new IllegalArgumentException("the flow has " + flow.numClasses() + " classes, the data has " + data.numClasses());
        if (data.n() < 1) throw new IllegalArgumentException("no training examples");
        this.flow = flow;
        this.model = model;
        this.bc = model.config;
        this.data = data;
        this.cfg = cfg;
        this.perceptual = List.copyOf(perceptual);
        this.dir = dir;
        // G samples from F's prior: keep a copy of its variance (F is frozen, so it cannot drift)
        Tensor var = flow.priorVar();
        System.arraycopy(var.data(), 0, model.priorVar.data(), 0, var.numel());
        this.params = model.parameters();
        this.opt = new AdamW(params, cfg.lr(), cfg.beta1(), cfg.beta2(), 1e-8, cfg.weightDecay());
        this.ema = cfg.emaDecay() > 0 ? new Ema(params, cfg.emaDecay()) : null;
        this.rng = new Rng(cfg.seed());
        this.order = rng.permutation(data.n());
        this.loop = new TrainLoop(cfg, params, opt, ema, dir, MODEL_FILE, new TrainLoop.Body() {
            @Override public GuardedStep.Outcome step(long step, double lr, GuardedStep guard) { return BackwardTrainer.this.step(step, lr, guard); }
            @Override public List<RunCheckpoint.Part> parts() { return BackwardTrainer.this.parts(); }
            @Override public void checkpointed(long step) { listener.onCheckpoint(step, dir.resolve(MODEL_FILE)); }
        });
    }

    private static Source imageSource(FrozenFlow flow, ImageDataset d) {
        if (flow.imageGeometry() == null)
            throw new IllegalArgumentException("this flow works on vectors, not images; pass the training vectors as a tensor (N, "
                    + flow.tokens() * flow.tokenDim() + ")");
        int[] e = flow.exampleShape();
        if (e.length != 3 || e[0] != d.channels || e[1] != d.height || e[2] != d.width)
            throw new IllegalArgumentException("the flow expects " + e[0] + "x" + e[1] + "x" + e[2] + " images, dataset " + d.name
                    + " has " + d.channels + "x" + d.height + "x" + d.width);
        return new Source() {
            public int n() { return d.n; }
            public Tensor clean(int[] idx) { return d.batch(idx, ImageDataset.Noise.NONE, 0, null); }
            public int[] labels(int[] idx) { return d.labelsOf(idx); }
            public int numClasses() { return d.numClasses; }
        };
    }

    private static Source vectorSource(FrozenFlow flow, Tensor x, int[] labels) {
        FrozenFlow.checkData(flow, x, "training vectors");
        int n = x.size(0), dim = x.numel() / n;
        if (labels != null && labels.length != n) throw new IllegalArgumentException(labels.length + " labels for " + n + " vectors");
        int classes = 0;
        if (labels != null) for (int l : labels) {
            if (l < 0) throw new IllegalArgumentException("negative label " + l);
            classes = Math.max(classes, l + 1);
        }
        int nc = classes;
        float[] xd = x.data();
        return new Source() {
            public int n() { return n; }
            public Tensor clean(int[] idx) {
                float[] out = new float[idx.length * dim];
                for (int i = 0; i < idx.length; i++) System.arraycopy(xd, idx[i] * dim, out, i * dim, dim);
                int[] s = x.shape();
                s[0] = idx.length;
                return Tensor.of(out, s);
            }
            public int[] labels(int[] idx) {
                if (labels == null) return null;
                int[] y = new int[idx.length];
                for (int i = 0; i < idx.length; i++) y[i] = labels[idx[i]];
                return y;
            }
            public int numClasses() { return nc; }
        };
    }

    public long step() { return loop.step(); }

    /**
     * The random part of a step, drawn in {@link #objective(Tensor, int[], Rng)}'s order: x~ (B, ...) = x +
     * sigma eps, the labels after dropout (-1 = dropped; null unconditional), training-time CFG scales (null without).
     */
    public record Draw(Tensor noisy, int[] labels, float[] w) {}

    /**
     * Where a step's gradient is computed when not here (the spark module's data-parallel runner): it
     * gets the batch and its {@link Draw} as this trainer drew them, puts d loss / d parameters into G's
     * grads ({@link Tensor#addToGrad}) and returns the batch's values; the step goes on as on one machine.
     */
    public interface Gradients {
        Computed compute(long step, Tensor x, Draw d);

        /** The objective, the raw reconstruction MSE and the mean raw alignment term of the whole batch. */
        record Computed(double loss, double recon, double align) {}
    }

    /** Null: gradients are computed here (the default). */
    public void setGradients(Gradients g) { this.gradients = g; }

    public Ema ema() { return ema; }

    private int[] nextBatch() {
        int[] idx = new int[cfg.batchSize()];
        for (int i = 0; i < idx.length; i++) {
            if (cursor == order.length) {
                order = rng.permutation(data.n());
                cursor = 0;
            }
            idx[i] = order[cursor++];
        }
        return idx;
    }

    // ==================================================================== the objective

    /**
     * The objective for clean x with labels y (null for an unconditional flow); draws the training
     * noise, label dropout and guidance scales from {@code r} in that order.
     */
    public Losses objective(Tensor x, int[] y, Rng r) { return objective(x, draw(x, y, r), null); }

    /** Checks x and y and draws the step's randomness from r (noise, label dropout, guidance scales, in that order). */
    public Draw draw(Tensor x, int[] y, Rng r) {
        FrozenFlow.checkData(flow, x, "x");
        int b = x.size(0);
        if (flow.numClasses() > 0 && y == null) throw new IllegalArgumentException("the flow is class-conditional: pass labels");
        if (flow.numClasses() == 0 && y != null) throw new IllegalArgumentException("the flow is unconditional: pass null labels");
        if (y != null) {
            if (y.length != b) throw new IllegalArgumentException(y.length + " labels for a batch of " + b);
            for (int v : y)
                if (v < 0 || v >= flow.numClasses())
                    throw new IllegalArgumentException("training label " + v + " is outside [0, " + flow.numClasses() + ")");
        }
        // x~ = x + sigma eps
        float[] noisy = x.toArray();
        for (int i = 0; i < noisy.length; i++) noisy[i] += cfg.sigma() * (float) r.nextGaussian();
        Tensor xn = Tensor.of(noisy, x.shape());
        // label dropout: G's null class and F's unconditional path together
        int[] yG = y == null ? null : y.clone();
        if (y != null && bc.cfg() != BackwardConfig.Cfg.NONE)
            for (int i = 0; i < b; i++) if (r.nextDouble() < cfg.labelDropout()) yG[i] = -1;
        float[] w = null;
        if (bc.cfg().guidanceInput()) {
            w = new float[b];
            double logMax = Math.log1p(bc.wMax());
            for (int i = 0; i < b; i++) w[i] = r.nextDouble() < bc.wZeroProb() ? 0f : (float) Math.expm1(r.nextDouble() * logMax);
        }
        return new Draw(xn, yG, w);
    }

    /**
     * The objective of clean x given its draw. {@code batchValues} (null: this batch alone) turns the raw
     * term values of this batch into those the adaptive weights use: a data-parallel worker holds a shard,
     * and a(L) must be weighted by the whole batch's L, gathered from every shard.
     */
    public Losses objective(Tensor x, Draw d, java.util.function.UnaryOperator<Map<String, Double>> batchValues) {
        List<Tensor> traj = flow.trajectory(d.noisy(), d.labels());
        return objective(x, d.noisy(), traj, d.labels(), d.w(), batchValues);
    }

    Losses objective(Tensor x, Tensor xn, List<Tensor> traj, int[] yG, float[] w) { return objective(x, xn, traj, yG, w, null); }

    /** The objective given the trajectory of x~ (under labels yG, -1 = dropped) and guidance scales w (training-time CFG). */
    Losses objective(Tensor x, Tensor xn, List<Tensor> traj, int[] yG, float[] w, java.util.function.UnaryOperator<Map<String, Double>> batchValues) {
        int b = x.size(0), nStages = bc.stages();
        Tensor z = traj.get(nStages);
        BiFlowModel.Output out = w == null ? model.forward(z, yG, null) : cfgForward(z, yG, w);

        Map<String, Double> terms = new LinkedHashMap<>();
        // each term's tensor and weight, in the order of terms: the total is formed once the batch's values are known
        List<Tensor> parts = new ArrayList<>();
        List<Float> weights = new ArrayList<>();
        // reconstruction at the image end
        boolean learned = bc.denoise() == BackwardConfig.Denoise.LEARNED;
        Tensor target = learned ? flow.toTokens(x) : traj.get(0);
        Tensor recon = Fused.mse(out.tokens(), target);
        terms.put("recon", (double) recon.item());
        parts.add(recon);
        weights.add(bc.reconWeight());
        if (!perceptual.isEmpty()) {
            Tensor img = model.toData(out.tokens());
            Tensor targetImg = learned ? x : xn;
            for (Term t : perceptual) {
                Tensor d = t.distance().distance(img, targetImg);
                terms.put(t.distance().name(), (double) d.item());
                parts.add(d);
                weights.add(t.weight());
            }
        }
        // trajectory supervision
        double alignSum = 0;
        int nAlign = 0;
        if (bc.strategy() == BackwardConfig.Strategy.HIDDEN_ALIGNMENT) {
            for (int i = 0; i < nStages; i++) {
                Tensor d = Fused.mse(model.project(i, out.hidden().get(i)), alignTarget(traj.get(i)));
                double v = d.item();
                terms.put("align." + i, v);
                alignSum += v;
                nAlign++;
                parts.add(d);
                weights.add(bc.alignWeight());
            }
        } else if (bc.strategy() == BackwardConfig.Strategy.HIDDEN_DISTILLATION) {
            for (int i = 0; i < nStages; i++) {
                Tensor xi = traj.get(i);
                Tensor[] ms = targetStats(xi); // mean and 1/sd of the target, constants
                Tensor pred = Ops.mul(Ops.sub(out.states().get(i), ms[0]), ms[1]);
                Tensor tgt = Ops.mul(Ops.sub(xi, ms[0]), ms[1]);
                Tensor d = Fused.mse(pred, tgt);
                double v = d.item();
                terms.put("distill." + i, v);
                alignSum += v;
                nAlign++;
                parts.add(d);
                weights.add(bc.alignWeight());
            }
        }
        Map<String, Double> weighBy = batchValues == null ? terms : batchValues.apply(terms);
        Tensor total = null;
        int k = 0;
        for (String name : terms.keySet()) {
            total = add(total, adaptive(parts.get(k), weighBy.get(name)), weights.get(k));
            k++;
        }
        return new Losses(total, terms.get("recon"), nAlign == 0 ? 0 : alignSum / nAlign, terms);
    }

    /**
     * Training-time CFG: one evaluation of G on the batch plus, for every example that has a label
     * and w > 0, a null-class copy; each output is combined as (o(c, w) + w o(null, w)) / (1 + w).
     * Examples with w = 0 or a dropped label need no partner (the combination is o itself). This is the
     * whole-network form (TRAINING_TIME); TRAINING_TIME_STAGE combines stage by stage inside G instead.
     */
    private BiFlowModel.Output cfgForward(Tensor z, int[] yG, float[] w) {
        int b = z.size(0);
        if (yG == null) return model.forward(z, yG, w);
        if (bc.cfg() == BackwardConfig.Cfg.TRAINING_TIME_STAGE) return model.forwardStageGuided(z, yG, w);
        // Every example gets a null-class copy, used only by those with a label and w > 0 (the others combine with
        // themselves): the batch is 2B every step, not B + (a random count), so a step asks for the same array sizes
        // each time and its buffers are reused (Arena) instead of about 1.5 GB allocated per step.
        int[] y2 = new int[2 * b];
        float[] w2 = new float[2 * b];
        for (int i = 0; i < b; i++) {
            y2[i] = yG[i];
            w2[i] = w[i];
            y2[b + i] = -1;
            w2[b + i] = w[i];
        }
        BiFlowModel.Output all = model.forward(Ops.concat(0, z, z), y2, w2);
        BiFlowModel.Guided mix = new BiFlowModel.Guided(yG, w);
        List<Tensor> hidden = new ArrayList<>(), states = new ArrayList<>();
        for (Tensor h : all.hidden()) hidden.add(mix.implicitConditional(h));
        for (Tensor s : all.states()) states.add(mix.implicitConditional(s));
        return new BiFlowModel.Output(hidden, states, mix.implicitConditional(all.tokens()));
    }

    /** norm(x_i) of hidden alignment, without a graph. */
    Tensor alignTarget(Tensor xi) {
        return switch (bc.alignNorm()) {
            case NONE -> xi;
            case TOKEN -> Fused.layerNorm(xi, null, null, BiFlowModel.NORM_EPS);
            case SAMPLE -> Ops.reshape(Fused.layerNorm(Ops.reshape(xi, xi.size(0), -1), null, null, BiFlowModel.NORM_EPS), xi.shape());
        };
    }

    /** Mean and 1/sqrt(var + 1e-6) of x_i per token or per example ({0, 1} for NONE), shaped to broadcast. */
    private Tensor[] targetStats(Tensor xi) {
        int b = xi.size(0), t = xi.size(1), d = xi.size(2);
        if (bc.alignNorm() == BackwardConfig.AlignNorm.NONE) return new Tensor[]{Tensor.scalar(0f), Tensor.scalar(1f)};
        boolean tok = bc.alignNorm() == BackwardConfig.AlignNorm.TOKEN;
        int groups = tok ? b * t : b, size = tok ? d : t * d;
        float[] x = xi.data(), mu = new float[groups], is = new float[groups];
        for (int g = 0; g < groups; g++) {
            double s = 0, s2 = 0;
            for (int j = 0; j < size; j++) s += x[g * size + j];
            double m = s / size;
            for (int j = 0; j < size; j++) { double v = x[g * size + j] - m; s2 += v * v; }
            mu[g] = (float) m;
            is[g] = (float) (1 / Math.sqrt(s2 / size + BiFlowModel.NORM_EPS));
        }
        return tok ? new Tensor[]{Tensor.of(mu, b, t, 1), Tensor.of(is, b, t, 1)}
                : new Tensor[]{Tensor.of(mu, b, 1, 1), Tensor.of(is, b, 1, 1)};
    }

    /** a(L) = L / sg((v + eps)^p), v the batch's value of L. */
    private Tensor adaptive(Tensor l, double v) {
        if (bc.adaptiveP() == 0) return l;
        if (!Double.isFinite(v)) return l; // the step is skipped anyway
        return Ops.mulScalar(l, (float) (1 / Math.pow(v + bc.adaptiveEps(), bc.adaptiveP())));
    }

    private static Tensor add(Tensor total, Tensor term, float weight) {
        if (weight == 0) return total == null ? Ops.mulScalar(term, 0f) : total;
        Tensor t = weight == 1f ? term : Ops.mulScalar(term, weight);
        return total == null ? t : Ops.add(total, t);
    }

    // ==================================================================== the loop

    /** Runs until cfg.steps (from the current step), reporting to listener; checkpoints at the end. */
    public void run(Listener listener) throws IOException { runUntil(cfg.steps(), listener); }

    /**
     * Runs until cfg.steps or until {@code stopEarly} says so (checked after every step, e.g. a time
     * limit), then writes a checkpoint; periodic checkpoints as {@code cfg.checkpointEvery} says.
     */
    public void run(Listener listener, BooleanSupplier stopEarly) throws IOException {
        this.listener = listener;
        model.train();
        loop.runUntil(cfg.steps(), stopEarly);
    }

    /**
     * Runs until step {@code stop} (at most cfg.steps) without changing the schedule, then writes
     * a checkpoint: a run split into pieces equals one run of all the steps. The divergence guard's
     * count carries over from one call to the next.
     */
    public void runUntil(long stop, Listener listener) throws IOException {
        this.listener = listener;
        model.train();
        loop.runUntil(stop, null);
    }

    private GuardedStep.Outcome step(long next, double lr, GuardedStep guard) {
        long t0 = System.nanoTime();
        int[] idx = nextBatch();
        Tensor x = data.clean(idx);
        int[] y = flow.numClasses() > 0 ? data.labels(idx) : null;
        Draw d = draw(x, y, rng);
        double lv, recon, align;
        GuardedStep.Outcome o;
        if (gradients != null) {
            Gradients.Computed c = gradients.compute(next, x, d);
            lv = c.loss();
            recon = c.recon();
            align = c.align();
            o = guard.applyComputed(lv, null);
        } else {
            Losses l = objective(x, d, null);
            lv = l.total().item();
            recon = l.recon();
            align = l.align();
            o = guard.apply(l.total(), lv, null);
        }
        listener.onStep(new StepStats(next, lv, recon, align, lr, o.gradNorm(), !o.applied(), o.badInARow(), (System.nanoTime() - t0) / 1e9));
        return o;
    }

    /** The parts of a checkpoint: G, the training state, and (with EMA) G's EMA weights, in that order. */
    private List<RunCheckpoint.Part> parts() {
        long step = loop.step();
        Map<String, String> extra = new LinkedHashMap<>();
        extra.put("step", Long.toString(step));
        extra.put(BackwardCheckpoints.SIGMA_KEY, Float.toString(cfg.sigma()));
        extra.put(BackwardCheckpoints.FORWARD_CONFIG_KEY, flow.describe());
        Map<String, String> emaExtra = new LinkedHashMap<>(extra);
        emaExtra.put("ema_decay", Double.toString(cfg.emaDecay()));
        return TrainingState.capture(opt, ema, rng, step, cursor, order).parts(FILES,
                () -> BackwardCheckpoints.toBytes(model, extra), ema, () -> BackwardCheckpoints.toBytes(model, emaExtra));
    }

    /** The files of this trainer's checkpoints. */
    static final TrainingState.Files FILES = new TrainingState.Files(MODEL_FILE, STATE_FILE, EMA_FILE);

    /**
     * Writes G (loadable by {@link BackwardCheckpoints}), the training state and G's EMA weights as
     * one checkpoint ({@link RunCheckpoint}); refuses non-finite weights.
     */
    public void checkpoint() throws IOException { loop.checkpoint(); }

    /**
     * Restores G, optimizer, EMA, RNG, data position and the divergence counters from a folder
     * written by {@link #checkpoint}, after checking that its parts form one checkpoint.
     */
    public void resume(Path from) throws IOException {
        Path mf = from.resolve(MODEL_FILE), sf = from.resolve(STATE_FILE);
        RunCheckpoint.Manifest m = RunCheckpoint.open(from, FILES.names(ema != null));
        if (m == null && (!Files.exists(mf) || !Files.exists(sf)))
            throw new IOException("cannot resume from " + from + ": it needs " + MODEL_FILE + " and " + STATE_FILE + " written by a backward training run");
        BackwardCheckpoints.Loaded saved = BackwardCheckpoints.read(mf);
        if (!saved.model().config.equals(model.config))
            throw new IllegalArgumentException("cannot resume: checkpoint config " + saved.model().config.toJson() + " differs from " + model.config.toJson());
        if (saved.forwardConfig() != null && !saved.forwardConfig().equals(flow.describe()))
            throw new IllegalArgumentException("cannot resume: the checkpoint was trained against forward model " + saved.forwardConfig()
                    + ", this trainer has " + flow.describe());
        TrainingState s = TrainingState.resume(from, m, FILES, ema != null, data.n(), opt, ema, rng);
        model.loadStateDict(saved.model().stateDict(), true);
        cursor = s.cursor();
        order = s.order();
        long step = s.step();
        loop.restore(step, m != null ? m.skipped() : 0, m != null ? m.badInARow() : 0, mf);
    }

    /** Skipped steps of the whole run so far (resumed sessions included). */
    public long skipped() { return loop.skipped(); }

    // ==================================================================== evaluation

    /** Reconstruction errors of x from G(F(x + sigma eps)) at w = 0: against the clean x and against the noisy x~. */
    public record Reconstruction(double mseClean, double mseNoisy) {}

    /** Mean squared reconstruction error over a batch of clean data x (labels y or null), without a graph. */
    public static Reconstruction reconstruction(FrozenFlow flow, BiFlowModel g, Tensor x, int[] y, float sigma, Rng r) {
        FrozenFlow.checkData(flow, x, "x");
        flow.checkMatches(g.config);
        float[] noisy = x.toArray();
        for (int i = 0; i < noisy.length; i++) noisy[i] += sigma * (float) r.nextGaussian();
        Tensor xn = Tensor.of(noisy, x.shape());
        try (var ng = Grad.noGrad()) {
            List<Tensor> traj = flow.trajectory(xn, y);
            Tensor xr = g.generate(traj.get(traj.size() - 1), y, 0f);
            Tensor a = Ops.reshape(xr, x.numel()), c = Ops.reshape(x, x.numel()), nn = Ops.reshape(xn, x.numel());
            return new Reconstruction(Fused.mse(a, c).item(), Fused.mse(a, nn).item());
        }
    }
}
