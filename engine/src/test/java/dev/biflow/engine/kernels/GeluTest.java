// The vectorised GELU kernel against a double-precision reference (commons-math3 erf), values and derivative.
package dev.biflow.engine.kernels;

import org.apache.commons.math3.special.Erf;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.quicktheories.QuickTheory.qt;
import static org.quicktheories.generators.SourceDSL.floats;
import static org.quicktheories.generators.SourceDSL.integers;

class GeluTest {
    static double gelu(double x) { return 0.5 * x * (1 + Erf.erf(x / Math.sqrt(2))); }

    static double dgelu(double x) { return 0.5 * (1 + Erf.erf(x / Math.sqrt(2))) + x * Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI); }

    @Test
    void forwardAndBackwardMatchDoubleReferenceIncludingTails() {
        // lengths around the vector width exercise the scalar tail
        qt().withExamples(200).forAll(integers().between(1, 40), floats().between(-9f, 9f), integers().between(0, 3)).checkAssert((n, x0, off) -> {
            float[] x = new float[n + off], y = new float[n + off], g = new float[n + off], gx = new float[n + off];
            for (int i = 0; i < x.length; i++) {
                x[i] = x0 + 0.37f * i - 3f;
                g[i] = 1f + 0.1f * i;
                gx[i] = 0.5f; // backward accumulates
            }
            Gelu.forward(x, y, off, off + n);
            Gelu.backward(g, x, gx, off, off + n);
            for (int i = off; i < off + n; i++) {
                assertEquals(gelu(x[i]), y[i], 2e-6 + 2e-6 * Math.abs(x[i]), "gelu(" + x[i] + ")");
                assertEquals(0.5 + g[i] * dgelu(x[i]), gx[i], 5e-6 * (1 + Math.abs(g[i])), "gelu'(" + x[i] + ")");
            }
            for (int i = 0; i < off; i++) assertEquals(0f, y[i], "outside the range nothing is written");
        });
    }

    /** The scalar tail repeats the vector lanes' operations: the bits of any element never depend on where a range is split. */
    @Test
    void resultsDoNotDependOnWhereARangeIsSplit() {
        qt().withExamples(100).forAll(integers().between(1, 200), integers().between(0, 200), integers().between(0, 1_000_000)).checkAssert((n, cut, seed) -> {
            java.util.SplittableRandom r = new java.util.SplittableRandom(seed);
            float[] x = new float[n];
            for (int i = 0; i < n; i++) x[i] = (float) (r.nextGaussian() * 3);
            float[] whole = new float[n], split = new float[n], g = new float[n], gWhole = new float[n], gSplit = new float[n];
            for (int i = 0; i < n; i++) g[i] = (float) r.nextGaussian();
            int c = Math.min(cut, n);
            Gelu.forward(x, whole, 0, n);
            Gelu.forward(x, split, 0, c);
            Gelu.forward(x, split, c, n);
            Gelu.backward(g, x, gWhole, 0, n);
            Gelu.backward(g, x, gSplit, 0, c);
            Gelu.backward(g, x, gSplit, c, n);
            for (int i = 0; i < n; i++) {
                assertEquals(Float.floatToRawIntBits(whole[i]), Float.floatToRawIntBits(split[i]), "gelu element " + i + " of " + n + ", split at " + c);
                assertEquals(Float.floatToRawIntBits(gWhole[i]), Float.floatToRawIntBits(gSplit[i]), "gelu' element " + i + " of " + n + ", split at " + c);
            }
        });
    }

    @Test
    void scalarErfMatchesReference() {
        // A&S 7.1.26 is within 1.5e-7; float evaluation of 1 - poly*exp adds a few ulps of 1 (6e-8 each)
        for (float u = -6f; u <= 6f; u += 0.013f) assertEquals(Erf.erf(u), Gelu.erf(u), 5e-7, "erf(" + u + ")");
    }
}
