// The op list: every primitive op's forward and its gradient rule, side by side.
package dev.biflow.engine;

import dev.biflow.engine.kernels.GemmEpilogue;
import dev.biflow.engine.kernels.Parallel;
import dev.biflow.engine.kernels.Vec;

import java.util.Arrays;

/**
 * Primitive ops. Each op computes its forward, then records its gradient rule with
 * {@link Grad#record}; adding an op touches this file only. Binary ops broadcast like NumPy.
 * Composite ops (mean, square, silu, ...) are written as compositions and need no rule of
 * their own; fused ops with hand-written gradients live in {@link Fused}.
 */
public final class Ops {
    private Ops() {}

    /** Element counts above which elementwise loops are split across threads. */
    static final int PAR_GRAIN = 1 << 15;

    // ================================================================ binary, broadcasting

    private enum Bin {
        ADD("add"), SUB("sub"), MUL("mul"), DIV("div");

        /** Spelled out: name().toLowerCase() allocates per call and makes "dıv" under a Turkish locale. */
        final String op;

        Bin(String op) { this.op = op; }
    }

    public static Tensor add(Tensor a, Tensor b) { return binary(Bin.ADD, a, b); }

    public static Tensor sub(Tensor a, Tensor b) { return binary(Bin.SUB, a, b); }

    public static Tensor mul(Tensor a, Tensor b) { return binary(Bin.MUL, a, b); }

    public static Tensor div(Tensor a, Tensor b) { return binary(Bin.DIV, a, b); }

    private static Tensor binary(Bin op, Tensor a, Tensor b) {
        String name = op.op;
        int[] os = Shape.broadcast(a.shape, b.shape, name);
        float[] out = Arena.floats(Shape.numel(os));
        float[] ad = a.data, bd = b.data;
        if (Arrays.equals(a.shape, b.shape)) {
            Parallel.forRange(out.length, PAR_GRAIN, (lo, hi) -> {
                switch (op) {
                    case ADD -> Vec.add(ad, bd, out, lo, hi);
                    case SUB -> Vec.sub(ad, bd, out, lo, hi);
                    case MUL -> Vec.mul(ad, bd, out, lo, hi);
                    case DIV -> Vec.div(ad, bd, out, lo, hi);
                }
            });
        } else {
            int[] sa = Shape.broadcastStrides(a.shape, os), sb = Shape.broadcastStrides(b.shape, os);
            int code = op.ordinal();
            forEachRow(os, sa, sb, (oOff, aOff, bOff, n, saL, sbL) -> {
                // rows that are contiguous or a repeated value (bias, per-row scale: the common
                // broadcasts) take the vector kernel; other strides the scalar loop, same roundings
                if (Vec.binaryRow(code, ad, aOff, saL, bd, bOff, sbL, out, oOff, n)) return;
                switch (op) {
                    case ADD -> { for (int i = 0; i < n; i++) out[oOff + i] = ad[aOff + i * saL] + bd[bOff + i * sbL]; }
                    case SUB -> { for (int i = 0; i < n; i++) out[oOff + i] = ad[aOff + i * saL] - bd[bOff + i * sbL]; }
                    case MUL -> { for (int i = 0; i < n; i++) out[oOff + i] = ad[aOff + i * saL] * bd[bOff + i * sbL]; }
                    case DIV -> { for (int i = 0; i < n; i++) out[oOff + i] = ad[aOff + i * saL] / bd[bOff + i * sbL]; }
                }
            });
        }
        Tensor r = new Tensor(out, os);
        boolean same = Arrays.equals(a.shape, b.shape);
        return Grad.record(r, name, (g, buf) -> {
            if (same && (op == Bin.ADD || op == Bin.SUB)) {
                // the residual add: a's gradient is g itself (handed over when a has none yet), b's is +-g
                if (op == Bin.SUB) {
                    float[] gb = buf.of(b);
                    if (gb != null) addInto(-1f, g, gb);
                    buf.add(a, g);
                } else {
                    buf.add(a, g);
                    buf.add(b, g);
                }
                return;
            }
            float[] ga = buf.of(a), gb = buf.of(b);
            if (same && (op == Bin.MUL || op == Bin.DIV)) {
                // equal shapes (the common case): no broadcast temporaries, one pass per input;
                // same roundings as the general path (product, then add)
                Parallel.forRange(g.length, PAR_GRAIN, (lo, hi) -> {
                    if (ga != null) {
                        if (op == Bin.MUL) for (int i = lo; i < hi; i++) ga[i] += g[i] * bd[i];
                        else for (int i = lo; i < hi; i++) ga[i] += g[i] / bd[i];
                    }
                    if (gb != null) {
                        if (op == Bin.MUL) for (int i = lo; i < hi; i++) gb[i] += g[i] * ad[i];
                        else for (int i = lo; i < hi; i++) gb[i] -= g[i] * out[i] / bd[i]; // d(a/b)/db = -out/b
                    }
                });
                return;
            }
            if (ga != null) {
                switch (op) {
                    case ADD, SUB -> sumInto(g, os, ga, a.shape, 1f);
                    case MUL -> sumInto(mulBroadcast(g, os, bd, b.shape), os, ga, a.shape, 1f);
                    case DIV -> sumInto(divBroadcast(g, os, bd, b.shape), os, ga, a.shape, 1f);
                }
            }
            if (gb != null) {
                switch (op) {
                    case ADD -> sumInto(g, os, gb, b.shape, 1f);
                    case SUB -> sumInto(g, os, gb, b.shape, -1f);
                    case MUL -> sumInto(mulBroadcast(g, os, ad, a.shape), os, gb, b.shape, 1f);
                    case DIV -> {
                        // d(a/b)/db = -a/b^2 = -out/b
                        float[] t = divBroadcast(mulBroadcast(g, os, out, os), os, bd, b.shape);
                        sumInto(t, os, gb, b.shape, -1f);
                    }
                }
            }
        }, a, b);
    }

