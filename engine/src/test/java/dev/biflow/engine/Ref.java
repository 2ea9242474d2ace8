// Double-precision scalar references for every primitive op: one element at a time, by multi-index.
package dev.biflow.engine;

import java.util.Arrays;
import java.util.function.DoubleBinaryOperator;
import java.util.function.DoubleUnaryOperator;

/**
 * The slow, obviously-right versions of the ops, written independently of Ops' stride and row
 * machinery: every output element is found by decoding its multi-index and reading the inputs
 * at the corresponding multi-index. Shapes broadcast by NumPy's rule.
 */
final class Ref {
    private Ref() {}

    /** A double array with a shape. */
    record D(double[] v, int[] s) {
        D {
            if (numel(s) != v.length) throw new IllegalArgumentException(v.length + " values for shape " + Arrays.toString(s));
        }
        static D of(Tensor t) { return new D(GradCheck.toDouble(t.data()), t.shape()); }
        double at(int... idx) { return v[ravel(idx, s)]; }
    }

    static int numel(int[] s) {
        int n = 1;
        for (int d : s) n *= d;
        return n;
    }

    static int[] unravel(int flat, int[] s) { return GradCheck.unravel(flat, s); }

    static int ravel(int[] idx, int[] s) {
        int off = 0;
        for (int d = 0; d < s.length; d++) {
            if (idx[d] < 0 || idx[d] >= s[d]) throw new IndexOutOfBoundsException(Arrays.toString(idx) + " in " + Arrays.toString(s));
            off = off * s[d] + idx[d];
        }
        return off;
    }

    /** NumPy broadcast of shapes, written out from the rule: align right, sizes equal or 1. */
    static int[] broadcast(int[]... shapes) {
        int r = 0;
        for (int[] s : shapes) r = Math.max(r, s.length);
        int[] out = new int[r];
        Arrays.fill(out, 1);
        for (int[] s : shapes)
            for (int i = 0; i < s.length; i++) {
                int o = r - s.length + i;
                if (s[i] != 1) {
                    if (out[o] != 1 && out[o] != s[i]) throw new IllegalArgumentException("no broadcast");
                    out[o] = s[i];
                }
            }
        return out;
    }

    /** Reads x at an index of the broadcast output shape. */
    static double atBroadcast(D x, int[] outIdx) {
        int off = outIdx.length - x.s.length;
        int[] idx = new int[x.s.length];
        for (int i = 0; i < idx.length; i++) idx[i] = x.s[i] == 1 ? 0 : outIdx[off + i];
        return x.at(idx);
    }

    static D binary(D a, D b, DoubleBinaryOperator f) {
        int[] os = broadcast(a.s, b.s);
        double[] o = new double[numel(os)];
        for (int j = 0; j < o.length; j++) {
            int[] idx = unravel(j, os);
            o[j] = f.applyAsDouble(atBroadcast(a, idx), atBroadcast(b, idx));
        }
        return new D(o, os);
    }

    static D map(D a, DoubleUnaryOperator f) {
        double[] o = new double[a.v.length];
        for (int j = 0; j < o.length; j++) o[j] = f.applyAsDouble(a.v[j]);
        return new D(o, a.s.clone());
    }

    static D where(D c, D a, D b) {
        int[] os = broadcast(c.s, a.s, b.s);
        double[] o = new double[numel(os)];
        for (int j = 0; j < o.length; j++) {
            int[] idx = unravel(j, os);
            o[j] = atBroadcast(c, idx) != 0 ? atBroadcast(a, idx) : atBroadcast(b, idx);
        }
        return new D(o, os);
    }

    static D expand(D a, int[] os) {
        double[] o = new double[numel(os)];
        for (int j = 0; j < o.length; j++) o[j] = atBroadcast(a, unravel(j, os));
        return new D(o, os.clone());
    }

    /** Reduces the given axes with f from init (axes may be negative). */
    static D reduce(D a, int[] axes, boolean keep, double init, DoubleBinaryOperator f) {
        boolean[] red = new boolean[a.s.length];
        for (int ax : axes) red[ax < 0 ? ax + a.s.length : ax] = true;
        int[] ks = a.s.clone();
        for (int d = 0; d < ks.length; d++) if (red[d]) ks[d] = 1;
        double[] o = new double[numel(ks)];
        Arrays.fill(o, init);
        for (int j = 0; j < a.v.length; j++) {
            int[] idx = unravel(j, a.s);
            for (int d = 0; d < idx.length; d++) if (red[d]) idx[d] = 0;
            int t = ravel(idx, ks);
            o[t] = f.applyAsDouble(o[t], a.v[j]);
        }
        if (keep) return new D(o, ks);
        int[] s = new int[0];
        for (int d = 0; d < ks.length; d++) if (!red[d]) s = Shape.concat(s, ks[d]);
        return new D(o, s);
    }

    static D sum(D a, int[] axes, boolean keep) { return reduce(a, axes, keep, 0, Double::sum); }

