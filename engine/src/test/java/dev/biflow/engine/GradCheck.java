// The reusable gradient checker: analytic gradients (backward and Grad.grad) against finite differences.
package dev.biflow.engine;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import static org.junit.jupiter.api.Assertions.fail;

/**
 * Checks an op's gradient rule. The loss is L = sum(f(x) * R) for a fixed random R, so
 * dL/dx is the vector-Jacobian product with seed R: one backward pass checks every output.
 *
 * <p>Two ways to get the numerical gradient:
 * <ul>
 *   <li>with a double-precision reference of the same function ({@link #ref}): central
 *   differences of the reference with a tiny step (h = 1e-6 |x|). Truncation error is
 *   O(h^2) ~ 1e-12 and roundoff O(1e-16/h) ~ 1e-10, so the numerical side is exact for our
 *   purposes and the tolerance only has to absorb float32 error in the analytic gradient.
 *   The forward is checked against the reference too. Prefer this path.
 *   <li>without a reference: central differences of the float op itself, at steps h and h/2.
 *   The tolerance adds an estimate of float roundoff (2^-24 |out| / h over the outputs that
 *   moved) and of truncation (|D(h) - D(h/2)|); a check whose noise would swamp the gradient
 *   fails as inconclusive rather than passing vacuously. Used for fused ops against nothing
 *   but themselves.
 * </ul>
 *
 * <p>Tolerances. Float32 gradient rules carry relative error ~1e-7 for pointwise rules and up to
 * ~K 2^-24 for K-term sums (matmul, broadcast reductions). The defaults, |analytic - numeric| <=
 * rtol |numeric| + atol max(1, max |numeric|) with rtol = 1e-4, atol = 1e-5, leave a 10-100x
 * margin over that, while a factor, a sign, a wrong reduction or gelu's tanh derivative in place
 * of its erf derivative (differences >= 1e-3 of the gradient scale) fail.
 *
 * <p>Gradients are also computed with {@link Grad#grad} on a fresh forward and must match the
 * accumulated {@code .grad} bit for bit, so every check covers both autograd entry points.
 *
 * <p>Use: {@code GradCheck.of("add", x -> Ops.add(x[0], x[1])).ref(d -> ...).check(a, b);} and, for a
 * fused op against its composition of primitives, {@link #agree}.
 */
public final class GradCheck {
    /** The function under test, on float tensors. */
    @FunctionalInterface
    public interface Fn { Tensor apply(Tensor... x); }

    /** The same function in double precision: input values (row-major) to output values (row-major). */
    @FunctionalInterface
    public interface Ref { double[] apply(double[]... x); }

    private final String name;
    private final Fn f;
    private Ref ref;
    private double rtol = 1e-4, atol = 1e-5;
    private double fwdRtol = 1e-5, fwdAtol = 1e-6;
    private int maxCoords = 64;
    private long seed = 1234;
    private boolean[] wrt;

    private GradCheck(String name, Fn f) {
        this.name = name;
        this.f = f;
    }

    public static GradCheck of(String name, Fn f) { return new GradCheck(name, f); }

    /** A double-precision reference: enables the forward check and exact finite differences. */
    public GradCheck ref(Ref r) { this.ref = r; return this; }

    /** Gradient tolerance: |a - n| <= rtol |n| + atol max(1, max|n|). */
    public GradCheck tol(double rtol, double atol) { this.rtol = rtol; this.atol = atol; return this; }

    /** Forward tolerance against the reference: |y - r| <= rtol |r| + atol max(1, max|r|). */
    public GradCheck fwdTol(double rtol, double atol) { this.fwdRtol = rtol; this.fwdAtol = atol; return this; }

    /** Inputs with more elements are checked at this many sampled coordinates (first and last always). */
    public GradCheck maxCoords(int n) { this.maxCoords = n; return this; }

    public GradCheck seed(long s) { this.seed = s; return this; }

    /** Only these inputs are differentiated (the others are constants). Default: all. */
    public GradCheck wrt(int... idx) {
        wrt = new boolean[64];
        for (int i : idx) wrt[i] = true;
        return this;
    }

    private boolean differentiates(int i) { return wrt == null || wrt[i]; }

