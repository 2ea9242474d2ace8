// Learning-rate schedules as pure functions of the step: constant, and linear warm-up then cosine decay.
package dev.biflow.engine.optim;

/**
 * lr = schedule.at(step). Being a pure function of the step, a schedule needs no checkpoint
 * state: a resumed run calls {@code opt.setLr(schedule.at(step))} and continues exactly.
 */
@FunctionalInterface
public interface LrSchedule {
    double at(long step);

    static LrSchedule constant(double lr) { return step -> lr; }

    /** Warm-up from 0; see {@link #warmupCosine(double, double, double, long, long)}. */
    static LrSchedule warmupCosine(double peakLr, double minLr, long warmupSteps, long totalSteps) {
        return warmupCosine(0, peakLr, minLr, warmupSteps, totalSteps);
    }

    /**
     * Linear warm-up from startLr at step 0 to peakLr at step warmupSteps, then cosine decay to
     * minLr at step totalSteps, and minLr after:
     * <pre>
     *   s &lt;= W:      start + (s / W) * (peak - start)
     *   W &lt; s &lt; N:  min + 0.5 * (1 + cos(pi * (s - W) / (N - W))) * (peak - min)
     *   s &gt;= N:      min
     * </pre>
     * ml-tarflow's CosineLRSchedule after k calls of its step() gives
     * {@code warmupCosine(min(minLr, 1e-6), peak, minLr, W, N).at(k)}, except that it keeps the
     * previous rate whenever the formula falls below minLr.
     */
    static LrSchedule warmupCosine(double startLr, double peakLr, double minLr, long warmupSteps, long totalSteps) {
        if (warmupSteps < 0 || totalSteps < warmupSteps)
            throw new IllegalArgumentException("warmupCosine: need 0 <= warmupSteps <= totalSteps, got " + warmupSteps + ", " + totalSteps);
        if (!(peakLr >= 0) || !(minLr >= 0) || !(startLr >= 0))
            throw new IllegalArgumentException("warmupCosine: learning rates must be >= 0");
        return s -> {
            if (s < 0) throw new IllegalArgumentException("schedule step must be >= 0, got " + s);
            if (s <= warmupSteps) return warmupSteps == 0 ? peakLr : startLr + (double) s / warmupSteps * (peakLr - startLr);
            if (s >= totalSteps) return minLr;
            double t = (double) (s - warmupSteps) / (totalSteps - warmupSteps);
            return minLr + 0.5 * (1 + Math.cos(Math.PI * t)) * (peakLr - minLr);
        };
    }
}
