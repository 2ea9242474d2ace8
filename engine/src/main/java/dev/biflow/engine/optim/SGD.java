// Stochastic gradient descent with momentum, dampening, Nesterov and L2 weight decay, as torch.optim.SGD.
package dev.biflow.engine.optim;

import dev.biflow.engine.Tensor;

import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Per parameter p with gradient g (PyTorch's formula; the decay is coupled, added to the gradient):
 * <pre>
 *   d = g + wd * p
 *   buf = d on the first step, else momentum * buf + (1 - dampening) * d     (momentum != 0)
 *   d = nesterov ? d + momentum * buf : buf
 *   p = p - lr * d
 * </pre>
 * State keys: "step" and "momentum_buffer.i" per parameter that has one.
 */
public final class SGD extends Optimizer {
    private final double momentum, dampening, weightDecay;
    private final boolean nesterov;
    private final float[][] buf;

    public SGD(Collection<Tensor> params, double lr, double momentum, double dampening, double weightDecay, boolean nesterov) {
        super(params, lr);
        if (!(momentum >= 0) || !(weightDecay >= 0) || !(dampening >= 0 && dampening <= 1))
            throw new IllegalArgumentException("SGD: need momentum >= 0, 0 <= dampening <= 1, weight decay >= 0; got momentum="
                    + momentum + " dampening=" + dampening + " wd=" + weightDecay);
        if (nesterov && (momentum == 0 || dampening != 0))
            throw new IllegalArgumentException("SGD: Nesterov momentum needs momentum > 0 and dampening 0");
        this.momentum = momentum;
        this.dampening = dampening;
        this.weightDecay = weightDecay;
        this.nesterov = nesterov;
        this.buf = new float[this.params.size()][];
    }

    public SGD(Collection<Tensor> params, double lr, double momentum, double weightDecay) {
        this(params, lr, momentum, 0, weightDecay, false);
    }

    public SGD(Collection<Tensor> params, double lr) { this(params, lr, 0, 0); }

    @Override
    public void step() {
        steps++;
        float lrF = (float) lr, wd = (float) weightDecay, mom = (float) momentum, damp = (float) (1 - dampening);
        for (int i = 0; i < params.size(); i++) {
            Tensor pt = params.get(i);
            float[] g = pt.gradData();
            if (g == null) continue;
            float[] p = pt.data();
            boolean first = momentum != 0 && buf[i] == null;
            if (first) buf[i] = new float[g.length];
            float[] b = buf[i];
            forRange(p.length, (lo, hi) -> {
                for (int j = lo; j < hi; j++) {
                    float d = wd != 0 ? g[j] + wd * p[j] : g[j];
                    if (b != null) {
                        float bj = first ? d : mom * b[j] + damp * d;
                        b[j] = bj;
                        d = nesterov ? d + mom * bj : bj;
                    }
                    p[j] = p[j] - lrF * d;
                }
            });
        }
    }

    @Override
    public Map<String, Tensor> state() {
        LinkedHashMap<String, Tensor> s = new LinkedHashMap<>();
        s.put("step", scalar(steps));
        for (int i = 0; i < params.size(); i++)
            if (buf[i] != null) s.put("momentum_buffer." + i, Tensor.of(buf[i].clone(), params.get(i).shape()));
        return s;
    }

    @Override
    public void loadState(Map<String, Tensor> state) {
        checkIndices(state);
        long st = requireCount(state, "step");
        float[][] b = new float[params.size()][];
        for (int i = 0; i < b.length; i++)
            if (state.containsKey("momentum_buffer." + i)) b[i] = requireLike(state, "momentum_buffer." + i, i);
        steps = st;
        System.arraycopy(b, 0, buf, 0, b.length);
    }
}
