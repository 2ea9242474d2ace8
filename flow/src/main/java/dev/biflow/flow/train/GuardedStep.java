// The optimizer step both trainers take: skipped on a NaN/Inf loss or gradient, counted, and stopped after too many in a row.
package dev.biflow.flow.train;

import dev.biflow.engine.Tensor;
import dev.biflow.engine.optim.AdamW;
import dev.biflow.engine.optim.Ema;
import dev.biflow.engine.optim.GradClip;

import java.nio.file.Path;
import java.util.List;

/**
 * One guarded optimisation step, shared by {@link ForwardTrainer} and
 * {@link dev.biflow.flow.inverse.BackwardTrainer} so that both skip, count and stop alike:
 * a non-finite loss skips the backward pass, a non-finite global gradient norm skips the update;
 * otherwise the gradients are clipped (when {@code cfg.gradClip() > 0}), the optimizer steps, the
 * EMA follows, and the caller's own after-step work runs. Gradients are cleared either way.
 *
 * <p>The count of bad steps in a row belongs to the whole run: {@link TrainLoop} holds one
 * GuardedStep for all its {@code runUntil} calls and restores the count on resume, so the stop
 * fires whatever the checkpoint interval (a new counter per slice never reached the limit when
 * {@code checkpointEvery <= maxBadSteps}).
 */
public final class GuardedStep {
    /** What happened: whether the update was applied, the gradient norm before clipping (NaN when the loss was not finite), bad steps in a row. */
    public record Outcome(boolean applied, double gradNorm, int badInARow) {}

    private final List<Tensor> params;
    private final AdamW opt;
    private final Ema ema;
    private final TrainConfig cfg;
    private int bad;

    /** ema may be null (no EMA). */
    public GuardedStep(List<Tensor> params, AdamW opt, Ema ema, TrainConfig cfg) {
        this.params = params;
        this.opt = opt;
        this.ema = ema;
        this.cfg = cfg;
    }

    /** Bad steps in a row now. */
    public int badInARow() { return bad; }

    /** Restores the count of bad steps in a row (on resume). */
    public void setBadInARow(int n) {
        if (n < 0) throw new IllegalArgumentException("bad steps in a row must be >= 0, got " + n);
        bad = n;
    }

    /**
     * Back-propagates {@code loss} (whose value the caller has read as {@code lossValue}) and
     * updates, unless the loss or the gradient norm is NaN/Inf. {@code afterGood} runs only after
     * an applied update, after the EMA (null: nothing to do).
     */
    public Outcome apply(Tensor loss, double lossValue, Runnable afterGood) {
        if (Double.isFinite(lossValue)) loss.backward();
        return applyComputed(lossValue, afterGood);
    }

    /**
     * As {@link #apply}, for a loss whose gradients are already in the parameters' grads (a data-parallel
     * trainer summed them over its workers): the same checks, clipping, update, EMA and counting.
     */
    public Outcome applyComputed(double lossValue, Runnable afterGood) {
        boolean ok = Double.isFinite(lossValue);
        double norm = Double.NaN;
        if (ok) {
            norm = GradClip.globalNorm(params);
            ok = Double.isFinite(norm);
        }
        if (ok) {
            if (cfg.gradClip() > 0) GradClip.clipGlobalNorm(params, cfg.gradClip());
            opt.step();
            if (ema != null) ema.update();
            if (afterGood != null) afterGood.run();
            bad = 0;
        } else {
            bad++;
        }
        opt.zeroGrad();
        return new Outcome(ok, norm, bad);
    }

    /**
     * Called once the step is counted and reported: stops the run with
     * {@link TrainingDivergedException} after {@code cfg.maxBadSteps()} bad steps in a row (the
     * last good checkpoint, if any, stays intact), else says whether an applied step is due its
     * periodic checkpoint ({@code cfg.checkpointEvery()}; a skipped step never writes one).
     */
    public boolean checkpointDue(Outcome o, long step, Path lastGood) {
        if (o.badInARow() >= cfg.maxBadSteps()) throw new TrainingDivergedException(step, o.badInARow(), lastGood);
        return o.applied() && cfg.checkpointEvery() > 0 && step % cfg.checkpointEvery() == 0;
    }
}