    /** g (shape os) times x broadcast from xs to os. */
    private static float[] mulBroadcast(float[] g, int[] os, float[] x, int[] xs) {
        float[] r = Arena.floats(g.length);
        int[] sg = Shape.strides(os), sx = Shape.broadcastStrides(xs, os);
        forEachRow(os, sg, sx, (o, gOff, xOff, n, sgL, sxL) -> {
            for (int i = 0; i < n; i++) r[o + i] = g[gOff + i * sgL] * x[xOff + i * sxL];
        });
        return r;
    }

    private static float[] divBroadcast(float[] g, int[] os, float[] x, int[] xs) {
        float[] r = Arena.floats(g.length);
        int[] sg = Shape.strides(os), sx = Shape.broadcastStrides(xs, os);
        forEachRow(os, sg, sx, (o, gOff, xOff, n, sgL, sxL) -> {
            for (int i = 0; i < n; i++) r[o + i] = g[gOff + i * sgL] / x[xOff + i * sxL];
        });
        return r;
    }

    /** dst += s * g over whole arrays, split across threads (axpy is bitwise split-invariant). */
    static void addInto(float s, float[] g, float[] dst) {
        Parallel.forRange(g.length, PAR_GRAIN, (lo, hi) -> Vec.axpy(s, g, dst, lo, hi));
    }

    /** Adds scale * g (shape os) into dst (shape ds, broadcast to os), summing over broadcast axes. */
    static void sumInto(float[] g, int[] os, float[] dst, int[] ds, float scale) {
        if (Arrays.equals(os, ds)) {
            addInto(scale, g, dst);
            return;
        }
        int[] sd = Shape.broadcastStrides(ds, os);
        int[] sg = Shape.strides(os);
        // serial: several output rows may add into the same dst element
        forEachRowSerial(os, sg, sd, (o, gOff, dOff, n, sgL, sdL) -> {
            if (sdL == 0) {
                float s = 0f;
                for (int i = 0; i < n; i++) s += g[gOff + i * sgL];
                dst[dOff] += scale * s;
            } else {
                for (int i = 0; i < n; i++) dst[dOff + i * sdL] += scale * g[gOff + i * sgL];
            }
        });
    }

    /** Body over one innermost row of an output: offsets into out, a and b, row length and inner strides. */
    @FunctionalInterface
    interface RowBody { void run(int outOff, int aOff, int bOff, int n, int saLast, int sbLast); }

    private static void forEachRow(int[] os, int[] sa, int[] sb, RowBody body) {
        int r = os.length;
        if (r == 0) { body.run(0, 0, 0, 1, 0, 0); return; }
        int n = os[r - 1];
        int rows = n == 0 ? 0 : Shape.numel(os) / n;
        Parallel.forRange(rows, Math.max(1, PAR_GRAIN / Math.max(1, n)), (lo, hi) -> rowRange(os, sa, sb, body, n, lo, hi));
    }

    private static void forEachRowSerial(int[] os, int[] sa, int[] sb, RowBody body) {
        int r = os.length;
        if (r == 0) { body.run(0, 0, 0, 1, 0, 0); return; }
        int n = os[r - 1];
        int rows = n == 0 ? 0 : Shape.numel(os) / n;
        rowRange(os, sa, sb, body, n, 0, rows);
    }

    private static void rowRange(int[] os, int[] sa, int[] sb, RowBody body, int n, int lo, int hi) {
        if (lo >= hi) return; // also: a zero-size axis would divide by zero in the decode below
        int r = os.length;
        int[] idx = new int[r];
        // decode the starting row index
        int rem = lo;
        for (int d = r - 2; d >= 0; d--) {
            idx[d] = rem % os[d];
            rem /= os[d];
        }
        int aOff = 0, bOff = 0;
        for (int d = 0; d < r - 1; d++) {
            aOff += idx[d] * sa[d];
            bOff += idx[d] * sb[d];
        }
        for (int row = lo; row < hi; row++) {
            body.run(row * n, aOff, bOff, n, sa[r - 1], sb[r - 1]);
            for (int d = r - 2; d >= 0; d--) {
                idx[d]++;
                aOff += sa[d];
                bOff += sb[d];
                if (idx[d] < os[d]) break;
                aOff -= sa[d] * os[d];
                bOff -= sb[d] * os[d];
                idx[d] = 0;
            }
        }
    }

    /** where(cond, a, b): a where cond != 0, else b; all three broadcast together. No gradient to cond. */
    public static Tensor where(Tensor cond, Tensor a, Tensor b) {
        int[] os = Shape.broadcast(Shape.broadcast(cond.shape, a.shape, "where"), b.shape, "where");
        int n = Shape.numel(os);
        float[] c = expandTo(cond, os), av = expandTo(a, os), bv = expandTo(b, os);
        float[] out = Arena.floats(n);
        for (int i = 0; i < n; i++) out[i] = c[i] != 0f ? av[i] : bv[i];
        return Grad.record(new Tensor(out, os), "where", (g, buf) -> {
            float[] ga = buf.of(a), gb = buf.of(b);
            if (ga != null) {
                float[] t = Arena.floats(n);
                for (int i = 0; i < n; i++) t[i] = c[i] != 0f ? g[i] : 0f;
                sumInto(t, os, ga, a.shape, 1f);
            }
            if (gb != null) {
                float[] t = Arena.floats(n);
                for (int i = 0; i < n; i++) t[i] = c[i] != 0f ? 0f : g[i];
                sumInto(t, os, gb, b.shape, 1f);
            }
        }, a, b);
    }

    /** The values of t broadcast to shape os (no graph). */
    static float[] expandTo(Tensor t, int[] os) {
        if (Arrays.equals(t.shape, os)) return t.data;
        float[] out = Arena.floats(Shape.numel(os));
        float[] d = t.data;
        int[] st = Shape.broadcastStrides(t.shape, os);
        forEachRow(os, st, st, (o, tOff, unused, n, sL, unused2) -> {
            for (int i = 0; i < n; i++) out[o + i] = d[tOff + i * sL];
        });
        return out;
    }

    /** Broadcasts t to shape os (gradient sums back over the broadcast axes). */
    public static Tensor expand(Tensor t, int... os) {
        int[] s = os.clone();
        if (!Arrays.equals(Shape.broadcast(t.shape, s, "expand"), s))
            throw new IllegalArgumentException("expand: cannot expand " + Shape.str(t.shape) + " to " + Shape.str(s)
                    + "; the target must be a broadcast of the source");
        return Grad.record(new Tensor(expandTo(t, s), s), "expand",
                (g, buf) -> sumInto(g, s, buf.of(t), t.shape, 1f), t);
    }

