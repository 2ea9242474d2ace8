// Maximum-likelihood training of the forward flow F (stage 1 of BiFlow), with resumable checkpoints.
package dev.biflow.flow.train;

import dev.biflow.engine.Grad;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.optim.AdamW;
import dev.biflow.engine.optim.Ema;
import dev.biflow.flow.data.ImageDataset;
import dev.biflow.flow.model.Checkpoints;
import dev.biflow.flow.model.TarFlow;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.BooleanSupplier;

/**
 * Trains a TarFlow on an image dataset: x + sigma * eps (TARFlow's noise; sigma = 0 trains on uniformly
 * dequantised pixels (x_int + u) / 256 instead, the classic flow setting whose test bits/dim compares with
 * published flows, since a flow on the raw discrete pixels has no finite density), label dropout, loss
 * 0.5 mean(z^2) - mean(logdet), AdamW with warm-up + cosine, optional clipping and EMA, and the
 * running prior variance. Non-finite steps are skipped and counted ({@link TrainLoop}). Checkpoints
 * (model file, training-state file, EMA file) are committed as one unit ({@link RunCheckpoint})
 * every K steps; {@link #resume} checks them and continues a run exactly (same parameters as an
 * uninterrupted run, single-threaded).
 */
public final class ForwardTrainer {
    /** Per-step report. */
    public record StepStats(long step, double loss, double lr, double gradNorm, boolean skipped, long badInARow, double seconds) {}

    /** Hooks for progress bars, metric logs and sample grids. */
    public interface Listener {
        default void onStep(StepStats s) {}
        default void onCheckpoint(long step, Path model) {}
    }

    public static final String MODEL_FILE = "model.safetensors";
    public static final String STATE_FILE = "train-state.safetensors";
    /** The EMA weights as a model file (written when EMA is on); usually the better sampler. */
    public static final String EMA_FILE = "model-ema.safetensors";

    public final TarFlow model;
    public final TrainConfig cfg;
    private final ImageDataset data;
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

    public ForwardTrainer(TarFlow model, ImageDataset data, TrainConfig cfg, Path dir) {
        if (model.config.inChannels() != data.channels || model.config.imgSize() != data.height || data.height != data.width)
            throw new IllegalArgumentException("model expects " + model.config.inChannels() + "x" + model.config.imgSize() + "x" + model.config.imgSize()
                    + " images, dataset " + data.name + " has " + data.channels + "x" + data.height + "x" + data.width);
        if (model.config.conditional() && model.config.numClasses() < data.numClasses)
            throw new IllegalArgumentException("model has " + model.config.numClasses() + " classes, dataset has " + data.numClasses);
        this.model = model;
        this.data = data;
        this.cfg = cfg;
        this.dir = dir;
        this.params = model.parameters();
        this.opt = new AdamW(params, cfg.lr(), cfg.beta1(), cfg.beta2(), 1e-8, cfg.weightDecay());
        this.ema = cfg.emaDecay() > 0 ? new Ema(params, cfg.emaDecay()) : null;
        if (data.n < 1) throw new IllegalArgumentException("dataset " + data.name + " has no images to train on");
        this.rng = new Rng(cfg.seed());
        this.order = rng.permutation(data.n);
        this.loop = new TrainLoop(cfg, params, opt, ema, dir, MODEL_FILE, new TrainLoop.Body() {
            @Override public GuardedStep.Outcome step(long step, double lr, GuardedStep guard) { return ForwardTrainer.this.step(step, lr, guard); }
            @Override public List<RunCheckpoint.Part> parts() { return ForwardTrainer.this.parts(); }
            @Override public void checkpointed(long step) { listener.onCheckpoint(step, dir.resolve(MODEL_FILE)); }
        });
    }

    public long step() { return loop.step(); }

    /**
     * Where a step's gradient is computed when it is not computed here: a data-parallel runner (the spark
     * module) gets each step's batch, exactly as this trainer drew it, and puts d loss / d parameters into
     * the parameters' grads ({@link Tensor#addToGrad}); the step then continues as on one machine
     * (the guard's checks, clipping, AdamW, EMA, the prior update, checkpoints).
     */
    public interface Gradients {
        /**
         * x (B, C, H, W) noisy images, y (B) labels (-1 dropped) or null: fills the grads, returns the
         * batch's loss and, per value of z, the sum over the batch of z^2 ({@link TarFlow#priorSquares}).
         */
        Computed compute(long step, Tensor x, int[] y);

        record Computed(double loss, double[] zSquares) {}
    }

    /** Null: gradients are computed here (the default). */
    public void setGradients(Gradients g) { this.gradients = g; }

    public Ema ema() { return ema; }

    private int[] nextBatch() {
        int[] idx = new int[cfg.batchSize()];
        for (int i = 0; i < idx.length; i++) {
            if (cursor == order.length) {
                order = rng.permutation(data.n);
                cursor = 0;
            }
            idx[i] = order[cursor++];
        }
        return idx;
    }

    /** Runs until cfg.steps (from the current step), reporting to listener; checkpoints at the end. */
    public void run(Listener listener) throws IOException { runUntil(cfg.steps(), listener); }

