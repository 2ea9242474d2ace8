// Vector API elementwise kernels (FloatVector.SPECIES_PREFERRED, scalar tails) used by the ops.
package dev.biflow.engine.kernels;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShuffle;
import jdk.incubator.vector.VectorSpecies;

/**
 * Elementwise and reduction kernels over float arrays; every loop has a scalar tail that rounds
 * exactly like the vector body (fma where the body uses fma), so an element gets the same bits
 * however a range is split across threads.
 */
public final class Vec {
    private Vec() {}

    public static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    private static final int L = S.length();

    public static void add(float[] a, float[] b, float[] out, int lo, int hi) {
        int i = lo;
        for (int end = lo + S.loopBound(hi - lo); i < end; i += L)
            FloatVector.fromArray(S, a, i).add(FloatVector.fromArray(S, b, i)).intoArray(out, i);
        for (; i < hi; i++) out[i] = a[i] + b[i];
    }

    public static void sub(float[] a, float[] b, float[] out, int lo, int hi) {
        int i = lo;
        for (int end = lo + S.loopBound(hi - lo); i < end; i += L)
            FloatVector.fromArray(S, a, i).sub(FloatVector.fromArray(S, b, i)).intoArray(out, i);
        for (; i < hi; i++) out[i] = a[i] - b[i];
    }

    public static void mul(float[] a, float[] b, float[] out, int lo, int hi) {
        int i = lo;
        for (int end = lo + S.loopBound(hi - lo); i < end; i += L)
            FloatVector.fromArray(S, a, i).mul(FloatVector.fromArray(S, b, i)).intoArray(out, i);
        for (; i < hi; i++) out[i] = a[i] * b[i];
    }

    public static void div(float[] a, float[] b, float[] out, int lo, int hi) {
        int i = lo;
        for (int end = lo + S.loopBound(hi - lo); i < end; i += L)
            FloatVector.fromArray(S, a, i).div(FloatVector.fromArray(S, b, i)).intoArray(out, i);
        for (; i < hi; i++) out[i] = a[i] / b[i];
    }

    /**
     * One row of a broadcast binary op: out[oOff+i] = a[aOff+i*sa] (op) b[bOff+i*sb] for i in
     * [0, n), where each stride is 1 (contiguous) or 0 (one value repeated along the row). The
     * op codes are 0 add, 1 sub, 2 mul, 3 div. Returns false when a stride is neither 0 nor 1
     * (the caller then runs its scalar loop); rounding is that of the scalar expression.
     */
    public static boolean binaryRow(int op, float[] a, int aOff, int sa, float[] b, int bOff, int sb, float[] out, int oOff, int n) {
        if ((sa != 0 && sa != 1) || (sb != 0 && sb != 1) || (sa == 0 && sb == 0)) return false;
        int i = 0;
        int end = S.loopBound(n);
        if (sa == 1 && sb == 1) {
            for (; i < end; i += L) {
                FloatVector x = FloatVector.fromArray(S, a, aOff + i), y = FloatVector.fromArray(S, b, bOff + i);
                binop(op, x, y).intoArray(out, oOff + i);
            }
        } else if (sa == 1) {
            FloatVector y = FloatVector.broadcast(S, b[bOff]);
            for (; i < end; i += L) binop(op, FloatVector.fromArray(S, a, aOff + i), y).intoArray(out, oOff + i);
        } else {
            FloatVector x = FloatVector.broadcast(S, a[aOff]);
            for (; i < end; i += L) binop(op, x, FloatVector.fromArray(S, b, bOff + i)).intoArray(out, oOff + i);
        }
        for (; i < n; i++) {
            float x = a[aOff + i * sa], y = b[bOff + i * sb];
            out[oOff + i] = switch (op) {
                case 0 -> x + y;
                case 1 -> x - y;
                case 2 -> x * y;
                default -> x / y;
            };
        }
        return true;
    }

    private static FloatVector binop(int op, FloatVector x, FloatVector y) {
        return switch (op) {
            case 0 -> x.add(y);
            case 1 -> x.sub(y);
            case 2 -> x.mul(y);
            default -> x.div(y);
        };
    }

    /** out[i] = s * x[i] over [lo, hi). */
    public static void scale(float s, float[] x, float[] out, int lo, int hi) {
        int i = lo;
        for (int end = lo + S.loopBound(hi - lo); i < end; i += L)
            FloatVector.fromArray(S, x, i).mul(s).intoArray(out, i);
        for (; i < hi; i++) out[i] = s * x[i];
    }

    /** y[i] += s * x[i] over [lo, hi). */
    public static void axpy(float s, float[] x, float[] y, int lo, int hi) {
        int i = lo;
        FloatVector vs = FloatVector.broadcast(S, s);
        for (int end = lo + S.loopBound(hi - lo); i < end; i += L)
            FloatVector.fromArray(S, x, i).fma(vs, FloatVector.fromArray(S, y, i)).intoArray(y, i);
        // the tail fuses too: with s * x + y rounded twice, an element's bits would depend on
        // whether a range boundary put it in the vector body or the tail, i.e. on the thread count
        for (; i < hi; i++) y[i] = Math.fma(s, x[i], y[i]);
    }

    /** y[yOff + i] += s * x[xOff + i] for i in [0, n). */
    public static void axpy(float s, float[] x, int xOff, float[] y, int yOff, int n) {
        int i = 0;
        FloatVector vs = FloatVector.broadcast(S, s);
        for (int end = S.loopBound(n); i < end; i += L)
            FloatVector.fromArray(S, x, xOff + i).fma(vs, FloatVector.fromArray(S, y, yOff + i)).intoArray(y, yOff + i);
        for (; i < n; i++) y[yOff + i] = Math.fma(s, x[xOff + i], y[yOff + i]); // fused like the body, see above
    }

