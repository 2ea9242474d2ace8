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
}
