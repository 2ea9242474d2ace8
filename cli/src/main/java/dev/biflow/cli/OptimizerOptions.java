// The optimiser and schedule options of the train commands (train-forward, train-backward): one set of flags.
package dev.biflow.cli;

import dev.biflow.flow.train.TrainConfig;
import picocli.CommandLine.Option;

/**
 * Steps, batch, AdamW, the warm-up + cosine schedule, gradient clipping, EMA and the NaN/Inf guard: the
 * {@link TrainConfig} fields every train command sets the same way. Mixed in with a command's own peak
 * learning rate ({@code @Mixin OptimizerOptions optim = new OptimizerOptions(1e-3)}): picocli keeps a mixin
 * that is already set, so that value is the default {@code --help} shows and a config file overrides. The
 * flag names are the keys of {@link ConfigFile.Schema#trainConfig()}.
 */
final class OptimizerOptions {
    @Range(min = 1) @Option(names = "--steps", description = "Optimizer steps.") long steps = 2000;
    @Range(min = 1) @Option(names = "--batch", description = "Batch size.") int batch = 64;
    @Range(min = 0, minOpen = true) @Option(names = "--lr", description = "Peak learning rate.") double lr;
    @Range(min = 0) @Option(names = "--warmup", description = "Warm-up steps (default: 5%% of steps).") Long warmup;
    @Range(min = 0) @Option(names = "--min-lr", description = "Learning rate at the end of the cosine decay.") double minLr = 1e-6;
    @Range(min = 0) @Option(names = "--weight-decay", description = "AdamW decoupled weight decay.") double weightDecay = 1e-4;
    @Range(min = 0, max = 1, maxOpen = true) @Option(names = "--beta1", description = "AdamW beta1.") double beta1 = 0.9;
    @Range(min = 0, max = 1, maxOpen = true) @Option(names = "--beta2", description = "AdamW beta2.") double beta2 = 0.95;
    @Range(min = 0) @Option(names = "--grad-clip", description = "Global gradient-norm clip (0 = off).") double gradClip = 1.0;
    @Range(min = 0, max = 1, maxOpen = true) @Option(names = "--ema", description = "EMA decay of the trained model's parameters (0 = off).") double ema = 0;
    @Range(min = 1) @Option(names = "--max-bad-steps", description = "Consecutive NaN/Inf steps tolerated before stopping.") int maxBadSteps = 20;

    /** For picocli's reflection only; commands pass their peak learning rate. */
    OptimizerOptions() { this(1e-3); }

    OptimizerOptions(double lr) { this.lr = lr; }

    /** The training settings from these options and the command's own (noise, label dropout, seed, checkpoint interval). */
    TrainConfig trainConfig(float sigma, float labelDropout, long seed, long checkpointEvery) {
        return new TrainConfig(steps, batch, lr, warmup != null ? warmup : Math.max(1, steps / 20), minLr, weightDecay,
                beta1, beta2, gradClip, ema, sigma, labelDropout, seed, checkpointEvery, maxBadSteps);
    }
}
