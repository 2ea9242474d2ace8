// The float32 tensor: row-major contiguous storage, a shape, and (optionally) its place in the autograd graph.
package dev.biflow.engine;

import java.util.Arrays;
import java.util.Locale;

/**
 * A float32 tensor with row-major contiguous storage. Tensors are values: ops return new
 * tensors and never write into their inputs (optimizers update parameters in place through
 * {@link #data()}, outside the graph).
 *
 * <p>Autograd: a leaf created with {@link #requiresGrad(boolean) requiresGrad(true)} collects
 * gradients in {@link #grad()} when {@link #backward()} runs on a scalar computed from it. A
 * tensor made by an op while grad mode is on and some input needs a gradient remembers how it
 * was made ({@link Grad}); under {@link Grad#noGrad()} nothing is recorded.
 *
 * <p>The methods here are thin shortcuts to {@link Ops}, the single op list where every
 * forward and its gradient rule live side by side.
 */
public final class Tensor {
    final float[] data;
    final int[] shape;
    float[] grad;
    /** The buffer {@link #zeroGrad()} cleared, reused by the next backward: gradients accumulate in place, step after step. */
    private float[] spareGrad;
    boolean requiresGrad;
    /** How this tensor was made; null for leaves and for tensors made without grad. */
    Grad.Node node;

    /** Wraps data (not copied) with the given shape. */
    Tensor(float[] data, int[] shape) {
        this.data = data;
        this.shape = shape;
    }

    // ---------------------------------------------------------------- factories

    /** A tensor over {@code data} (not copied; the caller gives it up) with the given shape. */
    public static Tensor of(float[] data, int... shape) {
        int[] s = shape.clone();
        Shape.checkValid(s);
        if (Shape.numel(s) != data.length)
            throw new IllegalArgumentException("Tensor.of: " + data.length + " values do not fill shape "
                    + Shape.str(s) + " (" + Shape.numel(s) + " elements); pass a shape whose product is " + data.length);
        return new Tensor(data, s);
    }

    /** A copy of a double array, with the given shape. */
    public static Tensor of(double[] data, int... shape) {
        float[] f = new float[data.length];
        for (int i = 0; i < f.length; i++) f[i] = (float) data[i];
        return of(f, shape);
    }

    /** A 2-D tensor from rows (all rows the same length). */
    public static Tensor of(float[][] rows) {
        int r = rows.length, c = r == 0 ? 0 : rows[0].length;
        float[] d = new float[r * c];
        for (int i = 0; i < r; i++) {
            if (rows[i].length != c)
                throw new IllegalArgumentException("Tensor.of: row " + i + " has " + rows[i].length + " values, row 0 has " + c);
            System.arraycopy(rows[i], 0, d, i * c, c);
        }
        return new Tensor(d, new int[]{r, c});
    }

    public static Tensor scalar(float v) { return new Tensor(new float[]{v}, new int[0]); }

    public static Tensor zeros(int... shape) { return new Tensor(new float[Shape.numelChecked(shape)], shape.clone()); }

    public static Tensor ones(int... shape) { return full(1f, shape); }

    public static Tensor full(float value, int... shape) {
        float[] d = new float[Shape.numelChecked(shape)];
        Arrays.fill(d, value);
        return new Tensor(d, shape.clone());
    }

    public static Tensor zerosLike(Tensor t) { return zeros(t.shape); }

    public static Tensor onesLike(Tensor t) { return ones(t.shape); }

    /** 0, 1, ..., n-1 as a 1-D tensor. */
    public static Tensor arange(int n) {
        if (n < 0) throw new IllegalArgumentException("arange: length must be >= 0, got " + n);
        float[] d = new float[n];
        for (int i = 0; i < n; i++) d[i] = i;
        return new Tensor(d, new int[]{n});
    }

    /** Standard normal samples from a seeded generator. */
    public static Tensor randn(Rng rng, int... shape) {
        float[] d = new float[Shape.numelChecked(shape)];
        rng.fillNormal(d);
        return new Tensor(d, shape.clone());
    }

