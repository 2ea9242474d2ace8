// Vec.addRows (the bias gradient) against its scalar reference, bit for bit, over shapes and column splits.
package dev.biflow.engine.kernels;

import dev.biflow.engine.Rng;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.quicktheories.QuickTheory.qt;
import static org.quicktheories.generators.SourceDSL.integers;

class VecTest {
    @Test
    void addRowsEqualsAddingTheRowsOneByOneWhateverTheSplit() {
        qt().withExamples(200).forAll(integers().between(0, 40), integers().between(1, 150), integers().between(0, 150))
                .checkAssert((rows, cols, splitAt) -> {
                    Rng r = new Rng(rows * 1000L + cols);
                    float[] g = new float[rows * cols], start = new float[cols];
                    r.fillNormal(g);
                    r.fillNormal(start);
                    float[] want = start.clone();
                    for (int i = 0; i < rows; i++) Vec.axpy(1f, g, i * cols, want, 0, cols); // the per-row reference
                    float[] got = start.clone();
                    int mid = Math.min(cols, splitAt);
                    Vec.addRows(g, rows, cols, got, 0, mid); // two column ranges, as two threads would take them
                    Vec.addRows(g, rows, cols, got, mid, cols);
                    assertArrayEquals(want, got, rows + " x " + cols + " split at " + mid);
                });
    }
}
