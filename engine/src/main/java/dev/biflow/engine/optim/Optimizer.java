// The base of the optimizers: the parameter list, the learning rate, step counting and state I/O helpers.
package dev.biflow.engine.optim;

import dev.biflow.engine.Shape;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.kernels.Parallel;

import java.util.ArrayList;
import java.util.Collection;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;

/**
 * Updates parameters in place through {@link Tensor#data()}, outside autograd. A parameter whose
 * {@link Tensor#gradData()} is null (no gradient reached it, or it is frozen) is skipped and its
 * state is left as it was, as in PyTorch.
 *
 * <p>{@link #state()} holds everything needed to resume bit-identically, as named tensors
 * (parameter i in the order given to the constructor): the step count ("step") and each
 * optimizer's per-parameter buffers. Hyperparameters, the learning rate included, are not
 * state: a resumed run builds the optimizer with the same settings and sets the learning rate
 * from its schedule, which is a pure function of the step. Step counts are stored as float32
 * scalars (as PyTorch does), exact up to 2^24 steps.
 */
public abstract class Optimizer {
    protected final List<Tensor> params;
    protected double lr;
    protected long steps;

    protected Optimizer(Collection<Tensor> params, double lr) {
        this.params = List.copyOf(params);
        IdentityHashMap<Tensor, Boolean> seen = new IdentityHashMap<>();
        for (Tensor p : this.params)
            if (seen.put(p, true) != null)
                throw new IllegalArgumentException(getClass().getSimpleName() + ": a parameter appears twice in the list");
        checkLr(lr);
        this.lr = lr;
    }

    /** One update of every parameter that has a gradient. */
    public abstract void step();

    /** Clears the gradients of all parameters. */
    public final void zeroGrad() { for (Tensor p : params) p.zeroGrad(); }

    public final double lr() { return lr; }

    public final void setLr(double lr) {
        checkLr(lr);
        this.lr = lr;
    }

    private void checkLr(double lr) {
        if (!(lr >= 0) || Double.isInfinite(lr))
            throw new IllegalArgumentException(getClass().getSimpleName() + ": learning rate must be finite and >= 0, got " + lr);
    }

    /** The parameters, in constructor order. */
    public final List<Tensor> params() { return params; }

    /** Number of step() calls so far (restored by {@link #loadState}). */
    public final long stepCount() { return steps; }

    /** Named copies of the optimizer state (see the class comment). */
    public abstract Map<String, Tensor> state();

    /** Restores state written by {@link #state()} of an optimizer built over the same parameters. */
    public abstract void loadState(Map<String, Tensor> state);

    // ---------------------------------------------------------------- helpers for subclasses

    protected static Tensor scalar(double v) { return Tensor.scalar((float) v); }

    /** The tensor under key, required. */
    protected final Tensor require(Map<String, Tensor> state, String key) {
        Tensor t = state.get(key);
        if (t == null)
            throw new IllegalArgumentException(getClass().getSimpleName() + ".loadState: key '" + key + "' is missing; keys present: "
                    + new ArrayList<>(state.keySet()));
        return t;
    }

    /** Reads a whole-number scalar (a step count). */
    protected final long requireCount(Map<String, Tensor> state, String key) {
        Tensor t = require(state, key);
        if (t.numel() != 1) throw new IllegalArgumentException(getClass().getSimpleName() + ".loadState: '" + key + "' must be a scalar");
        return (long) t.item();
    }

    /** A copy of the buffer under key, checked against parameter i's shape. */
    protected final float[] requireLike(Map<String, Tensor> state, String key, int i) {
        Tensor t = require(state, key);
        Tensor p = params.get(i);
        if (!t.sameShape(p))
            throw new IllegalArgumentException(getClass().getSimpleName() + ".loadState: '" + key + "' has shape " + Shape.str(t.shape())
                    + ", parameter " + i + " has shape " + Shape.str(p.shape()) + "; was the state saved for another model?");
        return t.data().clone();
    }

    /** Throws if the state names parameter indices this optimizer does not have. */
    protected final void checkIndices(Map<String, Tensor> state) {
        for (String k : state.keySet()) {
            int dot = k.lastIndexOf('.');
            if (dot < 0) continue;
            int i;
            try { i = Integer.parseInt(k.substring(dot + 1)); } catch (NumberFormatException e) { continue; }
            if (i < 0 || i >= params.size())
                throw new IllegalArgumentException(getClass().getSimpleName() + ".loadState: key '" + k + "' names parameter " + i
                        + " but this optimizer has " + params.size() + " parameters");
        }
    }

    /** Elements per parallel chunk in update loops. */
    static final int GRAIN = 1 << 15;

    /** Runs body over [0, n) in parallel chunks when n is large; elementwise, so the result does not depend on the split. */
    static void forRange(int n, Parallel.RangeBody body) { Parallel.forRange(n, GRAIN, body); }
}