    static D max(D a, int[] axes, boolean keep) { return reduce(a, axes, keep, Double.NEGATIVE_INFINITY, Math::max); }

    static D mean(D a, int[] axes, boolean keep) {
        int n = 1;
        for (int ax : axes) n *= a.s[ax < 0 ? ax + a.s.length : ax];
        D s = sum(a, axes, keep);
        for (int j = 0; j < s.v.length; j++) s.v[j] /= n;
        return s;
    }

    /** op(a) @ op(b), batch dims equal or b 2-D: the triple loop, element offsets written out. */
    static D matmul(D a, D b, boolean ta, boolean tb) {
        int ra = a.s.length, rb = b.s.length;
        int m = ta ? a.s[ra - 1] : a.s[ra - 2], k = ta ? a.s[ra - 2] : a.s[ra - 1];
        int n = tb ? b.s[rb - 2] : b.s[rb - 1];
        int[] batch = Arrays.copyOf(a.s, ra - 2);
        int nb = numel(batch);
        double[] o = new double[nb * m * n];
        for (int bi = 0; bi < nb; bi++) {
            int aBase = bi * m * k, bBase = rb == 2 ? 0 : bi * k * n;
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++) {
                    double s = 0;
                    for (int p = 0; p < k; p++) {
                        double av = a.v[aBase + (ta ? p * m + i : i * k + p)];
                        double bv = b.v[bBase + (tb ? j * k + p : p * n + j)];
                        s += av * bv;
                    }
                    o[(bi * m + i) * n + j] = s;
                }
        }
        return new D(o, Shape.concat(batch, m, n));
    }

    /** Sums g (a broadcast output) back to shape s: over leading extra axes and axes where s has 1. */
    static D sumTo(D g, int[] s) {
        double[] o = new double[numel(s)];
        int off = g.s.length - s.length;
        for (int j = 0; j < g.v.length; j++) {
            int[] gi = unravel(j, g.s);
            int[] idx = new int[s.length];
            for (int i = 0; i < s.length; i++) idx[i] = s[i] == 1 ? 0 : gi[off + i];
            o[ravel(idx, s)] += g.v[j];
        }
        return new D(o, s.clone());
    }

    static D permute(D a, int[] p) {
        int[] os = new int[p.length];
        for (int i = 0; i < p.length; i++) os[i] = a.s[p[i]];
        double[] o = new double[a.v.length];
        for (int j = 0; j < o.length; j++) {
            int[] oi = unravel(j, os);
            int[] ii = new int[p.length];
            for (int i = 0; i < p.length; i++) ii[p[i]] = oi[i];
            o[j] = a.at(ii);
        }
        return new D(o, os);
    }

    static D flip(D a, int axis) {
        double[] o = new double[a.v.length];
        for (int j = 0; j < o.length; j++) {
            int[] idx = unravel(j, a.s);
            idx[axis] = a.s[axis] - 1 - idx[axis];
            o[j] = a.at(idx);
        }
        return new D(o, a.s.clone());
    }

    static D concat(int axis, D... xs) {
        int[] os = xs[0].s.clone();
        os[axis] = 0;
        for (D x : xs) os[axis] += x.s[axis];
        double[] o = new double[numel(os)];
        for (int j = 0; j < o.length; j++) {
            int[] idx = unravel(j, os);
            int t = 0, pos = idx[axis];
            while (pos >= xs[t].s[axis]) pos -= xs[t++].s[axis];
            idx[axis] = pos;
            o[j] = xs[t].at(idx);
        }
        return new D(o, os);
    }

    static D narrow(D a, int axis, int start, int len) {
        int[] os = a.s.clone();
        os[axis] = len;
        double[] o = new double[numel(os)];
        for (int j = 0; j < o.length; j++) {
            int[] idx = unravel(j, os);
            idx[axis] += start;
            o[j] = a.at(idx);
        }
        return new D(o, os);
    }

    static D indexSelect(D a, int axis, int[] index) {
        int[] os = a.s.clone();
        os[axis] = index.length;
        double[] o = new double[numel(os)];
        for (int j = 0; j < o.length; j++) {
            int[] idx = unravel(j, os);
            idx[axis] = index[idx[axis]];
            o[j] = a.at(idx);
        }
        return new D(o, os);
    }

    static D pad(D a, int[] before, int[] after, double value) {
        int[] os = a.s.clone();
        for (int i = 0; i < os.length; i++) os[i] += before[i] + after[i];
        double[] o = new double[numel(os)];
        for (int j = 0; j < o.length; j++) {
            int[] idx = unravel(j, os);
            boolean inside = true;
            for (int i = 0; i < idx.length; i++) {
                idx[i] -= before[i];
                if (idx[i] < 0 || idx[i] >= a.s[i]) inside = false;
            }
            o[j] = inside ? a.at(idx) : value;
        }
        return new D(o, os);
    }
}
