// Exponential moving average of parameters, for evaluating and sampling with smoothed weights.
package dev.biflow.engine.optim;

import dev.biflow.engine.Shape;
import dev.biflow.engine.Tensor;

import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Shadow copies s of parameters p, updated after each optimizer step as
 * {@code s = d * s + (1 - d) * p} (in float), with d = decay, or with warm-up
 * d = min(decay, (1 + n) / (10 + n)) where n counts earlier updates. Evaluate with the
 * averages by {@link #swap}ping them in and swapping back, or {@link #copyTo} a separate model.
 * State keys: "num_updates" and "shadow.i".
 */
public final class Ema {
    private final List<Tensor> params;
    private final float[][] shadow;
    private final double decay;
    private final boolean warmup;
    private long updates;

    public Ema(Collection<Tensor> params, double decay, boolean warmup) {
        if (!(decay >= 0 && decay <= 1)) throw new IllegalArgumentException("Ema: decay must be in [0, 1], got " + decay);
        this.params = List.copyOf(params);
        this.decay = decay;
        this.warmup = warmup;
        this.shadow = new float[this.params.size()][];
        for (int i = 0; i < shadow.length; i++) shadow[i] = this.params.get(i).data().clone();
    }

    public Ema(Collection<Tensor> params, double decay) { this(params, decay, false); }

    /** The decay the next update will use. */
    public double currentDecay() { return warmup ? Math.min(decay, (1.0 + updates) / (10.0 + updates)) : decay; }

    public long numUpdates() { return updates; }

    /** Moves every shadow toward its parameter's current value. */
    public void update() {
        float d = (float) currentDecay(), e = (float) (1 - currentDecay());
        for (int i = 0; i < shadow.length; i++) {
            float[] s = shadow[i], p = params.get(i).data();
            Optimizer.forRange(s.length, (lo, hi) -> { for (int j = lo; j < hi; j++) s[j] = d * s[j] + e * p[j]; });
        }
        updates++;
    }

    /** The shadow of parameter i, as a new tensor (copied). */
    public Tensor shadow(int i) { return Tensor.of(shadow[i].clone(), params.get(i).shape()); }

    /** Writes the averages into targets (same shapes, in order: another instance of the model, say). */
    public void copyTo(List<Tensor> targets) {
        checkTargets(targets);
        for (int i = 0; i < shadow.length; i++) System.arraycopy(shadow[i], 0, targets.get(i).data(), 0, shadow[i].length);
    }

    /** Writes the averages into the tracked parameters themselves (the live values are lost). */
    public void copyToParams() { copyTo(params); }

    /** Exchanges the tracked parameters' values with the averages; calling it again swaps back. */
    public void swap() {
        for (int i = 0; i < shadow.length; i++) {
            float[] s = shadow[i], p = params.get(i).data();
            for (int j = 0; j < s.length; j++) {
                float t = s[j];
                s[j] = p[j];
                p[j] = t;
            }
        }
    }

    private void checkTargets(List<Tensor> targets) {
        if (targets.size() != shadow.length)
            throw new IllegalArgumentException("Ema.copyTo: " + targets.size() + " targets for " + shadow.length + " averaged parameters");
        for (int i = 0; i < shadow.length; i++)
            if (!targets.get(i).sameShape(params.get(i)))
                throw new IllegalArgumentException("Ema.copyTo: target " + i + " has shape " + Shape.str(targets.get(i).shape())
                        + ", parameter " + i + " has " + Shape.str(params.get(i).shape()));
    }

    /** Named copies: "num_updates" and "shadow.i". */
    public Map<String, Tensor> state() {
        LinkedHashMap<String, Tensor> s = new LinkedHashMap<>();
        s.put("num_updates", Tensor.scalar(updates));
        for (int i = 0; i < shadow.length; i++) s.put("shadow." + i, Tensor.of(shadow[i].clone(), params.get(i).shape()));
        return s;
    }

    /** Restores {@link #state()} saved over the same parameter list. */
    public void loadState(Map<String, Tensor> state) {
        Tensor n = state.get("num_updates");
        if (n == null) throw new IllegalArgumentException("Ema.loadState: key 'num_updates' is missing");
        List<float[]> got = new ArrayList<>();
        for (int i = 0; i < shadow.length; i++) {
            Tensor t = state.get("shadow." + i);
            if (t == null) throw new IllegalArgumentException("Ema.loadState: key 'shadow." + i + "' is missing");
            if (!t.sameShape(params.get(i)))
                throw new IllegalArgumentException("Ema.loadState: 'shadow." + i + "' has shape " + Shape.str(t.shape())
                        + ", parameter " + i + " has " + Shape.str(params.get(i).shape()));
            got.add(t.data().clone());
        }
        for (int i = 0; i < shadow.length; i++) shadow[i] = got.get(i);
        updates = (long) n.item();
    }
}
