// The image distances: values, gradients (against finite differences) that reach the generated images only.
package dev.biflow.flow.features;

import dev.biflow.engine.Grad;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.kernels.Parallel;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.util.List;

import static org.junit.jupiter.api.Assertions.*;

class DistanceTest {
    int threads;

    @BeforeEach
    void single() { threads = Parallel.threads(); Parallel.setThreads(1); }

    @AfterEach
    void restore() { Parallel.setThreads(threads); }

    static Tensor images(long seed, int b) {
        Tensor t = Tensor.rand(new Rng(seed), b, 1, 8, 8);
        float[] d = t.data();
        for (int i = 0; i < d.length; i++) d[i] = 2 * d[i] - 1;
        return t;
    }

    List<ImageDistance> distances() {
        return List.of(new MseDistance(),
                new LpipsDistance(FeatureNets.build(TinyNets.convnet(), new Rng(7))),
                new PooledFeatureDistance(FeatureNets.build(TinyNets.convnext(), new Rng(8))),
                // the LPIPS form on the ConvNeXt-style maps too: the distance takes any loss network
                new LpipsDistance(FeatureNets.build(TinyNets.convnext(), new Rng(9))));
    }

    @Test
    void zeroOnIdenticalImagesPositiveOtherwiseAndSymmetric() {
        Tensor a = images(1, 3), b = images(2, 3);
        for (ImageDistance d : distances()) {
            float same = d.distance(a, a.copy()).item();
            assertEquals(0f, same, 1e-6f, d.name());
            float ab = d.distance(a, b).item(), ba = d.distance(b, a).item();
            assertTrue(ab > 1e-4, d.name() + " " + ab);
            assertEquals(ab, ba, 1e-5f * Math.max(1, ab), d.name());
        }
    }

    @Test
    void mseIsTheMeanSquaredError() {
        Tensor a = images(1, 2), b = images(2, 2);
        double s = 0;
        for (int i = 0; i < a.numel(); i++) s += Math.pow(a.data()[i] - b.data()[i], 2);
        assertEquals(s / a.numel(), new MseDistance().distance(a, b).item(), 1e-6);
    }

    @Test
    void batchMeanOfPerImageDistances() {
        Tensor a = images(1, 2), b = images(2, 2);
        for (ImageDistance d : distances()) {
            float both = d.distance(a, b).item();
            float first = d.distance(slice(a, 0), slice(b, 0)).item(), second = d.distance(slice(a, 1), slice(b, 1)).item();
            assertEquals((first + second) / 2, both, 1e-5 * Math.max(1, both), d.name());
        }
    }

    static Tensor slice(Tensor t, int i) {
        int per = t.numel() / t.size(0);
        int[] s = t.shape();
        s[0] = 1;
        return Tensor.of(java.util.Arrays.copyOfRange(t.data(), i * per, (i + 1) * per), s);
    }

    /**
     * Directional finite differences, (D(a + h v) - D(a - h v)) / 2h against grad . v, for random
     * directions v. Directional checks average over every pixel, which keeps float32 round-off
     * small against the signal. h is small because the LPIPS normalisation is steep at pixels
     * whose channels are all (nearly) zero after the ReLU, and a larger step can cross a ReLU kink
     * there (with h = 3e-3 one direction's difference quotient is 1.2 where the derivative is -0.09;
     * it converges to the autograd value as h shrinks).
     */
    @Test
    void gradientsMatchFiniteDifferences() {
        Tensor a0 = images(3, 2), b = images(4, 2);
        for (ImageDistance d : distances()) {
            Tensor a = a0.copy().requiresGrad(true);
            d.distance(a, b).backward();
            float[] g = a.grad().data();
            Rng r = new Rng(5);
            for (int dir = 0; dir < 3; dir++) {
                float[] v = new float[a.numel()];
                r.fillNormal(v);
                double analytic = 0;
                for (int i = 0; i < v.length; i++) analytic += g[i] * v[i];
                double h = 3e-4;
                double numeric;
                try (var ng = Grad.noGrad()) {
                    numeric = (d.distance(shifted(a0, v, h), b).item() - d.distance(shifted(a0, v, -h), b).item()) / (2 * h);
                }
                assertEquals(analytic, numeric, 2e-2 * Math.abs(analytic) + 1e-3, d.name() + " direction " + dir);
            }
        }
    }

    static Tensor shifted(Tensor a, float[] v, double h) {
        float[] d = a.toArray();
        for (int i = 0; i < d.length; i++) d[i] += (float) (h * v[i]);
        return Tensor.of(d, a.shape());
    }

    @Test
    void networksStayFrozenAndTheTargetGetsNoGradient() {
        FeatureNet lp = FeatureNets.build(TinyNets.convnet(), new Rng(7));
        FeatureNet px = FeatureNets.build(TinyNets.convnext(), new Rng(8));
        for (ImageDistance d : List.of(new LpipsDistance(lp), new PooledFeatureDistance(px), new MseDistance())) {
            Tensor a = images(1, 2).requiresGrad(true), b = images(2, 2).requiresGrad(true);
            d.distance(a, b).backward();
            assertNotNull(a.grad(), d.name());
            assertNull(b.grad(), d.name() + ": the target must get no gradient");
        }
        for (FeatureNet n : List.of(lp, px))
            for (Tensor p : n.parameters()) {
                assertNull(p.grad(), "a frozen feature network must accumulate no gradient");
                assertFalse(p.needsGrad());
            }
        assertFalse(lp.isTraining());
    }

    @Test
    void theEvaluationNetworkIsNeverALoss() {
        FeatureNet eval = FeatureNets.build(TinyNets.eval(), new Rng(1));
        var ex = assertThrows(IllegalArgumentException.class, () -> new LpipsDistance(eval));
        assertTrue(ex.getMessage().contains("FashionNet-eval"), ex.getMessage());
        assertThrows(IllegalArgumentException.class, () -> new PooledFeatureDistance(eval));
    }

    @Test
    void layerWeightsScaleTheTerms() {
        FeatureNet net = FeatureNets.build(TinyNets.convnet(), new Rng(7));
        Tensor a = images(1, 2), b = images(2, 2);
        float uniform = new LpipsDistance(net).distance(a, b).item();
        float first = new LpipsDistance(net, new float[]{1, 0}).distance(a, b).item();
        float second = new LpipsDistance(net, new float[]{0, 2}).distance(a, b).item();
        assertEquals(uniform, first + second / 2, 1e-5);
        assertThrows(IllegalArgumentException.class, () -> new LpipsDistance(net, new float[]{1}).distance(a, b));
        assertThrows(IllegalArgumentException.class, () -> new MseDistance().distance(a, images(1, 3)));
    }
}
