// Shape arithmetic shared by every op: sizes, strides, axes, broadcasting, and the error messages for them.
package dev.biflow.engine;

import java.util.Arrays;

/** Static helpers on int[] shapes. Errors name the op, the shapes involved and the fix. */
public final class Shape {
    private Shape() {}

    public static String str(int[] s) { return Arrays.toString(s).replace('[', '(').replace(']', ')'); }

    public static void checkValid(int[] s) {
        for (int d : s)
            if (d < 0) throw new IllegalArgumentException("negative dimension in shape " + str(s));
    }

    public static int numel(int[] s) {
        long n = 1;
        for (int d : s) n *= d;
        return (int) n;
    }

    /** numel with a check that the shape is valid and fits in an int array. */
    public static int numelChecked(int[] s) {
        checkValid(s);
        long n = 1;
        for (int d : s) {
            n *= d;
            if (n > Integer.MAX_VALUE - 8)
                throw new IllegalArgumentException("shape " + str(s) + " has more than 2^31 elements; use smaller batches");
        }
        return (int) n;
    }

    public static int[] strides(int[] s) {
        int[] st = new int[s.length];
        int acc = 1;
        for (int i = s.length - 1; i >= 0; i--) {
            st[i] = acc;
            acc *= s[i];
        }
        return st;
    }

    /** Normalises a possibly negative axis; names the op when out of range. */
    public static int axis(int axis, int rank, String op) {
        int a = axis < 0 ? axis + rank : axis;
        if (a < 0 || a >= rank) throw new IllegalArgumentException(op + ": " + axisRange(axis, rank) + " of rank " + rank);
        return a;
    }

    /** The same, naming the tensor's shape in the error (prefer this where the shape is at hand). */
    public static int axis(int axis, int[] shape, String op) {
        int rank = shape.length;
        int a = axis < 0 ? axis + rank : axis;
        if (a < 0 || a >= rank) throw new IllegalArgumentException(op + ": " + axisRange(axis, rank) + " of shape " + str(shape));
        return a;
    }

    private static String axisRange(int axis, int rank) {
        if (rank == 0) return "axis " + axis + " given for a scalar, which has no axes; reshape it to (1) first";
        return "axis " + axis + " is out of range (valid: " + (-rank) + ".." + (rank - 1) + ") for a tensor";
    }

    public static int offset(int[] shape, int[] idx) {
        if (idx.length != shape.length)
            throw new IllegalArgumentException("index " + Arrays.toString(idx) + " has " + idx.length
                    + " coordinates, the tensor has rank " + shape.length + " " + str(shape));
        int off = 0;
        for (int i = 0; i < shape.length; i++) {
            if (idx[i] < 0 || idx[i] >= shape[i])
                throw new IndexOutOfBoundsException("index " + Arrays.toString(idx) + " is out of bounds for shape " + str(shape));
            off = off * shape[i] + idx[i];
        }
        return off;
    }

    /** The NumPy broadcast of two shapes, or an error naming both. */
    public static int[] broadcast(int[] a, int[] b, String op) {
        int r = Math.max(a.length, b.length);
        int[] out = new int[r];
        for (int i = 0; i < r; i++) {
            int da = i < r - a.length ? 1 : a[i - (r - a.length)];
            int db = i < r - b.length ? 1 : b[i - (r - b.length)];
            if (da != db && da != 1 && db != 1)
                throw new IllegalArgumentException(op + ": shapes " + str(a) + " and " + str(b)
                        + " cannot be broadcast (axis " + i + ": " + da + " vs " + db
                        + "); sizes must match or be 1 — reshape one operand");
            out[i] = da == 1 ? db : da;
        }
        return out;
    }

    /** Strides of {@code in} read as if it had shape {@code out} (0 on broadcast axes). */
    public static int[] broadcastStrides(int[] in, int[] out) {
        int[] st = new int[out.length];
        int[] s = strides(in);
        int off = out.length - in.length;
        for (int i = 0; i < in.length; i++) st[i + off] = in[i] == 1 && out[i + off] != 1 ? 0 : s[i];
        return st;
    }

    public static int[] concat(int[] a, int... b) {
        int[] r = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, r, a.length, b.length);
        return r;
    }

    /** Product of s[from..to). */
    public static int prod(int[] s, int from, int to) {
        int p = 1;
        for (int i = from; i < to; i++) p *= s[i];
        return p;
    }

    /** Requires a rank, naming the op and the expected layout. */
    public static void requireRank(Tensor t, int rank, String op, String layout) {
        if (t.shape.length != rank)
            throw new IllegalArgumentException(op + ": expected a rank-" + rank + " tensor " + layout + ", got shape " + str(t.shape));
    }
}
