// Lookup table of learned vectors (torch.nn.Embedding), weight (n, d) initialised N(0, 1).
package dev.biflow.engine.nn;

import dev.biflow.engine.Ops;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;

/** Rows of {@code weight} picked by integer ids; the gradient scatters back into the picked rows. */
public class Embedding extends Module {
    public final int num, dim;
    public final Tensor weight;

    public Embedding(int num, int dim, Rng rng) {
        if (num <= 0 || dim <= 0) throw new IllegalArgumentException("Embedding: sizes must be positive, got " + num + " x " + dim);
        this.num = num;
        this.dim = dim;
        this.weight = registerParameter("weight", Tensor.zeros(num, dim));
        Init.normal(weight, rng, 0, 1);
    }

    public Embedding(int num, int dim) { this(num, dim, Init.globalRng()); }

    /** ids (n) -> (n, dim). */
    public Tensor forward(int[] ids) { return Ops.indexSelect(weight, 0, ids); }

    /** ids laid out with the given leading shape (product = ids.length) -> (shape..., dim). */
    public Tensor forward(int[] ids, int... shape) {
        int[] s = java.util.Arrays.copyOf(shape, shape.length + 1);
        s[shape.length] = dim;
        return Ops.reshape(forward(ids), s);
    }

    @Override
    protected String extraRepr() { return num + ", " + dim; }
}
