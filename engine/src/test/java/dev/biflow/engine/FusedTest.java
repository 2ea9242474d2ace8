// Tests of the fused softmax / log-softmax / cross-entropy / MSE ops, and the gradient-check helpers the Fused*Test files share.
package dev.biflow.engine;

import org.junit.jupiter.api.Test;

import java.util.Arrays;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static org.quicktheories.QuickTheory.qt;
import static org.quicktheories.generators.SourceDSL.integers;
import static org.quicktheories.generators.SourceDSL.longs;

/**
 * Each fused op is checked three ways: its forward against the same function composed from
 * primitive {@link Ops} (and/or a double-precision scalar reference), its hand-written gradient
 * against central differences of the double reference, and its defining properties. Shapes come
 * from QuickTheories and include sizes that are not multiples of the vector length.
 */
class FusedTest {

    // ================================================================ shared helpers

    /** The op under test on float tensors (inputs are leaves that require grad). */
    @FunctionalInterface
    interface Fn { Tensor apply(Tensor[] x); }

    /** The same function in double precision: row-major input values to row-major output values. */
    @FunctionalInterface
    interface RefFn { double[] apply(double[][] x); }

    static double[] dbl(float[] f) {
        double[] d = new double[f.length];
        for (int i = 0; i < f.length; i++) d[i] = f[i];
        return d;
    }

    static Tensor randn(Rng rng, int... shape) { return Tensor.randn(rng, shape); }

    /** |a - e| <= rtol |e| + atol for every element, with a message naming the first failure. */
    static void assertClose(String what, float[] actual, double[] expected, double rtol, double atol) {
        assertEquals(expected.length, actual.length, what + ": length");
        for (int i = 0; i < actual.length; i++) {
            double tol = rtol * Math.abs(expected[i]) + atol;
            if (!(Math.abs(actual[i] - expected[i]) <= tol))
                fail(what + ": element " + i + " is " + actual[i] + ", expected " + expected[i] + " (tol " + tol + ")");
        }
    }

    static void assertClose(String what, float[] actual, float[] expected, double rtol, double atol) {
        assertClose(what, actual, dbl(expected), rtol, atol);
    }

    /** Gradient check over every element of small inputs (at most 300 sampled elements per input). */
    static void gradCheck(String name, Fn f, RefFn ref, long seed, Tensor... inputs) {
        gradCheck(name, f, ref, seed, 300, inputs);
    }

    /**
     * Checks forward and gradient of f against ref. The loss is L = sum(f(x) * R) for a random R,
     * so one backward pass gives the vector-Jacobian product for every output. The numerical side
     * is a central difference of the double reference with step 1e-6 |x|: exact to ~1e-9, so the
     * tolerance only absorbs float32 error in the op under test.
     */
    static void gradCheck(String name, Fn f, RefFn ref, long seed, int maxPerInput, Tensor... inputs) {
        Tensor[] leaves = new Tensor[inputs.length];
        double[][] xs = new double[inputs.length][];
        for (int i = 0; i < inputs.length; i++) {
            leaves[i] = inputs[i].copy().requiresGrad(true);
            xs[i] = dbl(inputs[i].data());
        }
        Tensor out = f.apply(leaves);
        double[] refOut = ref.apply(xs);
        assertClose(name + " forward", out.data(), refOut, 1e-4, 1e-5);
        Rng rng = new Rng(seed * 31 + 7);
        float[] r = new float[out.numel()];
        rng.fillNormal(r);
        double[] rd = dbl(r);
        out.backward(Tensor.of(r, out.shape()));
        for (int i = 0; i < inputs.length; i++) {
            int n = xs[i].length;
            float[] ga = leaves[i].gradData() == null ? new float[n] : leaves[i].gradData();
            int[] idx;
            if (n <= maxPerInput) {
                idx = new int[n];
                for (int e = 0; e < n; e++) idx[e] = e;
            } else {
                idx = new int[maxPerInput];
                for (int e = 0; e < maxPerInput; e++) idx[e] = rng.nextInt(n);
            }
            double[] num = new double[idx.length];
            double maxAbs = 0;
            for (int t = 0; t < idx.length; t++) {
                int e = idx[t];
                double x0 = xs[i][e], h = 1e-6 * Math.max(1, Math.abs(x0));
                xs[i][e] = x0 + h;
                double lp = dot(ref.apply(xs), rd);
                xs[i][e] = x0 - h;
                double lm = dot(ref.apply(xs), rd);
                xs[i][e] = x0;
                num[t] = (lp - lm) / (2 * h);
                maxAbs = Math.max(maxAbs, Math.abs(num[t]));
            }
            for (int t = 0; t < idx.length; t++) {
                double tol = 3e-4 * Math.abs(num[t]) + 5e-5 * Math.max(1, maxAbs);
                double a = ga[idx[t]];
                if (!(Math.abs(a - num[t]) <= tol))
                    fail(name + ": gradient of input " + i + " " + Shape.str(inputs[i].shape()) + " at element " + idx[t]
                            + " is " + a + ", finite differences give " + num[t] + " (tol " + tol + ")");
            }
        }
    }

