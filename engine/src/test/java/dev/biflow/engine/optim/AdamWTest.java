// AdamW against torch.optim.AdamW's formula written out in double; decoupled decay; skipped parameters.
package dev.biflow.engine.optim;

import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import org.junit.jupiter.api.Test;

import java.util.List;

import static dev.biflow.engine.optim.OptimTestUtil.setGrad;
import static org.junit.jupiter.api.Assertions.*;

class AdamWTest {
    /** torch.optim.AdamW (amsgrad off, single tensor) in double. */
    static final class Reference {
        final double lr, b1, b2, eps, wd;
        final double[] p, m, v;
        int t;

        Reference(double[] p, double lr, double b1, double b2, double eps, double wd) {
            this.p = p.clone();
            this.lr = lr; this.b1 = b1; this.b2 = b2; this.eps = eps; this.wd = wd;
            m = new double[p.length];
            v = new double[p.length];
        }

        void step(double[] g) {
            t++;
            for (int i = 0; i < p.length; i++) {
                p[i] *= 1 - lr * wd;
                m[i] = b1 * m[i] + (1 - b1) * g[i];
                v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
                double mHat = m[i] / (1 - Math.pow(b1, t)), vHat = v[i] / (1 - Math.pow(b2, t));
                p[i] -= lr * mHat / (Math.sqrt(vHat) + eps);
            }
        }
    }

    @Test
    void matchesTorchFormulaOverSeveralSteps() {
        Rng rng = new Rng(3);
        Tensor w = Tensor.randn(rng, 3, 4), target = Tensor.randn(rng, 3, 4);
        double lr = 0.05, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1;
        AdamW opt = new AdamW(List.of(w), lr, b1, b2, eps, wd);
        double[] p0 = new double[12];
        for (int i = 0; i < 12; i++) p0[i] = w.data()[i];
        Reference ref = new Reference(p0, lr, b1, b2, eps, wd);
        for (int s = 0; s < 8; s++) {
            // the gradient of 0.5|w - target|^2 + a step-dependent term, from the float parameters
            float[] g = new float[12];
            double[] gd = new double[12];
            for (int i = 0; i < 12; i++) {
                g[i] = w.data()[i] - target.data()[i] + (float) Math.sin(s + i);
                gd[i] = g[i];
            }
            setGrad(w, g);
            opt.step();
            // the reference takes the same gradient values but its own parameters
            ref.step(gd);
            for (int i = 0; i < 12; i++)
                assertEquals(ref.p[i], w.data()[i], 2e-6 * Math.max(1, Math.abs(ref.p[i])), "step " + s + " [" + i + "]");
        }
        assertEquals(8, opt.stepCount());
    }

    @Test
    void firstStepMovesEachCoordinateByLrTimesSign() {
        // with bias correction, step 1 is -lr * g / (|g| + eps') for every coordinate: Adam's hallmark
        Tensor w = Tensor.zeros(4);
        AdamW opt = new AdamW(List.of(w), 0.01, 0.9, 0.999, 1e-12, 0);
        setGrad(w, OptimTestUtil.f(3, -0.002, 50, -7));
        opt.step();
        assertArrayEquals(OptimTestUtil.f(-0.01, 0.01, -0.01, 0.01), w.data(), 1e-7f);
    }

    @Test
    void decayIsDecoupled() {
        Tensor w = Tensor.of(OptimTestUtil.f(1, -2, 0.5, 3), 4);
        double lr = 0.1, wd = 0.2;
        AdamW opt = new AdamW(List.of(w), lr, 0.9, 0.999, 1e-8, wd);
        float factor = (float) (1 - lr * wd);
        for (int s = 0; s < 3; s++) {
            float[] before = w.toArray();
            setGrad(w, new float[4]);
            opt.step();
            for (int i = 0; i < 4; i++) assertEquals(before[i] * factor, w.data()[i], "zero gradient: only the decay acts");
        }
        // with a gradient the decay does not enter the moments: same moments as without decay
        Tensor a = Tensor.of(OptimTestUtil.f(1, 2), 2), b = Tensor.of(OptimTestUtil.f(1, 2), 2);
        AdamW withWd = new AdamW(List.of(a), lr, 0.9, 0.999, 1e-8, wd), noWd = new AdamW(List.of(b), lr, 0.9, 0.999, 1e-8, 0);
        setGrad(a, OptimTestUtil.f(0.3, -0.1));
        setGrad(b, OptimTestUtil.f(0.3, -0.1));
        withWd.step();
        noWd.step();
        assertArrayEquals(noWd.state().get("exp_avg.0").data(), withWd.state().get("exp_avg.0").data());
        assertArrayEquals(noWd.state().get("exp_avg_sq.0").data(), withWd.state().get("exp_avg_sq.0").data());
    }

    @Test
    void parametersWithoutGradientAreSkippedWithTheirOwnStepCount() {
        Tensor a = Tensor.ones(2), b = Tensor.ones(2);
        AdamW opt = new AdamW(List.of(a, b), 0.1, 0.9, 0.999, 1e-8, 0.5);
        setGrad(a, OptimTestUtil.f(1, 1));
        opt.step();
        assertArrayEquals(OptimTestUtil.f(1, 1), b.data(), "no gradient: untouched, not even decayed (as torch)");
        assertFalse(opt.state().containsKey("exp_avg.1"));
        setGrad(b, OptimTestUtil.f(1, 1));
        a.zeroGrad();
        opt.step();
        assertEquals(1f, opt.state().get("step.1").item(), "b's own first step");
        assertEquals(1f, opt.state().get("step.0").item());
        assertEquals(2f, opt.state().get("step").item());
    }

    @Test
    void rejectsBadSettings() {
        List<Tensor> ps = List.of(Tensor.zeros(1));
        assertThrows(IllegalArgumentException.class, () -> new AdamW(ps, 0.1, 1.0, 0.9, 1e-8, 0));
        assertThrows(IllegalArgumentException.class, () -> new AdamW(ps, -1, 0.9, 0.9, 1e-8, 0));
        Tensor p = Tensor.zeros(1);
        assertThrows(IllegalArgumentException.class, () -> new AdamW(List.of(p, p), 0.1));
        AdamW opt = new AdamW(ps, 0.1);
        assertThrows(IllegalArgumentException.class, () -> opt.setLr(Double.NaN));
        opt.setLr(0.3);
        assertEquals(0.3, opt.lr());
    }
}