    /**
     * Runs until cfg.steps or until {@code stopEarly} says so (checked after every step, e.g. a time
     * limit), then writes a checkpoint; periodic checkpoints as {@code cfg.checkpointEvery} says.
     */
    public void run(Listener listener, BooleanSupplier stopEarly) throws IOException {
        this.listener = listener;
        loop.runUntil(cfg.steps(), stopEarly);
    }

    /**
     * Runs until step {@code stop} (at most cfg.steps) without changing the schedule, then writes
     * a checkpoint: a run split into pieces equals one run of all the steps. The divergence guard's
     * count carries over from one call to the next.
     */
    public void runUntil(long stop, Listener listener) throws IOException {
        this.listener = listener;
        loop.runUntil(stop, null);
    }

    /** Gaussian noise of sigma, or uniform dequantisation alone for sigma = 0 (see the class comment). */
    public static ImageDataset.Noise trainingNoise(float sigma) {
        return sigma > 0 ? ImageDataset.Noise.GAUSSIAN : ImageDataset.Noise.UNIFORM_DEQUANT;
    }

    private GuardedStep.Outcome step(long next, double lr, GuardedStep guard) {
        long t0 = System.nanoTime();
        int[] idx = nextBatch();
        Tensor x = data.batch(idx, trainingNoise(cfg.sigma()), cfg.sigma(), rng);
        int[] y = null;
        if (model.config.conditional()) {
            y = data.labelsOf(idx);
            for (int i = 0; i < y.length; i++) if (rng.nextDouble() < cfg.labelDropout()) y[i] = -1;
        }
        double lv;
        GuardedStep.Outcome o;
        if (gradients != null) {
            Gradients.Computed c = gradients.compute(next, x, y);
            lv = c.loss();
            o = guard.applyComputed(lv, () -> model.updatePrior(c.zSquares(), x.size(0)));
        } else {
            TarFlow.Forward f = model.forward(x, y);
            Tensor loss = TarFlow.loss(f);
            lv = loss.item();
            // the running prior variance follows only applied steps
            o = guard.apply(loss, lv, () -> {
                try (var ng = Grad.noGrad()) {
                    model.updatePrior(f.z());
                }
            });
        }
        listener.onStep(new StepStats(next, lv, lr, o.gradNorm(), !o.applied(), o.badInARow(), (System.nanoTime() - t0) / 1e9));
        return o;
    }

    /** The parts of a checkpoint: model, training state, and (with EMA) the EMA weights, in that order. */
    private List<RunCheckpoint.Part> parts() {
        long step = loop.step();
        return TrainingState.capture(opt, ema, rng, step, cursor, order).parts(FILES,
                () -> Checkpoints.toBytes(model, Map.of("step", Long.toString(step))), ema,
                () -> Checkpoints.toBytes(model, emaMetadata(step, cfg.emaDecay())));
    }

    /** The EMA file's metadata, in a fixed order (the file's bytes must not depend on the JVM run). */
    static Map<String, String> emaMetadata(long step, double decay) {
        Map<String, String> m = new LinkedHashMap<>();
        m.put("step", Long.toString(step));
        m.put("ema_decay", Double.toString(decay));
        return m;
    }

    /** The files of this trainer's checkpoints. */
    static final TrainingState.Files FILES = new TrainingState.Files(MODEL_FILE, STATE_FILE, EMA_FILE);

    /**
     * Writes the model (loadable by {@link Checkpoints}), the training state and the EMA weights as
     * one checkpoint ({@link RunCheckpoint}); refuses non-finite weights.
     */
    public void checkpoint() throws IOException { loop.checkpoint(); }

    /**
     * Restores model, optimizer, EMA, RNG, data position and the divergence counters from a run
     * folder written by {@link #checkpoint}, after checking that its parts form one checkpoint.
     */
    public void resume(Path from) throws IOException {
        Path mf = from.resolve(MODEL_FILE), sf = from.resolve(STATE_FILE);
        RunCheckpoint.Manifest m = RunCheckpoint.open(from, FILES.names(ema != null));
        if (m == null) {
            if (!Files.exists(mf) || !Files.exists(sf))
                throw new IOException("cannot resume from " + from + ": it needs " + MODEL_FILE + " and " + STATE_FILE + " written by a training run");
        }
        TarFlow saved = Checkpoints.loadTarFlow(mf);
        if (!saved.config.equals(model.config))
            throw new IllegalArgumentException("cannot resume: checkpoint config " + saved.config.toJson() + " differs from " + model.config.toJson());
        TrainingState s = TrainingState.resume(from, m, FILES, ema != null, data.n, opt, ema, rng);
        model.loadStateDict(saved.stateDict(), true);
        cursor = s.cursor();
        order = s.order();
        long step = s.step();
        loop.restore(step, m != null ? m.skipped() : 0, m != null ? m.badInARow() : 0, mf);
    }

    /** Skipped steps of the whole run so far (resumed sessions included). */
    public long skipped() { return loop.skipped(); }
}