    /**
     * dst[j] += g[0][j] + g[1][j] + ... + g[rows-1][j] for j in [lo, hi), g (rows, cols) row-major: a bias
     * gradient. Each column's sum is taken in row order, so the bits equal those of adding the rows one
     * by one (axpy with 1: fma(1, g, acc) is acc + g rounded once), whatever the column split; four
     * column vectors are summed at once so that the adds' latency overlaps, each cache line of g is
     * read once.
     */
    public static void addRows(float[] g, int rows, int cols, float[] dst, int lo, int hi) {
        int j = lo;
        for (; j + 4 * L <= hi; j += 4 * L) {
            FloatVector a0 = FloatVector.fromArray(S, dst, j), a1 = FloatVector.fromArray(S, dst, j + L),
                    a2 = FloatVector.fromArray(S, dst, j + 2 * L), a3 = FloatVector.fromArray(S, dst, j + 3 * L);
            for (int i = 0, o = j; i < rows; i++, o += cols) {
                a0 = a0.add(FloatVector.fromArray(S, g, o));
                a1 = a1.add(FloatVector.fromArray(S, g, o + L));
                a2 = a2.add(FloatVector.fromArray(S, g, o + 2 * L));
                a3 = a3.add(FloatVector.fromArray(S, g, o + 3 * L));
            }
            a0.intoArray(dst, j);
            a1.intoArray(dst, j + L);
            a2.intoArray(dst, j + 2 * L);
            a3.intoArray(dst, j + 3 * L);
        }
        for (; j + L <= hi; j += L) {
            FloatVector a = FloatVector.fromArray(S, dst, j);
            for (int i = 0, o = j; i < rows; i++, o += cols) a = a.add(FloatVector.fromArray(S, g, o));
            a.intoArray(dst, j);
        }
        for (; j < hi; j++) {
            float a = dst[j];
            for (int i = 0, o = j; i < rows; i++, o += cols) a += g[o];
            dst[j] = a;
        }
    }

    // butterfly partners i ^ k for the lane sum; null where the species has no such lane distance
    private static final VectorShuffle<Float> X32 = xorShuffle(32), X16 = xorShuffle(16), X8 = xorShuffle(8),
            X4 = xorShuffle(4), X2 = xorShuffle(2), X1 = xorShuffle(1);

    private static VectorShuffle<Float> xorShuffle(int k) { return k < L ? VectorShuffle.fromOp(S, i -> i ^ k) : null; }

    /**
     * Sum of the lanes of v in a fixed order (a butterfly of lane-wise adds), identical in the
     * interpreter and in compiled code, which {@code reduceLanes(ADD)} is not (its Java fallback and
     * C2 intrinsic add in different orders: see {@link Softmax}). L is a constant, so the unused steps
     * fold away. Every cross-lane sum of the kernels goes through here.
     */
    public static float sumLanes(FloatVector v) {
        if (L > 64) return sumLanesSlow(v);
        if (L > 32) v = v.add(v.rearrange(X32));
        if (L > 16) v = v.add(v.rearrange(X16));
        if (L > 8) v = v.add(v.rearrange(X8));
        if (L > 4) v = v.add(v.rearrange(X4));
        if (L > 2) v = v.add(v.rearrange(X2));
        if (L > 1) v = v.add(v.rearrange(X1));
        return v.lane(0);
    }

    private static float sumLanesSlow(FloatVector v) {
        float[] t = v.toArray();
        float s = 0f;
        for (float x : t) s += x;
        return s;
    }

    /**
     * Sum of x[off .. off+n): the one sum of the kernels (Softmax, LayerNorm and the ops use it), its tail
     * adding in order after the lanes.
     */
    public static float sum(float[] x, int off, int n) {
        FloatVector acc = FloatVector.zero(S);
        int i = 0;
        for (int end = S.loopBound(n); i < end; i += L) acc = acc.add(FloatVector.fromArray(S, x, off + i));
        float s = sumLanes(acc); // fixed lane order: same bits interpreted or compiled
        for (; i < n; i++) s += x[off + i];
        return s;
    }

    /** Dot product of x[xOff ..] and y[yOff ..] over n elements; the tail fuses like the body (one rounding per term). */
    public static float dot(float[] x, int xOff, float[] y, int yOff, int n) {
        FloatVector acc = FloatVector.zero(S);
        int i = 0;
        for (int end = S.loopBound(n); i < end; i += L)
            acc = FloatVector.fromArray(S, x, xOff + i).fma(FloatVector.fromArray(S, y, yOff + i), acc);
        float s = sumLanes(acc); // fixed lane order: same bits interpreted or compiled
        for (; i < n; i++) s = Math.fma(x[xOff + i], y[yOff + i], s);
        return s;
    }

    /** Max of x[off .. off+n), n >= 1. */
    public static float max(float[] x, int off, int n) {
        int i = 0;
        float m = Float.NEGATIVE_INFINITY;
        if (n >= L) {
            FloatVector acc = FloatVector.broadcast(S, Float.NEGATIVE_INFINITY);
            for (int end = S.loopBound(n); i < end; i += L) acc = acc.max(FloatVector.fromArray(S, x, off + i));
            m = acc.reduceLanes(VectorOperators.MAX);
        }
        for (; i < n; i++) m = Math.max(m, x[off + i]);
        return m;
    }
}
