// The inference plan's op set: what a lowered layer emits, each op over regions of one arena.
package dev.biflow.engine.plan;

import dev.biflow.engine.Tensor;

/**
 * One step of a {@link Plan}. The set is closed (sealed): an executor handles every op, and a layer that
 * needs something new adds it here and to each executor. Weights are referenced, not copied: a plan built
 * from a model sees the model's current parameters. Regions are validated when the op is added
 * ({@link PlanBuilder#add}).
 */
public sealed interface PlanOp {

    /** What a {@link Linear} does to its output tile while it is in cache. */
    sealed interface Epilogue {
        /** Nothing: y = x W^T + b. */
        record None() implements Epilogue {}

        /** y = gelu(x W^T + b), the exact (erf) GELU. */
        record Gelu() implements Epilogue {}

        /**
         * y = residual + gate * (x W^T + b): the (gated) residual add of a transformer layer. gate is null (none)
         * or one row per group of y.rows / gate.rows consecutive rows (one row per example, its tokens the group).
         * residual must not overlap y.
         */
        record GatedAdd(Region residual, Region gate) implements Epilogue {}

        Epilogue NONE = new None();
        Epilogue GELU = new Gelu();

        /** residual + (x W^T + b). */
        static Epilogue add(Region residual) { return new GatedAdd(residual, null); }
    }

    /** y (N, out) = x (N, in) W^T + b, then the epilogue; weight (out, in), bias (out) or null. */
    record Linear(Tensor weight, Tensor bias, Region x, Region y, Epilogue epilogue) implements PlanOp {}

    /** y = (x - mean) / sqrt(var + eps) * weight + bias per row (biased variance); weight and bias may be null. */
    record LayerNorm(Tensor weight, Tensor bias, float eps, Region x, Region y) implements PlanOp {}

    /**
     * Self-attention straight from a fused qkv projection: qkv (B T, 3 H Dh), q heads then k heads then v heads
     * along a row, -> out (B T, H Dh), heads merged. q and k are first multiplied by qkScale in place (so qkv must
     * then be an arena temporary; 1: not touched), the logits by scale.
     */
    record SelfAttention(Region qkv, Region out, int batch, int heads, boolean causal, float qkScale, float scale) implements PlanOp {}

    /** y = (x + x * scale) + shift, adaLN's modulation: shift and scale one row per group of x.rows / shift.rows rows. */
    record Modulate(Region x, Region shift, Region scale, Region y) implements PlanOp {}

    /** y = a + b, elementwise, two regions of one shape. */
    record Add(Region a, Region b, Region y) implements PlanOp {}

    /** y = a + table[r mod T] per row r, table (T, cols): a position table added to every example's T rows. */
    record AddTable(Region a, Tensor table, Region y) implements PlanOp {}

    /** y row i = table row ids[i] (ids stored as floats in the arena: exact below 2^24). */
    record Gather(Tensor table, Region ids, Region y) implements PlanOp {}

    /** y = x * sigmoid(x). */
    record Silu(Region x, Region y) implements PlanOp {}

    /** y = a + table row {@code row} on every row of a: one row of a position table (a decode step's token). */
    record AddRow(Region a, Tensor table, int row, Region y) implements PlanOp {}

    /**
     * One KV-cached decode step of causal attention (KVCache.append then KVCache.attend with one query per example):
     * qkv (B, 3 H Dh) holds each example's new token's fused projection ([q heads | k heads | v heads]); q and k are
     * first multiplied by qkScale in place (TARFlow's split scaling; 1: not touched, else qkv must be an arena
     * temporary), k is stored at column {@code step} of keys (B H Dh, T), transposed as the decode kernel reads it,
     * v at row {@code step} of each (example, head)'s T rows of values (B H T, Dh); then out (B, H Dh), heads merged,
     * = softmax(s q k^T) v over the keys 0..step, with s = scale, or the float at scaleAt (1 x 1, written per run: an
     * attention temperature chosen per call) when scaleAt is not null. Steps run in order, so keys 0..step were
     * written by this step and the ones before it.
     */
    record DecodeAttention(Region qkv, Region keys, Region values, Region out, int heads, int step, float qkScale, float scale,
                           Region scaleAt) implements PlanOp {}

    /** How a {@link CouplingStep} bounds its affine parameters (iTARFlow's norm control), with the roundings of Ops. */
    enum Bound {
        /** No bound. */
        NONE,
        /** Ops.clamp(v, -c, c). */
        HARD,
        /** Ops.softClip(v, c) = c tanh(v / c), as mulScalar(tanh(mulScalar(v, 1 / c)), c) rounds it. */
        SOFT;

        public float apply(float v, float c) {
            return switch (this) {
                case NONE -> v;
                case HARD -> Math.min(c, Math.max(-c, v));
                case SOFT -> (float) Math.tanh(v * (1f / c)) * c;
            };
        }
    }

    /**
     * TARFlow's exact-inverse update of one token, in place: params (B, 2 td) rows [a | b] (proj_out's chunk), each
     * bounded (bound, constant clip); with classifier-free guidance (uncond, the unconditional pass's params, and gain,
     * a 1 x 1 region holding this step's g_i, both non-null) a = a + g_i (a - a_u), b likewise; then
     * x (B, td) = x exp(a) + b, exp in double as (float) Math.exp.
     */
    record CouplingStep(Region params, Region uncond, Region gain, Bound bound, float clip, Region x) implements PlanOp {}
}
