// Global-norm clipping lands exactly on the max norm and keeps directions; finiteness checks.
package dev.biflow.engine.optim;

import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import org.junit.jupiter.api.Test;

import java.util.List;

import static dev.biflow.engine.optim.OptimTestUtil.f;
import static dev.biflow.engine.optim.OptimTestUtil.setGrad;
import static org.junit.jupiter.api.Assertions.*;
import static org.quicktheories.QuickTheory.qt;
import static org.quicktheories.generators.SourceDSL.doubles;
import static org.quicktheories.generators.SourceDSL.longs;

class GradClipTest {
    @Test
    void clipsToExactlyMaxNorm() {
        qt().withExamples(50).forAll(longs().between(0, 1L << 40), doubles().between(0.01, 10)).checkAssert((seed, maxNorm) -> {
            Rng rng = new Rng(seed);
            Tensor a = Tensor.zeros(3, 5), b = Tensor.zeros(7), frozen = Tensor.zeros(2);
            float[] ga = Tensor.randn(rng, 15).mul(4f).data(), gb = Tensor.randn(rng, 7).mul(4f).data();
            setGrad(a, ga);
            setGrad(b, gb);
            double want = 0;
            for (float v : ga) want += (double) v * v;
            for (float v : gb) want += (double) v * v;
            want = Math.sqrt(want);
            List<Tensor> ps = List.of(a, b, frozen);
            double norm = GradClip.clipGlobalNorm(ps, maxNorm);
            assertEquals(want, norm, 1e-9 * want, "returns the pre-clip norm");
            double after = GradClip.globalNorm(ps);
            assertEquals(Math.min(want, maxNorm), after, 1e-6 * Math.min(want, maxNorm));
            double c = want > maxNorm ? maxNorm / want : 1;
            for (int i = 0; i < 15; i++) assertEquals(ga[i] * c, a.gradData()[i], 1e-6 * Math.abs(ga[i]) + 1e-12);
            assertNull(frozen.gradData());
        });
    }

    @Test
    void smallNormsAreUntouchedAndNonFiniteIsReported() {
        Tensor a = Tensor.zeros(2);
        setGrad(a, f(0.3, 0.4));
        assertEquals(0.5, GradClip.clipGlobalNorm(List.of(a), 1.0), 1e-7);
        assertArrayEquals(f(0.3, 0.4), a.gradData());
        assertTrue(GradClip.allFinite(List.of(a)));
        setGrad(a, f(Float.NaN, 1));
        assertFalse(GradClip.allFinite(List.of(a)));
        assertTrue(GradClip.hasNonFinite(List.of(a)));
        assertTrue(Double.isNaN(GradClip.clipGlobalNorm(List.of(a), 1.0)));
        assertEquals(1f, a.gradData()[1], "a non-finite norm leaves gradients alone");
        setGrad(a, f(Float.POSITIVE_INFINITY, 1));
        assertTrue(GradClip.hasNonFinite(List.of(a)));
        assertThrows(IllegalArgumentException.class, () -> GradClip.clipGlobalNorm(List.of(a), 0));
    }
}
