// Tests of Fused.layerNorm: composed form, finite differences, normalisation property, determinism, errors.
package dev.biflow.engine;

import dev.biflow.engine.kernels.Parallel;
import org.junit.jupiter.api.Test;

import static dev.biflow.engine.FusedTest.assertBad;
import static dev.biflow.engine.FusedTest.assertClose;
import static dev.biflow.engine.FusedTest.gradCheck;
import static dev.biflow.engine.FusedTest.grads;
import static dev.biflow.engine.FusedTest.randn;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.quicktheories.QuickTheory.qt;
import static org.quicktheories.generators.SourceDSL.integers;
import static org.quicktheories.generators.SourceDSL.longs;

class FusedLayerNormTest {

    /** Double reference; w and b may be null. */
    static double[] layerNormRef(double[] x, int d, double[] w, double[] b, double eps) {
        int rows = x.length / d;
        double[] y = new double[x.length];
        for (int r = 0; r < rows; r++) {
            double mu = 0, var = 0;
            for (int j = 0; j < d; j++) mu += x[r * d + j];
            mu /= d;
            for (int j = 0; j < d; j++) var += (x[r * d + j] - mu) * (x[r * d + j] - mu);
            var /= d;
            double rs = 1 / Math.sqrt(var + eps);
            for (int j = 0; j < d; j++) {
                double v = (x[r * d + j] - mu) * rs;
                if (w != null) v *= w[j];
                if (b != null) v += b[j];
                y[r * d + j] = v;
            }
        }
        return y;
    }

    /** LayerNorm from primitive ops: mean, sub, mul, sqrt, div. */
    static Tensor layerNormComposed(Tensor x, Tensor w, Tensor b, float eps) {
        Tensor xc = Ops.sub(x, Ops.mean(x, new int[]{-1}, true));
        Tensor var = Ops.mean(Ops.mul(xc, xc), new int[]{-1}, true);
        Tensor y = Ops.div(xc, Ops.sqrt(Ops.addScalar(var, eps)));
        if (w != null) y = Ops.mul(y, w);
        if (b != null) y = Ops.add(y, b);
        return y;
    }

    @Test
    void matchesComposedOpsForwardAndGradient() {
        // affine: 0 none, 1 weight only, 2 bias only, 3 both
        qt().withExamples(25).forAll(integers().between(1, 40), integers().between(1, 45), integers().between(0, 3), longs().all())
                .checkAssert((rows, d, affine, seed) -> {
                    Rng rng = new Rng(seed);
                    Tensor x = randn(rng, rows, d).mul(2f).add(1.5f);
                    Tensor w = randn(rng, d), b = randn(rng, d), g = randn(rng, rows, d);
                    boolean hw = (affine & 1) != 0, hb = (affine & 2) != 0;
                    float eps = 1e-5f;
                    FusedTest.Fn fused = in -> Fused.layerNorm(in[0], hw ? in[1] : null, hb ? in[2] : null, eps);
                    FusedTest.Fn composed = in -> layerNormComposed(in[0], hw ? in[1] : null, hb ? in[2] : null, eps);
                    String what = "layerNorm(" + rows + ", " + d + ") affine " + affine;
                    Tensor[] in = {x, w, b};
                    assertClose(what + " forward", fused.apply(in).data(), composed.apply(in).data(), 1e-4, 1e-5);
                    float[][] gf = grads(fused, g, x, w, b), gc = grads(composed, g, x, w, b);
                    // d == 1 normalises to exactly 0 and the gradient to x is pure cancellation noise
                    if (d > 1) assertClose(what + " grad x", gf[0], gc[0], 2e-3, 2e-4);
                    assertClose(what + " grad w", gf[1], gc[1], 1e-3, 1e-4);
                    assertClose(what + " grad b", gf[2], gc[2], 1e-4, 1e-5);
                });
    }

    @Test
    void gradientMatchesFiniteDifferences() {
        qt().withExamples(25).forAll(integers().between(1, 150), integers().between(2, 37), integers().between(0, 3), longs().all())
                .checkAssert((rows, d, affine, seed) -> {
                    Rng rng = new Rng(seed);
                    Tensor x = randn(rng, rows, d), w = randn(rng, d), b = randn(rng, d);
                    boolean hw = (affine & 1) != 0, hb = (affine & 2) != 0;
                    float eps = 1e-5f;
                    gradCheck("layerNorm(" + rows + ", " + d + ") affine " + affine,
                            in -> Fused.layerNorm(in[0], hw ? in[1] : null, hb ? in[2] : null, eps),
                            dd -> layerNormRef(dd[0], d, hw ? dd[1] : null, hb ? dd[2] : null, eps), seed, 60, x, w, b);
                });
    }

