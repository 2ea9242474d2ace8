// How another module changes where the training commands compute their gradients (the spark module's data-parallel runs).
package dev.biflow.cli;

import dev.biflow.flow.inverse.BackwardTrainer;
import dev.biflow.flow.train.ForwardTrainer;

import java.io.IOException;
import java.nio.file.Path;

/**
 * train-forward and train-backward hand their trainer to the installed hook once it is built (and
 * resumed), before the first step: everything else (settings, run folder, checkpoints, --resume,
 * reports) stays the command's own. None is installed unless a module runs the command with one.
 */
public final class TrainerHooks {
    private TrainerHooks() {}

    /** What a hook is told. */
    public interface Hook {
        /** train-forward's trainer; dir: its run folder. */
        void forward(ForwardTrainer t, Path dir) throws IOException;

        /** train-backward's trainer, its run folder, the frozen F's checkpoint and the perceptual terms' settings. */
        void backward(BackwardTrainer t, Path dir, Path forward, Perceptual perceptual) throws IOException;
    }

    /** --perceptual, --features, --perceptual-weight: enough to build the same terms elsewhere ({@link #perceptualTerms}). */
    public record Perceptual(String distance, Path features, float weight) implements java.io.Serializable {}

    /** The perceptual terms these settings ask for, loaded from their folder (train-backward's own rules and errors). */
    public static java.util.List<BackwardTrainer.Term> perceptualTerms(Perceptual p) throws IOException {
        return TrainBackwardCommand.perceptualTerms(p.distance(), p.features(), p.weight());
    }

    private static volatile Hook hook;

    /** Installs h (null: none) for the commands run from now on in this JVM. */
    public static void install(Hook h) { hook = h; }

    static Hook current() { return hook; }
}
