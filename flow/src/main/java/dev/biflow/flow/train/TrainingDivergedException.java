// Thrown when training produced too many non-finite steps in a row; the last good checkpoint is kept.
package dev.biflow.flow.train;

import java.nio.file.Path;

/** Training stopped: loss or gradients NaN/Inf for too many consecutive steps, non-finite weights, or most steps skipped. */
public final class TrainingDivergedException extends RuntimeException {
    public final long step;
    public final Path lastGoodCheckpoint;

    public TrainingDivergedException(long step, int badInARow, Path lastGood) {
        super("training diverged at step " + step + ": " + badInARow + " steps in a row had a NaN/Inf loss or gradient (each was skipped). "
                + (lastGood != null ? "The last good checkpoint is intact at " + lastGood + "; resume from it with a lower learning rate or --grad-clip."
                : "No checkpoint was written yet; lower the learning rate or enable gradient clipping."));
        this.step = step;
        this.lastGoodCheckpoint = lastGood;
    }

    /** Training stopped (or did not train) for the reason in the message. */
    public TrainingDivergedException(String message, long step, Path lastGood) {
        super(message);
        this.step = step;
        this.lastGoodCheckpoint = lastGood;
    }
}