    static double dot(double[] a, double[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) s += a[i] * b[i];
        return s;
    }

    /** Gradients of sum(f(x) * seed) with respect to each input, via backward on fresh leaves. */
    static float[][] grads(Fn f, Tensor seed, Tensor... inputs) {
        Tensor[] leaves = new Tensor[inputs.length];
        for (int i = 0; i < inputs.length; i++) leaves[i] = inputs[i].copy().requiresGrad(true);
        f.apply(leaves).backward(seed);
        float[][] g = new float[inputs.length][];
        for (int i = 0; i < inputs.length; i++)
            g[i] = leaves[i].gradData() == null ? new float[inputs[i].numel()] : leaves[i].gradData();
        return g;
    }

    /** Asserts that op throws IllegalArgumentException whose message contains every fragment. */
    static void assertBad(Runnable op, String... fragments) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, op::run);
        for (String s : fragments)
            assertTrue(e.getMessage().contains(s), "message \"" + e.getMessage() + "\" should contain \"" + s + "\"");
    }

    // ================================================================ double references

    /** softmax / log-softmax along axis of a row-major array of the given shape. */
    static double[] softmaxRef(double[] x, int[] shape, int axis, boolean log) {
        int outer = Shape.prod(shape, 0, axis), n = shape[axis], inner = Shape.prod(shape, axis + 1, shape.length);
        double[] y = new double[x.length];
        for (int o = 0; o < outer; o++)
            for (int i = 0; i < inner; i++) {
                double m = Double.NEGATIVE_INFINITY;
                for (int j = 0; j < n; j++) m = Math.max(m, x[(o * n + j) * inner + i]);
                double s = 0;
                for (int j = 0; j < n; j++) s += Math.exp(x[(o * n + j) * inner + i] - m);
                for (int j = 0; j < n; j++) {
                    int k = (o * n + j) * inner + i;
                    y[k] = log ? x[k] - m - Math.log(s) : Math.exp(x[k] - m) / s;
                }
            }
        return y;
    }

    static double[] crossEntropyRef(double[] x, int n, int c, int[] t) {
        double[] ls = softmaxRef(x, new int[]{n, c}, 1, true);
        double s = 0;
        for (int i = 0; i < n; i++) s -= ls[i * c + t[i]];
        return new double[]{s / n};
    }

    static double[] mseRef(double[] a, double[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) s += (a[i] - b[i]) * (a[i] - b[i]);
        return new double[]{s / a.length};
    }

    // ================================================================ composed forms from primitive ops

    static Tensor softmaxComposed(Tensor x, int axis) {
        Tensor m = Ops.max(x, new int[]{axis}, true).detach();
        Tensor e = Ops.exp(Ops.sub(x, m));
        return Ops.div(e, Ops.sum(e, new int[]{axis}, true));
    }

    static Tensor logSoftmaxComposed(Tensor x, int axis) {
        Tensor m = Ops.max(x, new int[]{axis}, true).detach();
        Tensor xs = Ops.sub(x, m);
        return Ops.sub(xs, Ops.log(Ops.sum(Ops.exp(xs), new int[]{axis}, true)));
    }

    // ================================================================ softmax and log-softmax

    /** A random shape of rank 1..3 from a size budget, with sizes 1..37 (not multiples of 8 mostly). */
    private static int[] shapeOf(int rank, int a, int b, int c) {
        return Arrays.copyOf(new int[]{a, b, c}, rank);
    }

    @Test
    void softmaxMatchesComposedOpsForwardAndGradient() {
        qt().withExamples(40).forAll(integers().between(1, 3), integers().between(1, 37), integers().between(1, 5), longs().all())
                .checkAssert((rank, n1, n2, seed) -> {
                    Rng rng = new Rng(seed);
                    int[] shape = shapeOf(rank, n1, n2, 1 + rng.nextInt(4));
                    int axis = rng.nextInt(rank) - (rng.nextInt(2) == 0 ? rank : 0); // also negative axes
                    Tensor x = randn(rng, shape).mul(3f);
                    Tensor seedT = randn(rng, shape);
                    for (boolean log : new boolean[]{false, true}) {
                        Fn fused = in -> log ? Fused.logSoftmax(in[0], axis) : Fused.softmax(in[0], axis);
                        int ax = axis < 0 ? axis + rank : axis;
                        Fn composed = in -> log ? logSoftmaxComposed(in[0], ax) : softmaxComposed(in[0], ax);
                        String what = (log ? "logSoftmax" : "softmax") + Shape.str(shape) + " axis " + axis;
                        assertClose(what + " forward", fused.apply(new Tensor[]{x}).data(), composed.apply(new Tensor[]{x}).data(), 1e-5, 1e-6);
                        assertClose(what + " gradient", grads(fused, seedT, x)[0], grads(composed, seedT, x)[0], 1e-4, 1e-5);
                    }
                });
    }

    @Test
    void softmaxGradientMatchesFiniteDifferences() {
        qt().withExamples(20).forAll(integers().between(1, 3), integers().between(1, 23), integers().between(1, 19), longs().all())
                .checkAssert((rank, n1, n2, seed) -> {
                    Rng rng = new Rng(seed);
                    int[] shape = shapeOf(rank, n1, n2, 1 + rng.nextInt(3));
                    int axis = rng.nextInt(rank);
                    Tensor x = randn(rng, shape).mul(2f);
                    gradCheck("softmax" + Shape.str(shape) + " axis " + axis, in -> Fused.softmax(in[0], axis),
                            d -> softmaxRef(d[0], shape, axis, false), seed, x);
                    gradCheck("logSoftmax" + Shape.str(shape) + " axis " + axis, in -> Fused.logSoftmax(in[0], axis),
                            d -> softmaxRef(d[0], shape, axis, true), seed, x);
                });
    }

    @Test
    void softmaxRowsSumToOneAndIgnoreAPerRowConstant() {
        qt().withExamples(40).forAll(integers().between(1, 9), integers().between(1, 70), longs().all())
                .checkAssert((rows, n, seed) -> {
                    Rng rng = new Rng(seed);
                    Tensor x = randn(rng, rows, n).mul(5f);
                    float[] shifted = x.toArray();
                    for (int r = 0; r < rows; r++) {
                        float cst = (float) (rng.nextGaussian() * 50);
                        for (int j = 0; j < n; j++) shifted[r * n + j] += cst;
                    }
                    Tensor y = Fused.softmax(x, -1), ys = Fused.softmax(Tensor.of(shifted, rows, n), -1);
                    for (int r = 0; r < rows; r++) {
                        double s = 0;
                        for (int j = 0; j < n; j++) {
                            float v = y.data()[r * n + j];
                            assertTrue(v >= 0f && v <= 1f, "probability out of [0, 1]: " + v);
                            s += v;
                        }
                        assertEquals(1.0, s, 1e-5, "row " + r + " sums to " + s);
                    }
                    // a constant up to 50 moves x by up to ~2^-18 relative in float: compare loosely
                    assertClose("shift invariance", ys.data(), y.data(), 1e-4, 1e-5);
                    Tensor ls = Fused.logSoftmax(x, 1);
                    for (int i = 0; i < ls.numel(); i++) assertEquals(Math.log(y.data()[i]), ls.data()[i], 1e-4 * (1 + Math.abs(ls.data()[i])));
                });
    }

    @Test
    void softmaxIsStableForHugeLogits() {
        Tensor x = Tensor.of(new float[]{1000f, 999f, -1000f, 0f, -3e38f, 3e38f}, 2, 3);
        float[] y = Fused.softmax(x, 1).data();
        for (float v : y) assertTrue(Float.isFinite(v), Arrays.toString(y));
        assertEquals(1f / (1f + (float) Math.exp(-1)), y[0], 1e-6f);
        assertEquals(1f, y[5], 0f);
        float[] ls = Fused.logSoftmax(x, 1).data();
        assertEquals(-2000f - (float) Math.log1p(Math.exp(-1)), ls[2], 1e-3f);
        assertTrue(Float.isFinite(ls[0]) && Float.isFinite(ls[1]));
    }

    @Test
    void softmaxRejectsBadAxes() {
        assertBad(() -> Fused.softmax(Tensor.zeros(2, 3), 2), "softmax", "axis 2", "rank 2");
        assertBad(() -> Fused.logSoftmax(Tensor.zeros(2, 3), -3), "logSoftmax", "axis -3");
        assertBad(() -> Fused.softmax(Tensor.scalar(1f), 0), "softmax", "scalar");
    }

    // ================================================================ cross-entropy

    @Test
    void crossEntropyMatchesComposedOpsAndFiniteDifferences() {
        qt().withExamples(30).forAll(integers().between(1, 9), integers().between(1, 41), longs().all())
                .checkAssert((n, c, seed) -> {
                    Rng rng = new Rng(seed);
                    Tensor logits = randn(rng, n, c).mul(3f);
                    int[] t = new int[n];
                    float[] onehot = new float[n * c];
                    for (int i = 0; i < n; i++) {
                        t[i] = rng.nextInt(c);
                        onehot[i * c + t[i]] = 1f;
                    }
                    Tensor oh = Tensor.of(onehot, n, c);
                    Fn fused = in -> Fused.crossEntropy(in[0], t);
                    Fn composed = in -> Ops.mul(logSoftmaxComposed(in[0], 1), oh).sum().mul(-1f / n);
                    String what = "crossEntropy(" + n + ", " + c + ")";
                    assertClose(what + " forward", fused.apply(new Tensor[]{logits}).data(), composed.apply(new Tensor[]{logits}).data(), 1e-5, 1e-6);
                    Tensor one = Tensor.scalar(1f);
                    assertClose(what + " gradient", grads(fused, one, logits)[0], grads(composed, one, logits)[0], 1e-4, 1e-6);
                    gradCheck(what, fused, d -> crossEntropyRef(d[0], n, c, t), seed, logits);
                });
    }

    @Test
    void crossEntropyRejectsBadTargets() {
        Tensor x = Tensor.zeros(3, 10);
        assertBad(() -> Fused.crossEntropy(x, new int[]{0, 12, 1}), "crossEntropy", "targets[1] = 12", "C = 10");
        assertBad(() -> Fused.crossEntropy(x, new int[]{0, 1, -1}), "targets[2] = -1", "C = 10");
        assertBad(() -> Fused.crossEntropy(x, new int[]{0, 1}), "crossEntropy", "(3, 10)", "2 targets");
        assertBad(() -> Fused.crossEntropy(Tensor.zeros(3), new int[]{0, 1, 2}), "crossEntropy", "(N, C)", "(3)");
    }

    // ================================================================ MSE

    @Test
    void mseMatchesComposedOpsAndFiniteDifferences() {
        qt().withExamples(30).forAll(integers().between(1, 5), integers().between(1, 37), longs().all())
                .checkAssert((r, c, seed) -> {
                    Rng rng = new Rng(seed);
                    Tensor a = randn(rng, r, c), b = randn(rng, r, c);
                    Fn fused = in -> Fused.mse(in[0], in[1]);
                    Fn composed = in -> Ops.mean(Ops.square(Ops.sub(in[0], in[1])));
                    assertClose("mse forward", fused.apply(new Tensor[]{a, b}).data(), composed.apply(new Tensor[]{a, b}).data(), 1e-5, 1e-7);
                    float[][] gf = grads(fused, Tensor.scalar(1f), a, b), gc = grads(composed, Tensor.scalar(1f), a, b);
                    assertClose("mse grad a", gf[0], gc[0], 1e-5, 1e-7);
                    assertClose("mse grad b", gf[1], gc[1], 1e-5, 1e-7);
                    gradCheck("mse", fused, d -> mseRef(d[0], d[1]), seed, a, b);
                });
    }

    @Test
    void mseOfATensorWithItselfHasZeroGradient() {
        Tensor a = Tensor.of(new float[]{1, 2, 3}, 3).requiresGrad(true);
        Tensor l = Fused.mse(a, a);
        assertEquals(0f, l.item());
        l.backward();
        assertEquals(0f, Math.abs(a.gradData()[0]) + Math.abs(a.gradData()[1]) + Math.abs(a.gradData()[2]));
    }

    @Test
    void mseOfALargeTensorSumsInDoublePrecision() {
        int n = 100_003; // several blocks, ragged end
        float[] a = new float[n];
        Arrays.fill(a, 1e-3f);
        Tensor l = Fused.mse(Tensor.of(a, n), Tensor.zeros(n));
        assertEquals(1e-6, l.item(), 1e-12);
    }

    @Test
    void mseRejectsMismatchedShapes() {
        assertBad(() -> Fused.mse(Tensor.zeros(2, 3), Tensor.zeros(3, 2)), "mse", "(2, 3)", "(3, 2)", "match");
        assertBad(() -> Fused.mse(Tensor.zeros(2, 3), Tensor.zeros(1, 3)), "mse", "(1, 3)");
    }
}