    @Test
    void gradientOfA3dInputWithLargeEps() {
        Rng rng = new Rng(5);
        Tensor x = randn(rng, 2, 3, 17).mul(0.3f), w = randn(rng, 17), b = randn(rng, 17);
        gradCheck("layerNorm(2, 3, 17) eps 0.1", in -> Fused.layerNorm(in[0], in[1], in[2], 0.1f),
                dd -> layerNormRef(dd[0], 17, dd[1], dd[2], 0.1), 5, x, w, b);
    }

    @Test
    void outputHasMeanZeroAndVarianceOneBeforeAffine() {
        qt().withExamples(40).forAll(integers().between(1, 20), integers().between(2, 90), longs().all())
                .checkAssert((rows, d, seed) -> {
                    Rng rng = new Rng(seed);
                    Tensor x = randn(rng, rows, d).mul(4f).add((float) rng.nextGaussian() * 10f);
                    float eps = 1e-5f;
                    float[] y = Fused.layerNorm(x, null, null, eps).data(), xd = x.data();
                    for (int r = 0; r < rows; r++) {
                        // eps shrinks the variance to v / (v + eps), visible when a row is nearly constant
                        double xm = 0, xv = 0;
                        for (int j = 0; j < d; j++) xm += xd[r * d + j];
                        xm /= d;
                        for (int j = 0; j < d; j++) xv += (xd[r * d + j] - xm) * (xd[r * d + j] - xm);
                        xv /= d;
                        double mu = 0, var = 0;
                        for (int j = 0; j < d; j++) mu += y[r * d + j];
                        mu /= d;
                        for (int j = 0; j < d; j++) var += (y[r * d + j] - mu) * (y[r * d + j] - mu);
                        var /= d;
                        // float32 x - mean cancels: a row far from zero with a small spread loses about
                        // ulp(|x|) / std of accuracy in every output (e.g. x near -16 with std 0.09 gives 2e-5)
                        double maxAbs = 0;
                        for (int j = 0; j < d; j++) maxAbs = Math.max(maxAbs, Math.abs(xd[r * d + j]));
                        double cancel = Math.ulp((float) maxAbs) / Math.sqrt(xv + eps);
                        assertEquals(0.0, mu, 1e-5 + 8 * cancel, "row mean");
                        assertEquals(xv / (xv + eps), var, 1e-4 + 16 * cancel, "row variance");
                    }
                });
    }

    @Test
    void resultsDoNotDependOnTheThreadCount() {
        Rng rng = new Rng(11);
        Tensor x = randn(rng, 300, 40), w = randn(rng, 40), b = randn(rng, 40), g = randn(rng, 300, 40);
        FusedTest.Fn f = in -> Fused.layerNorm(in[0], in[1], in[2], 1e-5f);
        int before = Parallel.threads();
        float[] y1;
        float[][] g1;
        try {
            Parallel.setThreads(1);
            y1 = f.apply(new Tensor[]{x, w, b}).data();
            g1 = grads(f, g, x, w, b);
        } finally {
            Parallel.setThreads(before);
        }
        Parallel.setThreads(Math.max(3, before));
        try {
            assertArrayEquals(y1, f.apply(new Tensor[]{x, w, b}).data());
            float[][] g2 = grads(f, g, x, w, b);
            for (int i = 0; i < 3; i++) assertArrayEquals(g1[i], g2[i], "gradient " + i);
        } finally {
            Parallel.setThreads(before);
        }
    }

    @Test
    void rejectsBadShapes() {
        assertBad(() -> Fused.layerNorm(Tensor.zeros(4, 8), Tensor.zeros(7), null, 1e-5f), "layerNorm", "(4, 8)", "weight", "(7)", "(8)");
        assertBad(() -> Fused.layerNorm(Tensor.zeros(4, 8), null, Tensor.zeros(1, 8), 1e-5f), "layerNorm", "bias", "(1, 8)");
        assertBad(() -> Fused.layerNorm(Tensor.scalar(1f), null, null, 1e-5f), "layerNorm", "scalar");
        assertBad(() -> Fused.layerNorm(Tensor.zeros(4, 0), null, null, 1e-5f), "layerNorm", "(4, 0)", "empty");
        assertBad(() -> Fused.layerNorm(Tensor.zeros(4, 8), null, null, -1f), "layerNorm", "eps");
    }
}
