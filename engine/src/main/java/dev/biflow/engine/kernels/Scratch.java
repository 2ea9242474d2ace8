// Reusable arrays for inference temporaries: the widest tensors of a transformer layer, without the JVM zeroing them.
package dev.biflow.engine.kernels;

import dev.biflow.engine.Arena;

/**
 * Per-thread float arrays for temporaries that never leave the code that computes them (a layer's qkv
 * projection or MLP hidden layer during inference). A fresh {@code new float[n]} is zeroed by the JVM in
 * the calling thread and arrives cold; in a BiFlow pass at batch 64 those arrays are 5-6 MB each, several
 * per layer. A borrowed array was written by the previous layer, so it is still in cache and costs no
 * zeroing: the GEMMs that fill it overwrite every element (beta = 0).
 *
 * <p>The arrays live in the same per-thread pool as a training step's ({@link Arena}): one buffer model.
 *
 * <p>Contract: {@link #borrow} returns an array of exactly n floats with unspecified contents; the
 * borrower writes before reading, keeps no reference after {@link #giveBack}, and never lets the array
 * escape inside a tensor it returns. Not for code that records gradients: a graph would keep the array.
 */
public final class Scratch {
    private Scratch() {}

    /** Free arrays kept per thread between borrows outside an arena scope. */
    static final int KEEP = Arena.SCRATCH_KEEP;

    /** An array of exactly n floats, contents unspecified: a freed one of that length, else a new one. */
    public static float[] borrow(int n) { return Arena.borrow(n); }

    /** Takes back a borrowed array (null is ignored); a few recently freed are kept when no arena scope is open. */
    public static void giveBack(float[] a) { Arena.giveBack(a); }
}
