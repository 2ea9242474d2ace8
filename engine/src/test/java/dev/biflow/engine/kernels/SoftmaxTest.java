// Tests of the Softmax kernel helpers: the tier-independent vector exp against scalar references, the row kernels.
package dev.biflow.engine.kernels;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.quicktheories.QuickTheory.qt;
import static org.quicktheories.generators.SourceDSL.floats;
import static org.quicktheories.generators.SourceDSL.integers;
import static org.quicktheories.generators.SourceDSL.longs;

class SoftmaxTest {
    private static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    private static final int L = S.length();

    /** Every lane of the vector exp equals the scalar twin bit for bit: both are plain IEEE lane operations. */
    @Test
    void vectorExpEqualsItsScalarTwinAndMathExp() {
        qt().withExamples(400).forAll(floats().between(-100f, 100f)).checkAssert(x -> {
            float[] in = new float[L], out = new float[L];
            for (int i = 0; i < L; i++) in[i] = x - i * 0.37f;
            Softmax.exp(FloatVector.fromArray(S, in, 0)).intoArray(out, 0);
            for (int i = 0; i < L; i++) {
                float v = in[i];
                assertEquals(Float.floatToRawIntBits(Softmax.exp(v)), Float.floatToRawIntBits(out[i]), "exp(" + v + ")");
                double e = Math.exp(v);
                if (v >= -87.3f && v <= 88.3f && e >= Float.MIN_NORMAL)
                    assertTrue(Math.abs(out[i] - e) <= 2e-7 * e, "exp(" + v + ") = " + out[i] + ", Math.exp gives " + e);
            }
        });
    }

    @Test
    void expEdgeCases() {
        assertEquals(0f, Softmax.exp(Float.NEGATIVE_INFINITY));
        assertEquals(0f, Softmax.exp(-1000f));
        assertEquals(1f, Softmax.exp(0f));
        assertEquals(1f, Softmax.exp(-0f));
        assertEquals(Float.POSITIVE_INFINITY, Softmax.exp(Float.POSITIVE_INFINITY));
        assertTrue(Float.isNaN(Softmax.exp(Float.NaN)));
        float[] in = new float[L], out = new float[L];
        float[] special = {Float.NEGATIVE_INFINITY, Float.POSITIVE_INFINITY, Float.NaN, 0f, -1000f, 1000f};
        for (int i = 0; i < L; i++) in[i] = special[i % special.length];
        Softmax.exp(FloatVector.fromArray(S, in, 0)).intoArray(out, 0);
        for (int i = 0; i < L; i++)
            assertEquals(Float.floatToRawIntBits(Softmax.exp(in[i])), Float.floatToRawIntBits(out[i]), "exp(" + in[i] + ")");
    }

    @Test
    void inPlaceRowSoftmaxZeroesBlockedAndEmptyRows() {
        float[] s = {1f, 2f, Float.NEGATIVE_INFINITY, 3f, 9f};
        Softmax.softmaxRowInPlace(s, 0, 5, 4); // keys 0..3 allowed, key 2 masked with -inf, key 4 beyond the limit
        double z = Math.exp(1) + Math.exp(2) + Math.exp(3);
        assertEquals(Math.exp(1) / z, s[0], 1e-6);
        assertEquals(0f, s[2]);
        assertEquals(0f, s[4]);
        float[] blocked = {Float.NEGATIVE_INFINITY, Float.NEGATIVE_INFINITY, 5f};
        Softmax.softmaxRowInPlace(blocked, 0, 3, 2);
        for (float v : blocked) assertEquals(0f, v);
        float[] none = {1f, 2f};
        Softmax.softmaxRowInPlace(none, 0, 2, 0);
        for (float v : none) assertEquals(0f, v);
    }
}