    /** Runs the check; fails with a message naming the op, input, coordinate and both values. */
    public void check(Tensor... inputs) {
        int nIn = inputs.length;
        // ---- analytic, through backward() into .grad
        Tensor[] leaves = new Tensor[nIn];
        for (int i = 0; i < nIn; i++) leaves[i] = inputs[i].copy().requiresGrad(differentiates(i));
        Tensor out = f.apply(leaves);
        if (!out.needsGrad()) fail(name + ": output does not need a gradient; the op recorded no graph");
        Rng rng = new Rng(seed);
        Tensor seedR = Tensor.randn(rng, out.shape());
        out.backward(seedR);
        float[][] analytic = new float[nIn][];
        for (int i = 0; i < nIn; i++) {
            if (!differentiates(i)) continue;
            analytic[i] = leaves[i].gradData();
            if (analytic[i] == null) analytic[i] = new float[inputs[i].numel()]; // input not reached: zero gradient
        }

        // ---- the same through Grad.grad on a fresh graph: must agree bit for bit and touch no .grad
        Tensor[] leaves2 = new Tensor[nIn];
        for (int i = 0; i < nIn; i++) leaves2[i] = inputs[i].copy().requiresGrad(differentiates(i));
        Tensor out2 = f.apply(leaves2);
        List<Tensor> targets = new ArrayList<>();
        List<Integer> targetIdx = new ArrayList<>();
        for (int i = 0; i < nIn; i++) if (differentiates(i)) { targets.add(leaves2[i]); targetIdx.add(i); }
        Tensor[] g2 = Grad.grad(out2, seedR, targets.toArray(new Tensor[0]));
        for (int t = 0; t < g2.length; t++) {
            int i = targetIdx.get(t);
            if (leaves2[i].gradData() != null) fail(name + ": Grad.grad wrote into .grad of input " + i);
            if (!Arrays.equals(g2[t].data(), analytic[i]))
                fail(name + ": Grad.grad and backward() disagree for input " + i + ": " + firstDiff(g2[t].data(), analytic[i]));
        }

        // ---- forward against the reference
        double[][] xd = new double[nIn][];
        for (int i = 0; i < nIn; i++) xd[i] = toDouble(inputs[i].data());
        float[] y = out.data();
        if (ref != null) {
            double[] r = ref.apply(xd);
            if (r.length != y.length) fail(name + ": output has " + y.length + " values " + Shape.str(out.shape()) + ", reference " + r.length);
            double scale = Math.max(1, maxAbs(r));
            for (int j = 0; j < y.length; j++) {
                double err = Math.abs(y[j] - r[j]);
                if (!(err <= fwdRtol * Math.abs(r[j]) + fwdAtol * scale) && !(Double.isNaN(r[j]) && Float.isNaN(y[j]))
                        && !(Double.isInfinite(r[j]) && y[j] == r[j]))
                    fail(name + ": forward value " + j + " of " + Shape.str(out.shape()) + " is " + y[j] + ", reference " + r[j]
                            + " (error " + err + ")");
            }
        }

        // ---- numerical gradients
        double[] rd = toDouble(seedR.data());
        Rng pick = new Rng(seed ^ 0x5DEECE66DL);
        for (int i = 0; i < nIn; i++) {
            if (!differentiates(i)) continue;
            int n = inputs[i].numel();
            int[] coords = coords(n, pick);
            double[] num = new double[coords.length];
            double[] noise = new double[coords.length];
            for (int c = 0; c < coords.length; c++) {
                int k = coords[c];
                if (ref != null) {
                    num[c] = refDiff(xd, i, k, rd);
                } else {
                    double[] dn = floatDiff(inputs, i, k, rd, y);
                    num[c] = dn[0];
                    noise[c] = dn[1];
                }
            }
            double scale = Math.max(1, maxAbs(num));
            for (int c = 0; c < coords.length; c++) {
                int k = coords[c];
                double a = analytic[i][k];
                double tol = rtol * Math.abs(num[c]) + atol * scale + noise[c];
                if (ref == null && noise[c] > 0.05 * scale)
                    fail(name + ": finite differences too noisy to judge input " + i + " coordinate " + k + " (noise " + noise[c]
                            + " vs gradient scale " + scale + "); give a double reference or smaller inputs");
                if (!(Math.abs(a - num[c]) <= tol))
                    fail(name + ": gradient of input " + i + " " + Shape.str(inputs[i].shape()) + " at flat index " + k
                            + " " + Arrays.toString(unravel(k, inputs[i].shape())) + ": analytic " + a + ", numerical " + num[c]
                            + " (|diff| " + Math.abs(a - num[c]) + " > tol " + tol + ")");
            }
        }
    }

    /**
     * A fused op against its composed form: same forward and same input gradients (for the same
     * random seed R) within tol relative to max(1, the largest magnitude). Both run in float32,
     * so tol is the float error of the longer computation (1e-5 is typical for one row reduction).
     */
    public static void agree(String name, Fn fused, Fn composed, double tol, Tensor... inputs) {
        Tensor[] la = new Tensor[inputs.length], lb = new Tensor[inputs.length];
        for (int i = 0; i < inputs.length; i++) {
            la[i] = inputs[i].copy().requiresGrad(true);
            lb[i] = inputs[i].copy().requiresGrad(true);
        }
        Tensor ya = fused.apply(la), yb = composed.apply(lb);
        if (!ya.sameShape(yb)) fail(name + ": fused output " + Shape.str(ya.shape()) + " vs composed " + Shape.str(yb.shape()));
        assertAgree(name + " forward", ya.data(), yb.data(), tol);
        Tensor r = Tensor.randn(new Rng(99), ya.shape());
        ya.backward(r);
        yb.backward(r);
        for (int i = 0; i < inputs.length; i++) {
            float[] ga = la[i].gradData(), gb = lb[i].gradData();
            if (ga == null && gb == null) continue;
            if (ga == null || gb == null) fail(name + ": input " + i + " gets a gradient from only one of the two forms");
            assertAgree(name + " gradient of input " + i + " " + Shape.str(inputs[i].shape()), ga, gb, tol);
        }
    }

