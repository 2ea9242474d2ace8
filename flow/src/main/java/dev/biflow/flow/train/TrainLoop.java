// The training loop both trainers run: guarded steps, the divergence stop across the whole run, checkpoints committed as one unit.
package dev.biflow.flow.train;

import dev.biflow.engine.Arena;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.optim.AdamW;
import dev.biflow.engine.optim.Ema;
import dev.biflow.engine.optim.LrSchedule;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.function.BooleanSupplier;

/**
 * The loop of {@link ForwardTrainer} and {@link dev.biflow.flow.inverse.BackwardTrainer}; each
 * supplies its step ({@link Body#step}) and the parts of its checkpoint ({@link Body#parts}).
 *
 * <ul>
 *   <li>One {@link GuardedStep} for the whole run: the count of bad steps in a row survives the
 *       calls of {@link #runUntil} and a resume (it is saved in the checkpoint's manifest), so
 *       {@code maxBadSteps} stops the run whatever the checkpoint interval.</li>
 *   <li>A periodic checkpoint after an applied step every {@code checkpointEvery} steps (0: none;
 *       only the one at the end of {@link #runUntil}).</li>
 *   <li>Before any checkpoint the weights (and EMA weights) are checked: non-finite weights are
 *       never written; the run stops with {@link TrainingDivergedException}, the last good
 *       checkpoint intact.</li>
 *   <li>At the end of the run (step == cfg.steps) a run that skipped more than half of its steps
 *       did not train: its checkpoint is written (the weights are finite) and the run fails with
 *       {@link TrainingDivergedException}.</li>
 *   <li>Checkpoints are committed as one unit by {@link RunCheckpoint}.</li>
 * </ul>
 */
public final class TrainLoop {
    /** What a trainer adds to the loop. */
    public interface Body {
        /**
         * Takes the {@code step}-th step (counted from 1) at learning rate {@code lr}, already set on
         * the optimizer, gradients zeroed: draws the batch, computes the loss, applies it with
         * {@code guard.apply}, reports the step to the trainer's listener; returns the outcome.
         */
        GuardedStep.Outcome step(long step, double lr, GuardedStep guard);

        /** The checkpoint's parts at this moment (the model file first), as bytes. */
        List<RunCheckpoint.Part> parts();

        /** Called after a checkpoint was committed. */
        void checkpointed(long step);
    }

    private final TrainConfig cfg;
    private final List<Tensor> params;
    private final AdamW opt;
    private final Ema ema;
    private final LrSchedule schedule;
    private final GuardedStep guard;
    private final Path dir;
    private final String modelFile;
    private final Body body;
    private long step;
    private long skipped;
    private long checkpointedStep = -1;
    private Path lastGood;

    /** dir null: no checkpoints. modelFile: the part that holds the model (named in messages). */
    public TrainLoop(TrainConfig cfg, List<Tensor> params, AdamW opt, Ema ema, Path dir, String modelFile, Body body) {
        this.cfg = cfg;
        this.params = params;
        this.opt = opt;
        this.ema = ema;
        this.schedule = LrSchedule.warmupCosine(cfg.lr(), cfg.minLr(), cfg.warmupSteps(), cfg.steps());
        this.guard = new GuardedStep(params, opt, ema, cfg);
        this.dir = dir;
        this.modelFile = modelFile;
        this.body = body;
    }

    public long step() { return step; }

    /** Skipped (non-finite) steps of the whole run so far, resumed sessions included. */
    public long skipped() { return skipped; }

    public int badInARow() { return guard.badInARow(); }

    /** The model file of the last checkpoint written or resumed from, or null. */
    public Path lastGood() { return lastGood; }

    /** After a resume: the step, the run's counters, and the checkpoint it came from. */
    public void restore(long step, long skipped, int badInARow, Path checkpoint) {
        this.step = step;
        this.skipped = skipped;
        this.guard.setBadInARow(badInARow);
        this.checkpointedStep = step;
        this.lastGood = checkpoint;
    }

    /**
     * Runs until step {@code stop} (at most cfg.steps) or until {@code stopEarly} says so (checked
     * after every step; null: never), then writes a checkpoint unless one of this step exists: a
     * run split into pieces equals one run of all the steps.
     */
    public void runUntil(long stop, BooleanSupplier stopEarly) throws IOException {
        stop = Math.min(stop, cfg.steps());
        while (step < stop) {
            double lr = schedule.at(step);
            opt.setLr(lr);
            opt.zeroGrad();
            GuardedStep.Outcome o;
            // the step's activations, gradients and temporaries come from reused arrays, handed back when it ends:
            // a step allocates almost nothing in steady state (Arena); the body reads what it reports inside the scope
            try (Arena ws = Arena.open()) {
                o = body.step(step + 1, lr, guard);
            }
            step++;
            if (!o.applied()) skipped++;
            if (guard.checkpointDue(o, step, lastGood) && dir != null) checkpoint();
            if (stopEarly != null && stopEarly.getAsBoolean()) break;
        }
        if (dir != null && step != checkpointedStep) checkpoint();
        if (step == cfg.steps() && skipped * 2 > step)
            throw new TrainingDivergedException("training did not train: " + skipped + " of " + step + " steps had a NaN/Inf loss or gradient"
                    + " and were skipped" + (dir != null ? " (the checkpoint at " + dir.resolve(modelFile) + " holds the weights of the few applied steps)" : "")
                    + "; lower the learning rate, enable --grad-clip, or check the data", step, lastGood);
    }

    /** Commits a checkpoint of the current state, unless the weights are not finite (then the run stops). */
    public void checkpoint() throws IOException {
        if (dir == null) throw new IllegalStateException("this trainer was built without a checkpoint folder");
        String bad = nonFinite();
        if (bad != null)
            throw new TrainingDivergedException("training diverged at step " + step + ": " + bad + ", so no checkpoint was written. "
                    + (lastGood != null ? "The last good checkpoint is intact at " + lastGood + "; resume from it with a lower learning rate or --grad-clip."
                    : "No checkpoint was written yet; lower the learning rate or enable gradient clipping."), step, lastGood);
        try {
            Files.createDirectories(dir);
        } catch (IOException e) {
            throw RunCheckpoint.fsError("create the run folder", dir, e);
        }
        List<RunCheckpoint.Part> parts = body.parts();
        List<String> names = new ArrayList<>();
        for (RunCheckpoint.Part p : parts) names.add(p.file());
        if (checkpointedStep < 0) RunCheckpoint.cleanStale(dir, names); // leftovers of a killed earlier session
        RunCheckpoint.commit(dir, step, skipped, guard.badInARow(), parts);
        checkpointedStep = step;
        lastGood = dir.resolve(modelFile);
        body.checkpointed(step);
    }

    /** Null when every weight (and EMA weight) is finite; else which tensor is not. */
    private String nonFinite() {
        for (int i = 0; i < params.size(); i++) {
            String b = nonFinite(params.get(i).data());
            if (b != null) return "parameter " + i + " " + b;
        }
        if (ema != null)
            for (int i = 0; i < params.size(); i++) {
                String b = nonFinite(ema.shadow(i).data());
                if (b != null) return "EMA parameter " + i + " " + b;
            }
        return null;
    }

    static String nonFinite(float[] d) {
        int nan = 0, inf = 0, first = -1;
        for (int i = 0; i < d.length; i++) {
            float v = d[i];
            if (Float.isNaN(v)) nan++;
            else if (Float.isInfinite(v)) inf++;
            else continue;
            if (first < 0) first = i;
        }
        return first < 0 ? null : "has " + nan + " NaN and " + inf + " infinite values (the first at index " + first + ")";
    }
}