    // ================================================================ scalar variants

    public static Tensor addScalar(Tensor a, float s) {
        float[] out = Arena.floats(a.data.length);
        float[] x = a.data;
        Parallel.forRange(out.length, PAR_GRAIN, (lo, hi) -> { for (int i = lo; i < hi; i++) out[i] = x[i] + s; });
        return Grad.record(new Tensor(out, a.shape.clone()), "add_scalar", (g, buf) -> buf.add(a, g), a);
    }

    public static Tensor mulScalar(Tensor a, float s) {
        float[] out = Arena.floats(a.data.length);
        float[] x = a.data;
        Parallel.forRange(out.length, PAR_GRAIN, (lo, hi) -> Vec.scale(s, x, out, lo, hi));
        return Grad.record(new Tensor(out, a.shape.clone()), "mul_scalar", (g, buf) -> addInto(s, g, buf.of(a)), a);
    }

    public static Tensor neg(Tensor a) { return mulScalar(a, -1f); }

    /** s - a. */
    public static Tensor rsub(float s, Tensor a) { return addScalar(neg(a), s); }

    // ================================================================ unary elementwise

    /** Forward of a unary op into out[lo, hi). */
    @FunctionalInterface
    private interface UFwd { void run(float[] x, float[] y, int lo, int hi); }

    /** Adds g * dy/dx into gx[lo, hi), given x and y = f(x). */
    @FunctionalInterface
    private interface UBwd { void run(float[] g, float[] x, float[] y, float[] gx, int lo, int hi); }

    private static Tensor unary(String name, Tensor a, UFwd f, UBwd df) {
        float[] x = a.data;
        float[] y = Arena.floats(x.length);
        Parallel.forRange(y.length, PAR_GRAIN / 4, (lo, hi) -> f.run(x, y, lo, hi));
        return Grad.record(new Tensor(y, a.shape.clone()), name, (g, buf) -> {
            float[] gx = buf.of(a);
            Parallel.forRange(g.length, PAR_GRAIN / 4, (lo, hi) -> df.run(g, x, y, gx, lo, hi));
        }, a);
    }

    public static Tensor exp(Tensor a) {
        return unary("exp", a,
                (x, y, lo, hi) -> { for (int i = lo; i < hi; i++) y[i] = (float) Math.exp(x[i]); },
                (g, x, y, gx, lo, hi) -> { for (int i = lo; i < hi; i++) gx[i] += g[i] * y[i]; });
    }

    public static Tensor log(Tensor a) {
        return unary("log", a,
                (x, y, lo, hi) -> { for (int i = lo; i < hi; i++) y[i] = (float) Math.log(x[i]); },
                (g, x, y, gx, lo, hi) -> { for (int i = lo; i < hi; i++) gx[i] += g[i] / x[i]; });
    }

    public static Tensor sqrt(Tensor a) {
        return unary("sqrt", a,
                (x, y, lo, hi) -> { for (int i = lo; i < hi; i++) y[i] = (float) Math.sqrt(x[i]); },
                (g, x, y, gx, lo, hi) -> { for (int i = lo; i < hi; i++) gx[i] += g[i] * 0.5f / y[i]; });
    }

    /** a^p for a constant exponent p. */
    public static Tensor pow(Tensor a, float p) {
        return unary("pow", a,
                (x, y, lo, hi) -> { for (int i = lo; i < hi; i++) y[i] = (float) Math.pow(x[i], p); },
                (g, x, y, gx, lo, hi) -> {
                    if (p == 0f) return; // x^0 is constant; p * x^-1 would give 0 * inf = NaN at x = 0
                    for (int i = lo; i < hi; i++) gx[i] += g[i] * p * (float) Math.pow(x[i], p - 1);
                });
    }

    public static Tensor tanh(Tensor a) {
        return unary("tanh", a,
                (x, y, lo, hi) -> { for (int i = lo; i < hi; i++) y[i] = (float) Math.tanh(x[i]); },
                (g, x, y, gx, lo, hi) -> { for (int i = lo; i < hi; i++) gx[i] += g[i] * (1f - y[i] * y[i]); });
    }

    public static Tensor sigmoid(Tensor a) {
        return unary("sigmoid", a,
                (x, y, lo, hi) -> { for (int i = lo; i < hi; i++) y[i] = sigmoid(x[i]); },
                (g, x, y, gx, lo, hi) -> { for (int i = lo; i < hi; i++) gx[i] += g[i] * y[i] * (1f - y[i]); });
    }

    /** The logistic function of sigmoid and silu (and of inference plans, which must round as they do). */
    public static float sigmoid(float v) {
        // split by sign so exp never overflows
        if (v >= 0) return (float) (1.0 / (1.0 + Math.exp(-v)));
        double e = Math.exp(v);
        return (float) (e / (1.0 + e));
    }

    public static Tensor relu(Tensor a) {
        return unary("relu", a,
                // Math.max keeps NaN (x > 0 ? x : 0 would turn it into 0 and hide a diverging run)
                (x, y, lo, hi) -> { for (int i = lo; i < hi; i++) y[i] = Math.max(x[i], 0f); },
                (g, x, y, gx, lo, hi) -> { for (int i = lo; i < hi; i++) if (x[i] > 0f) gx[i] += g[i]; });
    }

    public static Tensor silu(Tensor a) {
        return unary("silu", a,
                (x, y, lo, hi) -> { for (int i = lo; i < hi; i++) y[i] = x[i] * sigmoid(x[i]); },
                (g, x, y, gx, lo, hi) -> {
                    for (int i = lo; i < hi; i++) {
                        float s = sigmoid(x[i]);
                        gx[i] += g[i] * (s + x[i] * s * (1f - s));
                    }
                });
    }

    private static final double SQRT_2_OVER_PI = Math.sqrt(2.0 / Math.PI);
    private static final double INV_SQRT_2 = 1.0 / Math.sqrt(2.0);
    private static final double INV_SQRT_2PI = 1.0 / Math.sqrt(2.0 * Math.PI);

