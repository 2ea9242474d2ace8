// Maximum-likelihood training of the forward flow F (stage 1 of BiFlow), with resumable checkpoints.
package dev.biflow.flow.train;

import dev.biflow.engine.Arena;
import dev.biflow.engine.Grad;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.optim.AdamW;
import dev.biflow.engine.optim.Ema;
import dev.biflow.engine.optim.LrSchedule;
import dev.biflow.flow.data.ImageDataset;
import dev.biflow.flow.model.Checkpoints;
import dev.biflow.flow.model.TarFlow;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

/**
 * Trains a TarFlow on an image dataset: x + sigma * eps, label dropout, loss
 * 0.5 mean(z^2) - mean(logdet), AdamW with warm-up + cosine, optional clipping and EMA, and the
 * running prior variance. Non-finite steps are skipped and counted. Checkpoints (model file +
 * training-state file) are written atomically every K steps; {@link #resume} continues a run
 * exactly (same parameters as an uninterrupted run, single-threaded).
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
    private final LrSchedule schedule;
    private final Rng rng;
    private long step;
    private int[] order;
    private int cursor;
    private Path lastGood;

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
        this.schedule = LrSchedule.warmupCosine(cfg.lr(), cfg.minLr(), cfg.warmupSteps(), cfg.steps());
        this.rng = new Rng(cfg.seed());
        this.order = rng.permutation(data.n);
    }

    public long step() { return step; }

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
     * Runs until step {@code stop} (at most cfg.steps) without changing the schedule, then writes
     * a checkpoint: a run split into pieces equals one run of all the steps.
     */
    public void runUntil(long stop, Listener listener) throws IOException {
        stop = Math.min(stop, cfg.steps());
        GuardedStep guard = new GuardedStep(params, opt, ema, cfg);
        while (step < stop) {
            long t0 = System.nanoTime();
            int[] idx = nextBatch();
            Tensor x = data.batch(idx, ImageDataset.Noise.GAUSSIAN, cfg.sigma(), rng);
            int[] y = null;
            if (model.config.conditional()) {
                y = data.labelsOf(idx);
                for (int i = 0; i < y.length; i++) if (rng.nextDouble() < cfg.labelDropout()) y[i] = -1;
            }
            double lr = schedule.at(step);
            opt.setLr(lr);
            opt.zeroGrad();
            double lv;
            GuardedStep.Outcome o;
            // the step's activations and gradients come from reused arrays (Arena), handed back at the end of the step
            try (Arena ws = Arena.open()) {
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
            step++;
            listener.onStep(new StepStats(step, lv, lr, o.gradNorm(), !o.applied(), o.badInARow(), (System.nanoTime() - t0) / 1e9));
            if (guard.checkpointDue(o, step, lastGood) && dir != null) {
                checkpoint();
                listener.onCheckpoint(step, dir.resolve(MODEL_FILE));
            }
        }
        if (dir != null) {
            checkpoint();
            listener.onCheckpoint(step, dir.resolve(MODEL_FILE));
        }
    }

    /** Writes the model (loadable by {@link Checkpoints}) and the training state, each atomically. */
    public void checkpoint() throws IOException {
        Files.createDirectories(dir);
        // state first, model last: a model file never points at a newer state than exists
        TrainingState.capture(opt, ema, rng, step, cursor, order).write(dir.resolve(STATE_FILE));
        if (ema != null) {
            ema.swap(); // the EMA weights into the model, saved, then swapped back
            try {
                Checkpoints.save(model, dir.resolve(EMA_FILE), Map.of("step", Long.toString(step), "ema_decay", Double.toString(cfg.emaDecay())));
            } finally {
                ema.swap();
            }
        }
        Checkpoints.save(model, dir.resolve(MODEL_FILE), Map.of("step", Long.toString(step)));
        lastGood = dir.resolve(MODEL_FILE);
    }

    /** Restores model, optimizer, EMA, RNG and data position from a run folder written by {@link #checkpoint}. */
    public void resume(Path from) throws IOException {
        Path mf = from.resolve(MODEL_FILE), sf = from.resolve(STATE_FILE);
        if (!Files.exists(mf) || !Files.exists(sf))
            throw new IOException("cannot resume from " + from + ": it needs " + MODEL_FILE + " and " + STATE_FILE + " written by a training run");
        TarFlow saved = Checkpoints.loadTarFlow(mf);
        if (!saved.config.equals(model.config))
            throw new IllegalArgumentException("cannot resume: checkpoint config " + saved.config.toJson() + " differs from " + model.config.toJson());
        model.loadStateDict(saved.stateDict(), true);
        TrainingState s = TrainingState.read(sf);
        s.restore(opt, ema, rng);
        step = s.step();
        cursor = s.cursor();
        order = s.order();
        lastGood = mf;
    }
}
