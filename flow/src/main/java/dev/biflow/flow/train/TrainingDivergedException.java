// Thrown when training produced too many non-finite steps in a row; the last good checkpoint is kept.
package dev.biflow.flow.train;

import java.nio.file.Path;

/** Training stopped because loss or gradients were NaN/Inf for too many consecutive steps. */
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
}
