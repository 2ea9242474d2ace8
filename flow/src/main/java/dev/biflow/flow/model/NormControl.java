// iTARFlow's norm control: bound the affine parameters (xa, xb) each block emits.
package dev.biflow.flow.model;

import dev.biflow.engine.Ops;
import dev.biflow.engine.Tensor;

import java.util.Locale;

/**
 * How a flow block bounds its output parameters before they scale and shift the data (BiFlow,
 * "norm control": clip to [-c, c] so intermediate states cannot blow up, which keeps MSE
 * alignment balanced across depth). NONE is plain TARFlow; HARD is the paper's clip; SOFT is
 * STARFlow's c * tanh(x / c), which keeps a gradient everywhere.
 */
public enum NormControl {
    NONE, HARD, SOFT;

    public static NormControl parse(String s) {
        return switch (s.toLowerCase(Locale.ROOT)) {
            case "none", "off" -> NONE;
            case "hard", "clip" -> HARD;
            case "soft", "tanh" -> SOFT;
            default -> throw new IllegalArgumentException("unknown norm control '" + s + "'; choose none, hard or soft");
        };
    }

    /** Applies the bound with constant c (ignored for NONE). */
    public Tensor apply(Tensor t, float c) {
        return switch (this) {
            case NONE -> t;
            case HARD -> Ops.clamp(t, -c, c);
            case SOFT -> Ops.softClip(t, c);
        };
    }

    /** The same bound on one float (the exact-inverse sampler works on raw arrays). */
    public float apply(float v, float c) {
        return switch (this) {
            case NONE -> v;
            case HARD -> Math.max(-c, Math.min(c, v));
            case SOFT -> (float) (c * Math.tanh(v / c));
        };
    }
}
