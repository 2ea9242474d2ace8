// Hyper-parameters of a forward-model (maximum-likelihood) training run.
package dev.biflow.flow.train;

/**
 * Defaults follow ml-tarflow: AdamW (0.9, 0.95), weight decay 1e-4, linear warm-up then cosine
 * to 1e-6, label dropout 0.1, training noise sigma. Gradient clipping and EMA are off by
 * default (0) and there for stability (a JAX re-implementation needed both).
 *
 * @param maxBadSteps consecutive non-finite steps tolerated (each is skipped) before training stops
 */
public record TrainConfig(long steps, int batchSize, double lr, long warmupSteps, double minLr, double weightDecay,
                          double beta1, double beta2, double gradClip, double emaDecay, float sigma,
                          float labelDropout, long seed, long checkpointEvery, int maxBadSteps) {
    public TrainConfig {
        if (steps < 1) throw new IllegalArgumentException("steps must be >= 1, got " + steps);
        if (batchSize < 1) throw new IllegalArgumentException("batch size must be >= 1, got " + batchSize);
        if (!(lr > 0)) throw new IllegalArgumentException("learning rate must be > 0, got " + lr);
        if (warmupSteps < 0 || warmupSteps > steps) throw new IllegalArgumentException("warm-up steps must be in [0, steps], got " + warmupSteps);
        if (gradClip < 0) throw new IllegalArgumentException("gradient clip must be >= 0 (0 = off), got " + gradClip);
        if (emaDecay < 0 || emaDecay >= 1) throw new IllegalArgumentException("EMA decay must be in [0, 1) (0 = off), got " + emaDecay);
        if (sigma < 0) throw new IllegalArgumentException("noise sigma must be >= 0, got " + sigma);
        if (labelDropout < 0 || labelDropout > 1) throw new IllegalArgumentException("label dropout must be in [0, 1], got " + labelDropout);
        if (checkpointEvery < 0) throw new IllegalArgumentException("checkpoint interval must be >= 0 (0 = only at the end)");
        if (maxBadSteps < 1) throw new IllegalArgumentException("max bad steps must be >= 1");
    }

    /** The notebook's MNIST recipe scaled to a CPU: lr 2e-3, batch 64, sigma 0.1. */
    public static TrainConfig defaults(long steps) {
        return new TrainConfig(steps, 64, 2e-3, Math.min(steps / 10, 1000), 1e-6, 1e-4, 0.9, 0.95, 0, 0, 0.1f, 0.1f, 0, 0, 20);
    }

    public TrainConfig withSteps(long s) { return new TrainConfig(s, batchSize, lr, Math.min(warmupSteps, s), minLr, weightDecay, beta1, beta2, gradClip, emaDecay, sigma, labelDropout, seed, checkpointEvery, maxBadSteps); }
    public TrainConfig withBatch(int b) { return new TrainConfig(steps, b, lr, warmupSteps, minLr, weightDecay, beta1, beta2, gradClip, emaDecay, sigma, labelDropout, seed, checkpointEvery, maxBadSteps); }
    public TrainConfig withLr(double v) { return new TrainConfig(steps, batchSize, v, warmupSteps, minLr, weightDecay, beta1, beta2, gradClip, emaDecay, sigma, labelDropout, seed, checkpointEvery, maxBadSteps); }
    public TrainConfig withWarmup(long w) { return new TrainConfig(steps, batchSize, lr, w, minLr, weightDecay, beta1, beta2, gradClip, emaDecay, sigma, labelDropout, seed, checkpointEvery, maxBadSteps); }
    public TrainConfig withGradClip(double c) { return new TrainConfig(steps, batchSize, lr, warmupSteps, minLr, weightDecay, beta1, beta2, c, emaDecay, sigma, labelDropout, seed, checkpointEvery, maxBadSteps); }
    public TrainConfig withEma(double d) { return new TrainConfig(steps, batchSize, lr, warmupSteps, minLr, weightDecay, beta1, beta2, gradClip, d, sigma, labelDropout, seed, checkpointEvery, maxBadSteps); }
    public TrainConfig withSigma(float s) { return new TrainConfig(steps, batchSize, lr, warmupSteps, minLr, weightDecay, beta1, beta2, gradClip, emaDecay, s, labelDropout, seed, checkpointEvery, maxBadSteps); }
    public TrainConfig withLabelDropout(float p) { return new TrainConfig(steps, batchSize, lr, warmupSteps, minLr, weightDecay, beta1, beta2, gradClip, emaDecay, sigma, p, seed, checkpointEvery, maxBadSteps); }
    public TrainConfig withSeed(long s) { return new TrainConfig(steps, batchSize, lr, warmupSteps, minLr, weightDecay, beta1, beta2, gradClip, emaDecay, sigma, labelDropout, s, checkpointEvery, maxBadSteps); }
    public TrainConfig withCheckpointEvery(long k) { return new TrainConfig(steps, batchSize, lr, warmupSteps, minLr, weightDecay, beta1, beta2, gradClip, emaDecay, sigma, labelDropout, seed, k, maxBadSteps); }
    public TrainConfig withMaxBadSteps(int m) { return new TrainConfig(steps, batchSize, lr, warmupSteps, minLr, weightDecay, beta1, beta2, gradClip, emaDecay, sigma, labelDropout, seed, checkpointEvery, m); }
}
