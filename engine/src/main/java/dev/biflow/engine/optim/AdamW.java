// AdamW with decoupled weight decay, following torch.optim.AdamW (bias-corrected, amsgrad off).
package dev.biflow.engine.optim;

import dev.biflow.engine.Tensor;

import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Per parameter p with gradient g, at its own step count t (PyTorch counts steps per parameter;
 * one skipped for lack of a gradient does not advance):
 * <pre>
 *   p  = p * (1 - lr*wd)                       decoupled decay, before the Adam update
 *   m  = m + (1 - beta1) * (g - m)             (torch's lerp)
 *   v  = beta2 * v + (1 - beta2) * g*g
 *   p  = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 * </pre>
 * Scalars are formed in double, the elementwise work in float as PyTorch's CPU kernels do.
 * State keys: "step", and per parameter i "step.i", "exp_avg.i", "exp_avg_sq.i" (buffers exist
 * once a gradient has reached the parameter).
 */
public final class AdamW extends Optimizer {
    private final double beta1, beta2, eps, weightDecay;
    private final float[][] expAvg, expAvgSq;
    private final long[] paramSteps;

    public AdamW(Collection<Tensor> params, double lr, double beta1, double beta2, double eps, double weightDecay) {
        super(params, lr);
        if (!(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1))
            throw new IllegalArgumentException("AdamW: betas must be in [0, 1), got (" + beta1 + ", " + beta2 + ")");
        if (!(eps >= 0) || !(weightDecay >= 0))
            throw new IllegalArgumentException("AdamW: eps and weight decay must be >= 0, got eps=" + eps + " wd=" + weightDecay);
        this.beta1 = beta1;
        this.beta2 = beta2;
        this.eps = eps;
        this.weightDecay = weightDecay;
        int n = this.params.size();
        expAvg = new float[n][];
        expAvgSq = new float[n][];
        paramSteps = new long[n];
    }

    /** PyTorch's defaults: betas (0.9, 0.999), eps 1e-8, weight decay 0.01. */
    public AdamW(Collection<Tensor> params, double lr) { this(params, lr, 0.9, 0.999, 1e-8, 1e-2); }

    public double beta1() { return beta1; }
    public double beta2() { return beta2; }
    public double eps() { return eps; }
    public double weightDecay() { return weightDecay; }

    @Override
    public void step() {
        steps++;
        for (int i = 0; i < params.size(); i++) {
            Tensor p = params.get(i);
            float[] g = p.gradData();
            if (g == null) continue;
            if (expAvg[i] == null) {
                expAvg[i] = new float[g.length];
                expAvgSq[i] = new float[g.length];
            }
            long t = ++paramSteps[i];
            update(p.data(), g, expAvg[i], expAvgSq[i], t);
        }
    }

    private void update(float[] p, float[] g, float[] m, float[] v, long t) {
        float decay = (float) (1 - lr * weightDecay);
        boolean doDecay = weightDecay != 0;
        float b1c = (float) (1 - beta1), b2 = (float) beta2, b2c = (float) (1 - beta2);
        double bc1 = 1 - Math.pow(beta1, t), bc2 = 1 - Math.pow(beta2, t);
        float stepSize = (float) (lr / bc1);
        float bc2Sqrt = (float) Math.sqrt(bc2);
        float e = (float) eps;
        forRange(p.length, (lo, hi) -> {
            for (int j = lo; j < hi; j++) {
                float pj = doDecay ? p[j] * decay : p[j];
                float gj = g[j];
                float mj = m[j] + b1c * (gj - m[j]);
                float vj = b2 * v[j] + b2c * gj * gj;
                m[j] = mj;
                v[j] = vj;
                p[j] = pj - stepSize * mj / ((float) Math.sqrt(vj) / bc2Sqrt + e);
            }
        });
    }

    @Override
    public Map<String, Tensor> state() {
        LinkedHashMap<String, Tensor> s = new LinkedHashMap<>();
        s.put("step", scalar(steps));
        for (int i = 0; i < params.size(); i++) {
            if (expAvg[i] == null) continue;
            int[] shape = params.get(i).shape();
            s.put("step." + i, scalar(paramSteps[i]));
            s.put("exp_avg." + i, Tensor.of(expAvg[i].clone(), shape));
            s.put("exp_avg_sq." + i, Tensor.of(expAvgSq[i].clone(), shape));
        }
        return s;
    }

    @Override
    public void loadState(Map<String, Tensor> state) {
        checkIndices(state);
        long st = requireCount(state, "step");
        int n = params.size();
        float[][] m = new float[n][], v = new float[n][];
        long[] ps = new long[n];
        for (int i = 0; i < n; i++) {
            if (!state.containsKey("exp_avg." + i)) continue;
            m[i] = requireLike(state, "exp_avg." + i, i);
            v[i] = requireLike(state, "exp_avg_sq." + i, i);
            ps[i] = requireCount(state, "step." + i);
        }
        steps = st;
        for (int i = 0; i < n; i++) {
            expAvg[i] = m[i];
            expAvgSq[i] = v[i];
            paramSteps[i] = ps[i];
        }
    }
}