    /** Uniform samples in [0, 1) from a seeded generator. */
    public static Tensor rand(Rng rng, int... shape) {
        float[] d = new float[Shape.numelChecked(shape)];
        rng.fillUniform(d);
        return new Tensor(d, shape.clone());
    }

    // ---------------------------------------------------------------- shape and data

    /** A copy of the shape. */
    public int[] shape() { return shape.clone(); }

    public int dim() { return shape.length; }

    /** Size along an axis; negative axes count from the end. */
    public int size(int axis) { return shape[Shape.axis(axis, shape, "size")]; }

    public int numel() { return data.length; }

    /**
     * The backing array, row-major. Writing into it bypasses autograd: meant for kernels, I/O
     * and optimizer updates of leaf parameters.
     */
    public float[] data() { return data; }

    /** A copy of the values. */
    public float[] toArray() { return data.clone(); }

    /** The single value of a one-element tensor. */
    public float item() {
        if (data.length != 1)
            throw new IllegalArgumentException("item() needs a tensor with one element, this one has shape " + Shape.str(shape)
                    + "; reduce it first (sum/mean) or index it with get(...)");
        return data[0];
    }

    /** The value at a full index. */
    public float get(int... idx) { return data[Shape.offset(shape, idx)]; }

    public boolean sameShape(Tensor o) { return Arrays.equals(shape, o.shape); }

    /** A new leaf with the same values and no graph history. */
    public Tensor detach() { return new Tensor(data, shape); }

    /** A deep copy (new storage), as a leaf. */
    public Tensor copy() { return new Tensor(data.clone(), shape.clone()); }

    // ---------------------------------------------------------------- autograd

    /** Marks a leaf as needing a gradient; returns this for chaining. */
    public Tensor requiresGrad(boolean on) {
        if (node != null && !on)
            throw new IllegalStateException("cannot clear requiresGrad on a tensor computed by an op; use detach()");
        requiresGrad = on;
        return this;
    }

    /** True when a gradient flows to this tensor: a marked leaf or the output of a recorded op. */
    public boolean needsGrad() { return requiresGrad || node != null; }

    public boolean isLeaf() { return node == null; }

    /** The accumulated gradient (same shape), or null before any backward reached this leaf. */
    public Tensor grad() { return grad == null ? null : new Tensor(grad, shape); }

    /** The raw gradient buffer (may be null). */
    public float[] gradData() { return grad; }

    /**
     * Clears the gradient (sets it to null, so an optimizer skips a parameter no gradient reaches). The
     * buffer is kept and zero-filled for the next backward instead of allocating one per step.
     */
    public void zeroGrad() {
        if (grad != null) spareGrad = grad;
        grad = null;
    }

    /**
     * Adds g (one value per element) to this leaf's gradient, starting from zero when it has none:
     * how a data-parallel trainer puts the gradient it summed over workers where the optimizer reads it.
     */
    public void addToGrad(float[] g) {
        if (g.length != data.length)
            throw new IllegalArgumentException("addToGrad: " + g.length + " values for a tensor of " + data.length + " (" + Shape.str(shape) + ")");
        if (grad == null) grad = freshGrad();
        for (int i = 0; i < g.length; i++) grad[i] += g[i];
    }

    /** A zero-filled gradient buffer for this leaf: the one zeroGrad() cleared, or a new one. */
    float[] freshGrad() {
        float[] g = spareGrad;
        spareGrad = null;
        if (g == null) return new float[data.length];
        java.util.Arrays.fill(g, 0f);
        return g;
    }

    /** Backpropagates from this scalar with seed 1. */
    public void backward() {
        if (data.length != 1)
            throw new IllegalArgumentException("backward() without a seed needs a scalar, got shape " + Shape.str(shape)
                    + "; reduce it (sum/mean) or call backward(seed) with a gradient of this shape");
        Grad.backward(this, new float[]{1f});
    }