    /** GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
    public static Tensor geluTanh(Tensor a) {
        return unary("gelu_tanh", a,
                (x, y, lo, hi) -> {
                    for (int i = lo; i < hi; i++) {
                        double v = x[i];
                        y[i] = (float) (0.5 * v * (1 + Math.tanh(SQRT_2_OVER_PI * (v + 0.044715 * v * v * v))));
                    }
                },
                (g, x, y, gx, lo, hi) -> {
                    for (int i = lo; i < hi; i++) {
                        double v = x[i];
                        double t = Math.tanh(SQRT_2_OVER_PI * (v + 0.044715 * v * v * v));
                        double d = 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * SQRT_2_OVER_PI * (1 + 3 * 0.044715 * v * v);
                        gx[i] += (float) (g[i] * d);
                    }
                });
    }

    /** GELU, exact erf form (PyTorch's default): x * Phi(x). */
    public static Tensor gelu(Tensor a) {
        return unary("gelu", a, dev.biflow.engine.kernels.Gelu::forward,
                (g, x, y, gx, lo, hi) -> dev.biflow.engine.kernels.Gelu.backward(g, x, gx, lo, hi));
    }

    /**
     * erf(x) to about 1e-7 absolute (W. J. Cody's rational approximations are overkill for
     * float32; this is Numerical Recipes' erfc Chebyshev fit, relative error below 1.2e-7).
     */
    public static double erf(double x) {
        double z = Math.abs(x);
        double t = 1.0 / (1.0 + 0.5 * z);
        double ans = t * Math.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
                + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
                + t * (-0.82215223 + t * 0.17087277)))))))));
        return x >= 0 ? 1.0 - ans : ans - 1.0;
    }

    public static Tensor abs(Tensor a) {
        return unary("abs", a,
                (x, y, lo, hi) -> { for (int i = lo; i < hi; i++) y[i] = Math.abs(x[i]); },
                (g, x, y, gx, lo, hi) -> {
                    for (int i = lo; i < hi; i++) gx[i] += x[i] > 0 ? g[i] : x[i] < 0 ? -g[i] : 0f;
                });
    }

    /** Clamps to [min, max]; the gradient passes where the input is inside the range. */
    public static Tensor clamp(Tensor a, float min, float max) {
        if (min > max) throw new IllegalArgumentException("clamp: min " + min + " > max " + max);
        return unary("clamp", a,
                (x, y, lo, hi) -> { for (int i = lo; i < hi; i++) y[i] = Math.min(max, Math.max(min, x[i])); },
                (g, x, y, gx, lo, hi) -> {
                    for (int i = lo; i < hi; i++) if (x[i] >= min && x[i] <= max) gx[i] += g[i];
                });
    }

    /** Soft clipping c * tanh(x / c) (STARFlow's norm control). Composite. */
    public static Tensor softClip(Tensor a, float c) { return mulScalar(tanh(mulScalar(a, 1f / c)), c); }

    public static Tensor square(Tensor a) { return mul(a, a); }

    // ================================================================ reductions

    /** Sum of all elements, as a scalar tensor. */
    public static Tensor sum(Tensor a) {
        double s = 0;
        for (float v : a.data) s += v;
        Tensor r = new Tensor(new float[]{(float) s}, new int[0]);
        return Grad.record(r, "sum", (g, buf) -> {
            float[] ga = buf.of(a);
            float gv = g[0];
            for (int i = 0; i < ga.length; i++) ga[i] += gv;
        }, a);
    }

    public static Tensor mean(Tensor a) {
        if (a.data.length == 0) throw new IllegalArgumentException("mean of an empty tensor " + Shape.str(a.shape));
        return mulScalar(sum(a), 1f / a.data.length);
    }

    /** Sum over the given axes. */
    public static Tensor sum(Tensor a, int[] axes, boolean keepDim) {
        int[] ax = normAxes(axes, a.shape, "sum");
        Tensor r = a;
        for (int i = ax.length - 1; i >= 0; i--) r = sumAxis(r, ax[i]); // keeps dims as size 1
        return keepDim ? r : squeezeAxes(r, ax);
    }

    public static Tensor mean(Tensor a, int[] axes, boolean keepDim) {
        int[] ax = normAxes(axes, a.shape, "mean");
        int n = 1;
        for (int x : ax) n *= a.shape[x];
        if (n == 0) throw new IllegalArgumentException("mean over empty axes of " + Shape.str(a.shape));
        return mulScalar(sum(a, ax, keepDim), 1f / n);
    }

    /** Max over the given axes; the gradient goes to the first maximal element. */
    public static Tensor max(Tensor a, int[] axes, boolean keepDim) {
        int[] ax = normAxes(axes, a.shape, "max");
        Tensor r = a;
        for (int i = ax.length - 1; i >= 0; i--) r = maxAxis(r, ax[i]);
        return keepDim ? r : squeezeAxes(r, ax);
    }

    private static int[] normAxes(int[] axes, int[] shape, String op) {
        int[] ax = new int[axes.length];
        for (int i = 0; i < axes.length; i++) ax[i] = Shape.axis(axes[i], shape, op);
        Arrays.sort(ax);
        for (int i = 1; i < ax.length; i++)
            if (ax[i] == ax[i - 1]) throw new IllegalArgumentException(op + ": axis " + ax[i] + " given twice for shape " + Shape.str(shape));
        return ax;
    }

    private static Tensor squeezeAxes(Tensor r, int[] ax) {
        int[] s = new int[r.shape.length - ax.length];
        int j = 0, k = 0;
        for (int i = 0; i < r.shape.length; i++) {
            if (k < ax.length && ax[k] == i) { k++; continue; }
            s[j++] = r.shape[i];
        }
        return reshape(r, s);
    }

    /** Sum over one axis, keeping it as size 1. Viewed as (outer, n, inner). */
    private static Tensor sumAxis(Tensor a, int axis) {
        int outer = Shape.prod(a.shape, 0, axis), n = a.shape[axis], inner = Shape.prod(a.shape, axis + 1, a.shape.length);
        float[] x = a.data;
        float[] y = Arena.floats(outer * inner);
        int grain = Math.max(1, PAR_GRAIN / Math.max(1, n * inner));
        Parallel.forRange(outer, grain, (lo, hi) -> {
            for (int o = lo; o < hi; o++) {
                if (inner == 1) { // the last axis (softmax, layernorm): a contiguous row, not n length-1 axpys
                    y[o] = Vec.sum(x, o * n, n);
                    continue;
                }
                int yb = o * inner;
                for (int j = 0; j < n; j++) Vec.axpy(1f, x, (o * n + j) * inner, y, yb, inner);
            }
        });
        int[] os = a.shape.clone();
        os[axis] = 1;
        return Grad.record(new Tensor(y, os), "sum_axis", (g, buf) -> {
            float[] ga = buf.of(a);
            // each outer slab of ga is written by one range: parallel and deterministic
            Parallel.forRange(outer, grain, (lo, hi) -> {
                for (int o = lo; o < hi; o++) {
                    if (inner == 1) {
                        float gv = g[o];
                        for (int j = o * n, end = j + n; j < end; j++) ga[j] += gv;
                        continue;
                    }
                    for (int j = 0; j < n; j++) Vec.axpy(1f, g, o * inner, ga, (o * n + j) * inner, inner);
                }
            });
        }, a);
    }

    private static Tensor maxAxis(Tensor a, int axis) {
        int outer = Shape.prod(a.shape, 0, axis), n = a.shape[axis], inner = Shape.prod(a.shape, axis + 1, a.shape.length);
        if (n == 0) throw new IllegalArgumentException("max over an empty axis of " + Shape.str(a.shape));
        float[] x = a.data;
        float[] y = Arena.floats(outer * inner);
        int[] arg = new int[outer * inner];
        for (int o = 0; o < outer; o++)
            for (int i = 0; i < inner; i++) {
                int best = 0;
                float bv = x[o * n * inner + i];
                for (int j = 1; j < n; j++) {
                    float v = x[(o * n + j) * inner + i];
                    if (v > bv || (Float.isNaN(v) && !Float.isNaN(bv))) { bv = v; best = j; }
                }
                y[o * inner + i] = bv;
                arg[o * inner + i] = best;
            }
        int[] os = a.shape.clone();
        os[axis] = 1;
        return Grad.record(new Tensor(y, os), "max_axis", (g, buf) -> {
            float[] ga = buf.of(a);
            for (int o = 0; o < outer; o++)
                for (int i = 0; i < inner; i++) ga[(o * n + arg[o * inner + i]) * inner + i] += g[o * inner + i];
        }, a);
    }

    // ================================================================ matmul

    /**
     * Batched matrix product op(a) @ op(b). a is (..., M, K) or, with transA, (..., K, M); b is
     * (..., K, N) or, with transB, (..., N, K). Batch dims must be equal, or b may be 2-D
     * (shared across a's batch, as a Linear weight is).
     */
    public static Tensor matmul(Tensor a, Tensor b, boolean transA, boolean transB) {
        int ra = a.shape.length, rb = b.shape.length;
        if (ra < 2 || rb < 2)
            throw new IllegalArgumentException("matmul: both operands need rank >= 2, got " + Shape.str(a.shape) + " and "
                    + Shape.str(b.shape) + "; reshape vectors to (1, n) or (n, 1)");
        int m = transA ? a.shape[ra - 1] : a.shape[ra - 2];
        int ka = transA ? a.shape[ra - 2] : a.shape[ra - 1];
        int kb = transB ? b.shape[rb - 1] : b.shape[rb - 2];
        int n = transB ? b.shape[rb - 2] : b.shape[rb - 1];
        if (ka != kb)
            throw new IllegalArgumentException("matmul: inner dimensions differ: " + Shape.str(a.shape) + (transA ? "^T" : "")
                    + " @ " + Shape.str(b.shape) + (transB ? "^T" : "") + " has K=" + ka + " vs " + kb);
        int k = ka;
        int[] batchA = Arrays.copyOf(a.shape, ra - 2), batchB = Arrays.copyOf(b.shape, rb - 2);
        boolean sharedB = rb == 2;
        if (!sharedB && !Arrays.equals(batchA, batchB))
            throw new IllegalArgumentException("matmul: batch dims differ: " + Shape.str(a.shape) + " vs " + Shape.str(b.shape)
                    + "; batch dims must be equal, or b must be 2-D");
        int batch = Shape.numel(batchA);
        int[] os = Shape.concat(batchA, m, n);
        float[] c = Arena.floats(batch * m * n);
        // row strides of the arrays as stored; BLAS wants >= 1 even when a dimension is 0
        int lda = Math.max(1, a.shape[ra - 1]), ldb = Math.max(1, b.shape[rb - 1]), ldc = Math.max(1, n);
        Backend be = Backend.active();
        float[] ad = a.data, bd = b.data;
        if (sharedB && !transA) {
            be.gemm(false, transB, batch * m, n, k, 1f, ad, 0, lda, bd, 0, ldb, 0f, c, 0, ldc, GemmEpilogue.NONE);
        } else {
            int bStride = sharedB ? 0 : k * n;
            batched(batch, m, n, k, bi -> be.gemm(transA, transB, m, n, k, 1f, ad, bi * m * k, lda, bd, bi * bStride, ldb, 0f, c, bi * m * n, ldc, GemmEpilogue.NONE));
        }
        Tensor out = new Tensor(c, os);
        return Grad.record(out, "matmul", (g, buf) -> {
            float[] ga = buf.of(a), gb = buf.of(b);
            if (ga != null) {
                if (sharedB && !transA) {
                    // dA = dC op(B)^T, one GEMM over the flattened batch
                    be.gemm(false, !transB, batch * m, k, n, 1f, g, 0, ldc, bd, 0, ldb, 1f, ga, 0, lda, GemmEpilogue.NONE);
                } else {
                    int bStride = sharedB ? 0 : k * n;
                    batched(batch, m, n, k, bi -> {
                        if (!transA) be.gemm(false, !transB, m, k, n, 1f, g, bi * m * n, ldc, bd, bi * bStride, ldb, 1f, ga, bi * m * k, lda, GemmEpilogue.NONE);
                        else be.gemm(transB, true, k, m, n, 1f, bd, bi * bStride, ldb, g, bi * m * n, ldc, 1f, ga, bi * m * k, lda, GemmEpilogue.NONE);
                    });
                }
            }
            if (gb != null) {
                if (sharedB) {
                    if (!transA) {
                        if (!transB) be.gemm(true, false, k, n, batch * m, 1f, ad, 0, lda, g, 0, ldc, 1f, gb, 0, ldb, GemmEpilogue.NONE);
                        else be.gemm(true, false, n, k, batch * m, 1f, g, 0, ldc, ad, 0, lda, 1f, gb, 0, ldb, GemmEpilogue.NONE);
                    } else {
                        for (int bi = 0; bi < batch; bi++) { // accumulates into the shared gradient: serial over batch
                            if (!transB) be.gemm(false, false, k, n, m, 1f, ad, bi * m * k, lda, g, bi * m * n, ldc, 1f, gb, 0, ldb, GemmEpilogue.NONE);
                            else be.gemm(true, true, n, k, m, 1f, g, bi * m * n, ldc, ad, bi * m * k, lda, 1f, gb, 0, ldb, GemmEpilogue.NONE);
                        }
                    }
                } else {
                    batched(batch, m, n, k, bi -> {
                        if (!transB) be.gemm(!transA, false, k, n, m, 1f, ad, bi * m * k, lda, g, bi * m * n, ldc, 1f, gb, bi * k * n, ldb, GemmEpilogue.NONE);
                        else be.gemm(true, transA, n, k, m, 1f, g, bi * m * n, ldc, ad, bi * m * k, lda, 1f, gb, bi * k * n, ldb, GemmEpilogue.NONE);
                    });
                }
            }
        }, a, b);
    }

    /**
     * Fully connected layer y = x w^T + b for x (N, in), w (out, in), b (out) or null: one GEMM
     * that starts from the bias (GemmEpilogue.bias: formed tile by tile inside the GEMM), so the bias costs no pass over y. Same
     * value as {@code add(matmul(x, w, false, true), b)} up to float rounding (b is added first). Inference runs the
     * same GEMM with the next op fused into its tiles (GELU, a gated residual): an inference plan's Linear op.
     */
    public static Tensor linear(Tensor x, Tensor w, Tensor b) {
        if (x.shape.length != 2 || w.shape.length != 2 || x.shape[1] != w.shape[1])
            throw new IllegalArgumentException("linear: x " + Shape.str(x.shape) + " and weight " + Shape.str(w.shape)
                    + " must be (N, in) and (out, in)");
        int n = x.shape[0], in = x.shape[1], out = w.shape[0];
        if (b != null && (b.shape.length != 1 || b.shape[0] != out))
            throw new IllegalArgumentException("linear: bias " + Shape.str(b.shape) + " must be (" + out + ")");
        float[] c = Arena.floats(n * out);
        Backend be = Backend.active();
        float[] xd = x.data, wd = w.data;
        int ldx = Math.max(1, in), ldc = Math.max(1, out);
        // y = x W^T + b with b as the GEMM's start value (formed in the GEMM, tile by tile: no pass over y)
        be.gemm(false, true, n, out, in, 1f, xd, 0, ldx, wd, 0, ldx, 0f, c, 0, ldc, GemmEpilogue.bias(b == null ? null : b.data));
        Tensor y = new Tensor(c, new int[]{n, out});
        return Grad.record(y, "linear", (g, buf) -> {
            float[] gx = buf.of(x), gw = buf.of(w), gb = b == null ? null : buf.of(b);
            if (gx != null) be.gemm(false, false, n, in, out, 1f, g, 0, ldc, wd, 0, ldx, 1f, gx, 0, ldx, GemmEpilogue.NONE);
            if (gw != null) be.gemm(true, false, out, in, n, 1f, g, 0, ldc, xd, 0, ldx, 1f, gw, 0, ldx, GemmEpilogue.NONE);
            // rows in order per column (deterministic); columns split between threads in whole vectors
            if (gb != null) Parallel.forRange((out + 15) / 16, Math.max(1, (1 << 16) / Math.max(1, n * 16)),
                    (lo, hi) -> Vec.addRows(g, n, out, gb, lo * 16, Math.min(out, hi * 16)));
        }, b == null ? new Tensor[]{x, w} : new Tensor[]{x, w, b});
    }

    private interface BatchBody { void run(int bi); }

    /** Runs independent per-batch GEMMs, in parallel over the batch when there are several. */
    private static void batched(int batch, int m, int n, int k, BatchBody body) {
        long flops = (long) m * n * k;
        if (batch == 1 || flops > (1L << 22)) {
            for (int bi = 0; bi < batch; bi++) body.run(bi);
        } else {
            Parallel.forRange(batch, 1, (lo, hi) -> { for (int bi = lo; bi < hi; bi++) body.run(bi); });
        }
    }

    // ================================================================ shape ops

    /** Same values, new shape; one dimension may be -1. */
    public static Tensor reshape(Tensor a, int... shape) {
        int[] s = shape.clone();
        int infer = -1, known = 1;
        for (int i = 0; i < s.length; i++) {
            if (s[i] == -1) {
                if (infer >= 0) throw new IllegalArgumentException("reshape: only one dimension may be -1, got " + Shape.str(s) + " for " + Shape.str(a.shape));
                infer = i;
            } else if (s[i] < 0) {
                throw new IllegalArgumentException("reshape: negative dimension in " + Shape.str(s) + " for " + Shape.str(a.shape));
            } else known *= s[i];
        }
        if (infer >= 0) {
            if (known == 0 || a.data.length % known != 0)
                throw new IllegalArgumentException("reshape: cannot infer -1 in " + Shape.str(s) + " for " + Shape.str(a.shape) + " ("
                        + a.data.length + " elements)");
            s[infer] = a.data.length / known;
        }
        if (Shape.numel(s) != a.data.length)
            throw new IllegalArgumentException("reshape: " + Shape.str(a.shape) + " (" + a.data.length + " elements) cannot become "
                    + Shape.str(s) + " (" + Shape.numel(s) + " elements)");
        return Grad.record(new Tensor(a.data, s), "reshape", (g, buf) -> buf.add(a, g), a);
    }

    /** Reorders axes: out.shape[i] = a.shape[perm[i]]. */
    public static Tensor permute(Tensor a, int... perm) {
        int r = a.shape.length;
        if (perm.length != r)
            throw new IllegalArgumentException("permute: " + Arrays.toString(perm) + " has " + perm.length + " axes, " + Shape.str(a.shape) + " has " + r);
        boolean[] seen = new boolean[r];
        int[] p = new int[r];
        for (int i = 0; i < r; i++) {
            p[i] = Shape.axis(perm[i], a.shape, "permute");
            if (seen[p[i]])
                throw new IllegalArgumentException("permute: axis " + p[i] + " repeated in " + Arrays.toString(perm) + " for " + Shape.str(a.shape));
            seen[p[i]] = true;
        }
        int[] os = new int[r];
        for (int i = 0; i < r; i++) os[i] = a.shape[p[i]];
        float[] out = permuteData(a.data, a.shape, p);
        int[] inv = new int[r];
        for (int i = 0; i < r; i++) inv[p[i]] = i;
        return Grad.record(new Tensor(out, os), "permute", (g, buf) -> {
            float[] back = permuteData(g, os, inv);
            Vec.axpy(1f, back, buf.of(a), 0, back.length);
        }, a);
    }

    /** Copies x (shape s) into the layout permuted by p. */
    static float[] permuteData(float[] x, int[] s, int[] p) {
        int r = s.length;
        int[] os = new int[r];
        int[] inStr = Shape.strides(s);
        int[] st = new int[r]; // input stride for each output axis
        for (int i = 0; i < r; i++) {
            os[i] = s[p[i]];
            st[i] = inStr[p[i]];
        }
        float[] out = Arena.floats(x.length);
        if (x.length == 0) return out;
        if (r > 0 && p[r - 1] == r - 1) {
            // the last axis stays last (attention's head split and merge): whole rows move
            forEachRow(os, st, st, (o, xOff, unused, n, sL, unused2) -> System.arraycopy(x, xOff, out, o, n));
            return out;
        }
        // reuse the row machinery: "a" is the input read with permuted strides, "b" unused
        forEachRow(os, st, st, (o, xOff, unused, n, sL, unused2) -> {
            for (int i = 0; i < n; i++) out[o + i] = x[xOff + i * sL];
        });
        return out;
    }

    public static Tensor transpose(Tensor a, int ax0, int ax1) {
        int r = a.shape.length;
        int[] p = new int[r];
        for (int i = 0; i < r; i++) p[i] = i;
        int x = Shape.axis(ax0, a.shape, "transpose"), y = Shape.axis(ax1, a.shape, "transpose");
        p[x] = y;
        p[y] = x;
        return permute(a, p);
    }

    /** Reverses the order along one axis. */
    public static Tensor flip(Tensor a, int axis) {
        int ax = Shape.axis(axis, a.shape, "flip");
        int outer = Shape.prod(a.shape, 0, ax), n = a.shape[ax], inner = Shape.prod(a.shape, ax + 1, a.shape.length);
        float[] out = flipData(a.data, outer, n, inner);
        return Grad.record(new Tensor(out, a.shape.clone()), "flip", (g, buf) -> {
            float[] back = flipData(g, outer, n, inner);
            Vec.axpy(1f, back, buf.of(a), 0, back.length);
        }, a);
    }

    private static float[] flipData(float[] x, int outer, int n, int inner) {
        float[] out = Arena.floats(x.length);
        for (int o = 0; o < outer; o++)
            for (int j = 0; j < n; j++)
                System.arraycopy(x, (o * n + j) * inner, out, (o * n + (n - 1 - j)) * inner, inner);
        return out;
    }

    /** Joins tensors along an axis; all other dims must agree. */
    public static Tensor concat(int axis, Tensor... ts) {
        if (ts.length == 0) throw new IllegalArgumentException("concat: no tensors given");
        int r = ts[0].shape.length;
        int ax = Shape.axis(axis, ts[0].shape, "concat");
        int sumAx = 0;
        for (Tensor t : ts) {
            if (t.shape.length != r) throw new IllegalArgumentException("concat: rank mismatch " + Shape.str(ts[0].shape) + " vs " + Shape.str(t.shape));
            for (int d = 0; d < r; d++)
                if (d != ax && t.shape[d] != ts[0].shape[d])
                    throw new IllegalArgumentException("concat along axis " + ax + ": shapes " + Shape.str(ts[0].shape) + " and "
                            + Shape.str(t.shape) + " differ on axis " + d);
            sumAx += t.shape[ax];
        }
        final int total = sumAx;
        int outer = Shape.prod(ts[0].shape, 0, ax), inner = Shape.prod(ts[0].shape, ax + 1, r);
        int[] os = ts[0].shape.clone();
        os[ax] = total;
        float[] out = Arena.floats(outer * total * inner);
        int[] starts = new int[ts.length];
        int off = 0;
        for (int i = 0; i < ts.length; i++) {
            starts[i] = off;
            int len = ts[i].shape[ax] * inner;
            for (int o = 0; o < outer; o++)
                System.arraycopy(ts[i].data, o * len, out, (o * total + off) * inner, len);
            off += ts[i].shape[ax];
        }
        Tensor[] ins = ts.clone();
        return Grad.record(new Tensor(out, os), "concat", (g, buf) -> {
            for (int i = 0; i < ins.length; i++) {
                float[] gi = buf.of(ins[i]);
                if (gi == null) continue;
                int len = ins[i].shape[ax] * inner;
                for (int o = 0; o < outer; o++) Vec.axpy(1f, g, (o * total + starts[i]) * inner, gi, o * len, len);
            }
        }, ins);
    }

    /** A contiguous slice [start, start+length) along an axis. */
    public static Tensor narrow(Tensor a, int axis, int start, int length) {
        int r = a.shape.length;
        int ax = Shape.axis(axis, a.shape, "narrow");
        int n = a.shape[ax];
        if (start < 0 || length < 0 || start + length > n)
            throw new IllegalArgumentException("narrow: range [" + start + ", " + (start + length) + ") is outside axis " + ax
                    + " of size " + n + " in " + Shape.str(a.shape));
        int outer = Shape.prod(a.shape, 0, ax), inner = Shape.prod(a.shape, ax + 1, r);
        int[] os = a.shape.clone();
        os[ax] = length;
        float[] out = Arena.floats(outer * length * inner);
        for (int o = 0; o < outer; o++)
            System.arraycopy(a.data, (o * n + start) * inner, out, o * length * inner, length * inner);
        return Grad.record(new Tensor(out, os), "narrow", (g, buf) -> {
            float[] ga = buf.of(a);
            for (int o = 0; o < outer; o++) Vec.axpy(1f, g, o * length * inner, ga, (o * n + start) * inner, length * inner);
        }, a);
    }

    /** Splits along an axis into pieces of the given sizes (which must add up to the axis size). */
    public static Tensor[] split(Tensor a, int axis, int... sizes) {
        int ax = Shape.axis(axis, a.shape, "split");
        int total = 0;
        for (int s : sizes) {
            if (s < 0) throw new IllegalArgumentException("split: negative size in " + Arrays.toString(sizes) + " for " + Shape.str(a.shape));
            total += s;
        }
        if (total != a.shape[ax])
            throw new IllegalArgumentException("split: sizes " + Arrays.toString(sizes) + " add up to " + total + ", axis " + ax
                    + " of " + Shape.str(a.shape) + " has " + a.shape[ax]);
        Tensor[] out = new Tensor[sizes.length];
        int off = 0;
        for (int i = 0; i < sizes.length; i++) {
            out[i] = narrow(a, ax, off, sizes[i]);
            off += sizes[i];
        }
        return out;
    }

    /** Splits into n equal chunks along an axis. */
    public static Tensor[] chunk(Tensor a, int n, int axis) {
        int ax = Shape.axis(axis, a.shape, "chunk");
        if (n <= 0 || a.shape[ax] % n != 0)
            throw new IllegalArgumentException("chunk: axis " + ax + " of " + Shape.str(a.shape) + " does not split into " + n + " equal chunks");
        int[] sizes = new int[n];
        Arrays.fill(sizes, a.shape[ax] / n);
        return split(a, ax, sizes);
    }

    /** Picks entries along an axis by index (embedding lookup is indexSelect(table, 0, ids)). */
    public static Tensor indexSelect(Tensor a, int axis, int[] index) {
        int r = a.shape.length;
        int ax = Shape.axis(axis, a.shape, "indexSelect");
        int n = a.shape[ax];
        for (int id : index)
            if (id < 0 || id >= n)
                throw new IndexOutOfBoundsException("indexSelect: index " + id + " out of range [0, " + n + ") on axis " + ax + " of " + Shape.str(a.shape));
        int outer = Shape.prod(a.shape, 0, ax), inner = Shape.prod(a.shape, ax + 1, r);
        int m = index.length;
        int[] os = a.shape.clone();
        os[ax] = m;
        float[] out = Arena.floats(outer * m * inner);
        int[] idx = index.clone();
        for (int o = 0; o < outer; o++)
            for (int j = 0; j < m; j++)
                System.arraycopy(a.data, (o * n + idx[j]) * inner, out, (o * m + j) * inner, inner);
        return Grad.record(new Tensor(out, os), "index_select", (g, buf) -> {
            float[] ga = buf.of(a);
            for (int o = 0; o < outer; o++)
                for (int j = 0; j < m; j++) Vec.axpy(1f, g, (o * m + j) * inner, ga, (o * n + idx[j]) * inner, inner);
        }, a);
    }

    /** Constant padding: before[i] and after[i] elements added on axis i (arrays of length rank). */
    public static Tensor pad(Tensor a, int[] before, int[] after, float value) {
        int r = a.shape.length;
        if (before.length != r || after.length != r)
            throw new IllegalArgumentException("pad: give before/after for each of the " + r + " axes of " + Shape.str(a.shape) + ", got "
                    + before.length + " and " + after.length);
        int[] os = new int[r];
        for (int i = 0; i < r; i++) {
            if (before[i] < 0 || after[i] < 0)
                throw new IllegalArgumentException("pad: negative padding on axis " + i + " of " + Shape.str(a.shape) + ": before "
                        + Arrays.toString(before) + ", after " + Arrays.toString(after));
            os[i] = a.shape[i] + before[i] + after[i];
        }
        float[] out = Arena.floats(Shape.numel(os));
        if (Float.floatToRawIntBits(value) != 0) Arrays.fill(out, value); // -0.0 == 0 but must still be written
        int[] oStr = Shape.strides(os);
        int base = 0;
        for (int i = 0; i < r; i++) base += before[i] * oStr[i];
        // map each input row into the output: "a" offsets are output offsets, written by the row body
        int[] inShape = a.shape;
        int n = r == 0 ? 1 : inShape[r - 1];
        int rows = n == 0 ? 0 : a.data.length / n;
        int[] rowOff = rowOffsets(inShape, oStr, base, rows);
        for (int row = 0; row < rows; row++) System.arraycopy(a.data, row * n, out, rowOff[row], n);
        return Grad.record(new Tensor(out, os), "pad", (g, buf) -> {
            float[] ga = buf.of(a);
            for (int row = 0; row < rows; row++) Vec.axpy(1f, g, rowOff[row], ga, row * n, n);
        }, a);
    }

    /** Output offset of each innermost row of a tensor of shape s placed with strides st at base. */
    private static int[] rowOffsets(int[] s, int[] st, int base, int rows) {
        int r = s.length;
        int[] res = new int[rows];
        if (r == 0) { if (rows > 0) res[0] = base; return res; }
        int[] idx = new int[r];
        int off = base;
        for (int row = 0; row < rows; row++) {
            res[row] = off;
            for (int d = r - 2; d >= 0; d--) {
                idx[d]++;
                off += st[d];
                if (idx[d] < s[d]) break;
                off -= st[d] * s[d];
                idx[d] = 0;
            }
        }
        return res;
    }

    /** Stops gradients: the same values as a leaf. */
    public static Tensor detach(Tensor a) { return a.detach(); }
}