    private static void assertAgree(String what, float[] a, float[] b, double tol) {
        double scale = 1;
        for (float v : b) if (Float.isFinite(v)) scale = Math.max(scale, Math.abs(v));
        for (int j = 0; j < a.length; j++)
            if (!(Math.abs(a[j] - b[j]) <= tol * scale) && !(Float.isNaN(a[j]) && Float.isNaN(b[j])))
                fail(what + ": index " + j + " fused " + a[j] + " vs composed " + b[j] + " (tol " + tol * scale + ")");
    }

    /** dL/dx_k of the double reference by central differences; L's change is summed per output so unmoved outputs cancel exactly. */
    private double refDiff(double[][] xd, int i, int k, double[] r) {
        double x0 = xd[i][k];
        double h = 1e-6 * Math.max(1, Math.abs(x0));
        xd[i][k] = x0 + h;
        double[] yp = ref.apply(xd);
        xd[i][k] = x0 - h;
        double[] ym = ref.apply(xd);
        xd[i][k] = x0;
        double s = 0;
        for (int j = 0; j < yp.length; j++) if (yp[j] != ym[j]) s += (yp[j] - ym[j]) * r[j];
        return s / (2 * h);
    }

    /** {derivative, noise estimate} from the float op at steps h and h/2 (Richardson-extrapolated). */
    private double[] floatDiff(Tensor[] inputs, int i, int k, double[] r, float[] y0) {
        float x0 = inputs[i].data()[k];
        double h = 4e-3 * Math.max(1, Math.abs(x0));
        double[] d1 = floatCentral(inputs, i, k, r, y0, h);
        double[] d2 = floatCentral(inputs, i, k, r, y0, h / 2);
        double extrap = (4 * d2[0] - d1[0]) / 3;
        double noise = 4 * Math.max(d1[1], d2[1]) + Math.abs(d1[0] - d2[0]);
        return new double[]{extrap, noise};
    }

    private double[] floatCentral(Tensor[] inputs, int i, int k, double[] r, float[] y0, double h) {
        float x0 = inputs[i].data()[k];
        float xp = (float) (x0 + h), xm = (float) (x0 - h);
        double den = (double) xp - xm; // the step actually taken after rounding to float
        float[] yp = evalAt(inputs, i, k, xp), ym = evalAt(inputs, i, k, xm);
        double s = 0, mag = 0;
        for (int j = 0; j < yp.length; j++) {
            if (yp[j] == ym[j] && yp[j] == y0[j]) continue;
            s += ((double) yp[j] - ym[j]) * r[j];
            mag += (Math.abs(yp[j]) + Math.abs(ym[j])) * Math.abs(r[j]);
        }
        return new double[]{s / den, 0x1p-24 * mag / den};
    }

    private float[] evalAt(Tensor[] inputs, int i, int k, float v) {
        Tensor[] xs = new Tensor[inputs.length];
        for (int j = 0; j < xs.length; j++) xs[j] = inputs[j].copy();
        xs[i].data()[k] = v;
        try (var ng = Grad.noGrad()) {
            return f.apply(xs).data();
        }
    }

    private int[] coords(int n, Rng pick) {
        if (n <= maxCoords) {
            int[] c = new int[n];
            for (int k = 0; k < n; k++) c[k] = k;
            return c;
        }
        int[] perm = pick.permutation(n);
        int[] c = Arrays.copyOf(perm, maxCoords);
        c[0] = 0;
        c[1] = n - 1;
        return c;
    }

    static double[] toDouble(float[] f) {
        double[] d = new double[f.length];
        for (int i = 0; i < f.length; i++) d[i] = f[i];
        return d;
    }

    private static double maxAbs(double[] v) {
        double m = 0;
        for (double x : v) if (Double.isFinite(x)) m = Math.max(m, Math.abs(x));
        return m;
    }

    static int[] unravel(int flat, int[] shape) {
        int[] idx = new int[shape.length];
        for (int d = shape.length - 1; d >= 0; d--) {
            idx[d] = flat % shape[d];
            flat /= shape[d];
        }
        return idx;
    }

    private static String firstDiff(float[] a, float[] b) {
        for (int i = 0; i < a.length; i++) if (Float.floatToIntBits(a[i]) != Float.floatToIntBits(b[i])) return "index " + i + ": " + a[i] + " vs " + b[i];
        return "lengths " + a.length + " vs " + b.length;
    }
}