    /** Backpropagates with the given seed gradient (same shape as this). */
    public void backward(Tensor seed) {
        if (!sameShape(seed))
            throw new IllegalArgumentException("backward: seed shape " + Shape.str(seed.shape) + " != tensor shape " + Shape.str(shape));
        Grad.backward(this, seed.data);
    }

    // ---------------------------------------------------------------- op shortcuts (see Ops)

    public Tensor add(Tensor o) { return Ops.add(this, o); }
    public Tensor sub(Tensor o) { return Ops.sub(this, o); }
    public Tensor mul(Tensor o) { return Ops.mul(this, o); }
    public Tensor div(Tensor o) { return Ops.div(this, o); }
    public Tensor add(float s) { return Ops.addScalar(this, s); }
    public Tensor sub(float s) { return Ops.addScalar(this, -s); }
    public Tensor mul(float s) { return Ops.mulScalar(this, s); }
    public Tensor div(float s) { return Ops.mulScalar(this, 1f / s); }
    public Tensor neg() { return Ops.neg(this); }
    public Tensor exp() { return Ops.exp(this); }
    public Tensor log() { return Ops.log(this); }
    public Tensor sqrt() { return Ops.sqrt(this); }
    public Tensor pow(float p) { return Ops.pow(this, p); }
    public Tensor square() { return Ops.mul(this, this); }
    public Tensor tanh() { return Ops.tanh(this); }
    public Tensor sigmoid() { return Ops.sigmoid(this); }
    public Tensor relu() { return Ops.relu(this); }
    public Tensor abs() { return Ops.abs(this); }
    public Tensor sum() { return Ops.sum(this); }
    public Tensor mean() { return Ops.mean(this); }
    public Tensor sum(int axis, boolean keepDim) { return Ops.sum(this, new int[]{axis}, keepDim); }
    public Tensor mean(int axis, boolean keepDim) { return Ops.mean(this, new int[]{axis}, keepDim); }
    public Tensor matmul(Tensor o) { return Ops.matmul(this, o, false, false); }
    public Tensor reshape(int... s) { return Ops.reshape(this, s); }
    public Tensor permute(int... p) { return Ops.permute(this, p); }
    public Tensor transpose(int a, int b) { return Ops.transpose(this, a, b); }

    // ---------------------------------------------------------------- printing

    @Override
    public String toString() {
        StringBuilder sb = new StringBuilder("Tensor").append(Shape.str(shape));
        if (node != null) sb.append(" grad_fn=").append(node.name);
        else if (requiresGrad) sb.append(" requires_grad");
        sb.append('\n');
        format(sb, 0, 0, 0);
        return sb.toString();
    }

    /** Prints nested brackets, eliding the middle of long axes like NumPy. */
    private int format(StringBuilder sb, int axis, int offset, int indent) {
        if (shape.length == 0) {
            sb.append(fmt(data[0]));
            return offset;
        }
        int n = shape[axis];
        int stride = 1;
        for (int i = axis + 1; i < shape.length; i++) stride *= shape[i];
        sb.append('[');
        for (int i = 0; i < n; i++) {
            if (n > 8 && i == 3) {
                sb.append(axis == shape.length - 1 ? "..., " : "...,\n" + " ".repeat(indent + 1));
                i = n - 3;
            }
            if (axis == shape.length - 1) sb.append(fmt(data[offset + i * stride]));
            else format(sb, axis + 1, offset + i * stride, indent + 1);
            if (i < n - 1) sb.append(axis == shape.length - 1 ? ", " : ",\n" + " ".repeat(indent + 1));
        }
        sb.append(']');
        return offset;
    }

    private static String fmt(float v) {
        // Locale.ROOT: a German default locale would print 1,5 and break every log parser
        if (v == Math.rint(v) && Math.abs(v) < 1e6) return String.format(Locale.ROOT, "%.1f", v);
        return String.format(Locale.ROOT, "%.5g", v);
    }
}
