// Vec's reductions against scalar references: addRows (the bias gradient) bit for bit over shapes and column
// splits, the fixed lane-sum butterfly, sum and dot.
package dev.biflow.engine.kernels;

import dev.biflow.engine.Rng;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.quicktheories.QuickTheory.qt;
import static org.quicktheories.generators.SourceDSL.integers;
import static org.quicktheories.generators.SourceDSL.longs;

class VecTest {
    private static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    private static final int L = S.length();

    /** sumLanes is the butterfly t[i] += t[i ^ k] for k = L/2 .. 1, read at lane 0. */
    @Test
    void laneSumIsAFixedButterfly() {
        qt().withExamples(300).forAll(longs().all()).checkAssert(seed -> {
            java.util.Random r = new java.util.Random(seed);
            float[] t = new float[L];
            for (int i = 0; i < L; i++) t[i] = (float) (r.nextGaussian() * Math.pow(10, r.nextInt(8) - 4));
            float got = Vec.sumLanes(FloatVector.fromArray(S, t, 0));
            float[] b = t.clone();
            for (int k = L / 2; k >= 1; k /= 2) {
                float[] nb = new float[L];
                for (int i = 0; i < L; i++) nb[i] = b[i] + b[i ^ k];
                b = nb;
            }
            assertEquals(Float.floatToRawIntBits(b[0]), Float.floatToRawIntBits(got));
        });
    }

    @Test
    void sumAndDotMatchDoubleReferences() {
        qt().withExamples(200).forAll(integers().between(0, 100), longs().all()).checkAssert((n, seed) -> {
            java.util.Random r = new java.util.Random(seed);
            float[] x = new float[n + 3], y = new float[n + 5];
            for (int i = 0; i < x.length; i++) x[i] = (float) r.nextGaussian();
            for (int i = 0; i < y.length; i++) y[i] = (float) r.nextGaussian();
            double s = 0, d = 0, a = 0;
            for (int i = 0; i < n; i++) {
                s += x[3 + i];
                d += x[3 + i] * (double) y[5 + i];
                a += Math.abs(x[3 + i] * (double) y[5 + i]) + Math.abs(x[3 + i]);
            }
            assertEquals(s, Vec.sum(x, 3, n), 1e-6 * (1 + a));
            assertEquals(d, Vec.dot(x, 3, y, 5, n), 1e-6 * (1 + a));
        });
    }

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
