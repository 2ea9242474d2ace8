// Reusable arrays for inference temporaries: the widest tensors of a transformer layer, without the JVM zeroing them.
package dev.biflow.engine.kernels;

import java.util.ArrayDeque;
import java.util.Iterator;

/**
 * Per-thread float arrays for temporaries that never leave the code that computes them (a layer's qkv
 * projection or MLP hidden layer during inference). A fresh {@code new float[n]} is zeroed by the JVM in
 * the calling thread and arrives cold; in a BiFlow pass at batch 64 those arrays are 5-6 MB each, several
 * per layer. A borrowed array was written by the previous layer, so it is still in cache and costs no
 * zeroing: the GEMMs that fill it overwrite every element (beta = 0).
 *
 * <p>Contract: {@link #borrow} returns an array of exactly n floats with unspecified contents; the
 * borrower writes before reading, keeps no reference after {@link #giveBack}, and never lets the array
 * escape inside a tensor it returns. Not for code that records gradients: a graph would keep the array.
 */
public final class Scratch {
    private Scratch() {}

    /** Free arrays kept per thread: enough for a layer's temporaries at two batch sizes (cond / uncond). */
    static final int KEEP = 8;

    private static final ThreadLocal<ArrayDeque<float[]>> FREE = ThreadLocal.withInitial(ArrayDeque::new);

    /** An array of exactly n floats, contents unspecified: a freed one of that length, else a new one. */
    public static float[] borrow(int n) {
        if (n < 0) throw new IllegalArgumentException("Scratch.borrow: length " + n + " < 0");
        for (Iterator<float[]> it = FREE.get().iterator(); it.hasNext(); ) {
            float[] a = it.next();
            if (a.length == n) {
                it.remove();
                return a;
            }
        }
        return new float[n];
    }

    /** Takes back a borrowed array (null is ignored); the most recently freed are kept, up to {@link #KEEP}. */
    public static void giveBack(float[] a) {
        if (a == null) return;
        ArrayDeque<float[]> free = FREE.get();
        for (float[] f : free)
            if (f == a) throw new IllegalStateException("Scratch.giveBack: this array was already given back");
        free.addFirst(a);
        while (free.size() > KEEP) free.removeLast();
    }
}
