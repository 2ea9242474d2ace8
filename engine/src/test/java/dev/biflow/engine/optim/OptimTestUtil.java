// Helpers for optimizer tests: set a parameter's gradient to given values through autograd.
package dev.biflow.engine.optim;

import dev.biflow.engine.Ops;
import dev.biflow.engine.Tensor;

final class OptimTestUtil {
    private OptimTestUtil() {}

    /** Makes p.gradData() exactly g: backward of sum(p * g). */
    static void setGrad(Tensor p, float[] g) {
        p.requiresGrad(true).zeroGrad();
        Ops.sum(Ops.mul(p, Tensor.of(g.clone(), p.shape()))).backward();
    }

    static float[] f(double... v) {
        float[] r = new float[v.length];
        for (int i = 0; i < v.length; i++) r[i] = (float) v[i];
        return r;
    }
}
