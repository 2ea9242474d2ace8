// Tests of Fused.attention: composed form, finite differences, causality, KV-cache decoding, masks, errors.
package dev.biflow.engine;

import dev.biflow.engine.kernels.Parallel;
import org.junit.jupiter.api.Test;

import static dev.biflow.engine.FusedTest.assertBad;
import static dev.biflow.engine.FusedTest.assertClose;
import static dev.biflow.engine.FusedTest.gradCheck;
import static dev.biflow.engine.FusedTest.grads;
import static dev.biflow.engine.FusedTest.randn;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.quicktheories.QuickTheory.qt;
import static org.quicktheories.generators.SourceDSL.integers;
import static org.quicktheories.generators.SourceDSL.longs;

class FusedAttentionTest {

    /** Mask value for (b, h, i, j) of a mask broadcast (right-aligned) to (B, H, Tq, Tk). */
    static float maskAt(Tensor mask, int b, int h, int i, int j) {
        int[] s = mask.shape();
        int[] idx = {b, h, i, j};
        int[] mi = new int[s.length];
        for (int a = 0; a < s.length; a++) {
            int full = idx[4 - s.length + a];
            mi[a] = s[a] == 1 ? 0 : full;
        }
        return mask.get(mi);
    }

    /** Which keys each query may see: (B, H, Tq, Tk) flattened, from causal and the broadcast mask. */
    static boolean[] allowed(int nb, int nh, int tq, int tk, boolean causal, Tensor mask) {
        boolean[] ok = new boolean[nb * nh * tq * tk];
        for (int b = 0; b < nb; b++)
            for (int h = 0; h < nh; h++)
                for (int i = 0; i < tq; i++)
                    for (int j = 0; j < tk; j++)
                        ok[((b * nh + h) * tq + i) * tk + j] = (!causal || j <= i + (tk - tq))
                                && (mask == null || maskAt(mask, b, h, i, j) != 0f);
        return ok;
    }

    /** Double reference: naive loops; a row with no allowed key outputs zeros. */
    static double[] attentionRef(double[] q, double[] k, double[] v, int nb, int nh, int tq, int tk, int dh, int dv,
                                 boolean[] ok, double scale) {
        double[] out = new double[nb * nh * tq * dv];
        double[] s = new double[tk];
        for (int bh = 0; bh < nb * nh; bh++)
            for (int i = 0; i < tq; i++) {
                int row = (bh * tq + i) * tk;
                double m = Double.NEGATIVE_INFINITY;
                for (int j = 0; j < tk; j++) {
                    if (!ok[row + j]) continue;
                    double acc = 0;
                    for (int d = 0; d < dh; d++) acc += q[(bh * tq + i) * dh + d] * k[(bh * tk + j) * dh + d];
                    s[j] = scale * acc;
                    m = Math.max(m, s[j]);
                }
                if (m == Double.NEGATIVE_INFINITY) continue;
                double z = 0;
                for (int j = 0; j < tk; j++) if (ok[row + j]) z += (s[j] = Math.exp(s[j] - m));
                for (int j = 0; j < tk; j++) {
                    if (!ok[row + j]) continue;
                    double p = s[j] / z;
                    for (int d = 0; d < dv; d++) out[(bh * tq + i) * dv + d] += p * v[(bh * tk + j) * dv + d];
                }
            }
        return out;
    }

    /** softmax(scale q k^T + bias) v from primitive ops; bias is 0 where allowed and -1e9 where blocked. */
    static Tensor attentionComposed(Tensor q, Tensor k, Tensor v, boolean causal, Tensor mask, float scale) {
        int nb = q.size(0), nh = q.size(1), tq = q.size(2), tk = k.size(2);
        Tensor s = Ops.matmul(q, k, false, true).mul(scale);
        boolean[] ok = allowed(nb, nh, tq, tk, causal, mask);
        float[] bias = new float[ok.length];
        for (int i = 0; i < ok.length; i++) bias[i] = ok[i] ? 0f : -1e9f;
        Tensor p = FusedTest.softmaxComposed(Ops.add(s, Tensor.of(bias, nb, nh, tq, tk)), 3);
        return Ops.matmul(p, v, false, false);
    }

    /** A random 0/1 mask of one of several broadcast shapes (kind 1..4), about 70% ones. */
    static Tensor randomMask(Rng rng, int kind, int nb, int nh, int tq, int tk) {
        int[] shape = switch (kind) {
            case 1 -> new int[]{tq, tk};
            case 2 -> new int[]{1, nh, tq, tk};
            case 3 -> new int[]{nb, 1, tq, tk};
            default -> new int[]{nb, 1, 1, tk};
        };
        float[] m = new float[Shape.numel(shape)];
        for (int i = 0; i < m.length; i++) m[i] = rng.nextFloat() < 0.7f ? (rng.nextInt(2) == 0 ? 1f : -2.5f) : 0f;
        return Tensor.of(m, shape);
    }

    /**
     * The no-grad path (sampling) against the double reference for causal, bidirectional and
     * masked slices, Tq < Tk, head widths around the vector width, the flows' T = 49 and 196, and
     * the same bits on 1 and 2 threads.
     */
    @Test
    void inferencePathMatchesTheReference() {
        Rng rng = new Rng(11);
        int saved = dev.biflow.engine.kernels.Parallel.threads();
        try {
            for (int[] c : new int[][]{{2, 3, 49, 49, 32, 32}, {1, 2, 5, 5, 8, 8}, {2, 1, 1, 7, 17, 17}, {1, 2, 13, 29, 40, 20},
                    {3, 4, 66, 66, 16, 35}, {1, 1, 196, 196, 32, 32}})
                for (int mode = 0; mode < 3; mode++) {
                    int nb = c[0], nh = c[1], tq = c[2], tk = c[3], dh = c[4], dv = c[5];
                    boolean causal = mode == 1;
                    Tensor q = Tensor.randn(rng, nb, nh, tq, dh), k = Tensor.randn(rng, nb, nh, tk, dh), v = Tensor.randn(rng, nb, nh, tk, dv);
                    Tensor mask = mode == 2 ? randomMask(rng, 1 + (tq % 4), nb, nh, tq, tk) : null;
                    float scale = (float) (1 / Math.sqrt(dh));
                    double[] ref = attentionRef(Ref.D.of(q).v(), Ref.D.of(k).v(), Ref.D.of(v).v(), nb, nh, tq, tk, dh, dv,
                            allowed(nb, nh, tq, tk, causal, mask), scale);
                    float[][] got = new float[2][];
                    for (int t = 1; t <= 2; t++) {
                        dev.biflow.engine.kernels.Parallel.setThreads(t);
                        try (var ng = Grad.noGrad()) {
                            got[t - 1] = Fused.attention(q, k, v, causal, mask, scale).data();
                        }
                    }
                    String what = java.util.Arrays.toString(c) + " mode " + mode;
                    assertArrayEquals(got[0], got[1], what + ": 1 and 2 threads differ");
                    for (int i = 0; i < ref.length; i++)
                        assertEquals(ref[i], got[0][i], 2e-5 * (1 + Math.abs(ref[i])) * Math.sqrt(tk), what + " element " + i);
                }
        } finally {
            dev.biflow.engine.kernels.Parallel.setThreads(saved);
        }
    }

    @Test
    void matchesComposedOpsForwardAndGradient() {
        qt().withExamples(25).forAll(integers().between(1, 9), integers().between(0, 8), integers().between(1, 19), longs().all())
                .checkAssert((tq, extra, dh, seed) -> {
                    Rng rng = new Rng(seed);
                    int nb = 1 + rng.nextInt(2), nh = 1 + rng.nextInt(3), tk = tq + extra, dv = 1 + rng.nextInt(12);
                    boolean causal = rng.nextInt(2) == 0;
                    // a (Tq, Tk) mask that always allows key i + (Tk - Tq), so every row sees a key
                    Tensor mask = null;
                    if (rng.nextInt(2) == 0) {
                        float[] m = new float[tq * tk];
                        for (int i = 0; i < m.length; i++) m[i] = rng.nextFloat() < 0.6f ? 1f : 0f;
                        for (int i = 0; i < tq; i++) m[i * tk + i + extra] = 1f;
                        mask = Tensor.of(m, tq, tk);
                    }
                    Tensor mk = mask;
                    float scale = (float) (1 / Math.sqrt(dh));
                    Tensor q = randn(rng, nb, nh, tq, dh), k = randn(rng, nb, nh, tk, dh), v = randn(rng, nb, nh, tk, dv);
                    Tensor g = randn(rng, nb, nh, tq, dv);
                    FusedTest.Fn fused = in -> Fused.attention(in[0], in[1], in[2], causal, mk, scale);
                    FusedTest.Fn composed = in -> attentionComposed(in[0], in[1], in[2], causal, mk, scale);
                    String what = "attention q" + Shape.str(q.shape()) + " k" + Shape.str(k.shape()) + " causal " + causal + " mask " + (mk != null);
                    Tensor[] in = {q, k, v};
                    assertClose(what + " forward", fused.apply(in).data(), composed.apply(in).data(), 1e-4, 1e-5);
                    float[][] gf = grads(fused, g, q, k, v), gc = grads(composed, g, q, k, v);
                    for (int i = 0; i < 3; i++) assertClose(what + " grad " + "qkv".charAt(i), gf[i], gc[i], 1e-3, 1e-4);
                });
    }

    @Test
    void gradientMatchesFiniteDifferences() {
        qt().withExamples(30).forAll(integers().between(1, 9), integers().between(1, 11), integers().between(1, 9), longs().all())
                .checkAssert((tq, tk, dh, seed) -> {
                    Rng rng = new Rng(seed);
                    int nb = 1 + rng.nextInt(2), nh = 1 + rng.nextInt(2), dv = rng.nextInt(2) == 0 ? dh : 1 + rng.nextInt(9);
                    boolean causal = rng.nextInt(2) == 0;
                    int kind = rng.nextInt(5);
                    Tensor mask = kind == 0 ? null : randomMask(rng, kind, nb, nh, tq, tk);
                    double scale = 0.3 + rng.nextDouble();
                    boolean[] ok = allowed(nb, nh, tq, tk, causal, mask);
                    Tensor q = randn(rng, nb, nh, tq, dh), k = randn(rng, nb, nh, tk, dh), v = randn(rng, nb, nh, tk, dv);
                    gradCheck("attention q" + Shape.str(q.shape()) + " k" + Shape.str(k.shape()) + " v" + Shape.str(v.shape())
                                    + " causal " + causal + " mask " + (mask == null ? "none" : Shape.str(mask.shape())),
                            in -> Fused.attention(in[0], in[1], in[2], causal, mask, (float) scale),
                            d -> attentionRef(d[0], d[1], d[2], nb, nh, tq, tk, dh, dv, ok, (float) scale),
                            seed, q, k, v);
                });
    }

    @Test
    void longCausalSequencesSpanSeveralRowBlocks() {
        // 140 rows = 3 causal row blocks; one head runs the slice-serial path, two heads the slice-parallel one
        for (int nh : new int[]{1, 2}) {
            Rng rng = new Rng(40 + nh);
            int t = 140, dh = 4;
            Tensor q = randn(rng, 1, nh, t, dh), k = randn(rng, 1, nh, t, dh), v = randn(rng, 1, nh, t, dh);
            boolean[] ok = allowed(1, nh, t, t, true, null);
            gradCheck("attention causal T=140 H=" + nh, in -> Fused.attention(in[0], in[1], in[2], true, null, 0.5f),
                    d -> attentionRef(d[0], d[1], d[2], 1, nh, t, t, dh, dh, ok, 0.5), 3, 20, q, k, v);
        }
    }

    @Test
    void causalOutputIgnoresLaterKeysAndValues() {
        qt().withExamples(30).forAll(integers().between(1, 12), integers().between(1, 9), longs().all())
                .checkAssert((t, dh, seed) -> {
                    Rng rng = new Rng(seed);
                    int nb = 1 + rng.nextInt(2), nh = 1 + rng.nextInt(2), cut = rng.nextInt(t);
                    Tensor q = randn(rng, nb, nh, t, dh), k = randn(rng, nb, nh, t, dh), v = randn(rng, nb, nh, t, dh);
                    float[] k2 = k.toArray(), v2 = v.toArray();
                    for (int s = 0; s < nb * nh; s++)
                        for (int j = cut + 1; j < t; j++)
                            for (int d = 0; d < dh; d++) {
                                k2[(s * t + j) * dh + d] += 5f * (float) rng.nextGaussian();
                                v2[(s * t + j) * dh + d] += 5f * (float) rng.nextGaussian();
                            }
                    float[] a = Fused.attention(q, k, v, true, null, 0.4f).data();
                    float[] b = Fused.attention(q, Tensor.of(k2, nb, nh, t, dh), Tensor.of(v2, nb, nh, t, dh), true, null, 0.4f).data();
                    for (int s = 0; s < nb * nh; s++)
                        for (int i = 0; i <= cut; i++)
                            for (int d = 0; d < dh; d++) {
                                int o = (s * t + i) * dh + d;
                                assertEquals(a[o], b[o], 0f, "slice " + s + " position " + i + " (changed keys after " + cut + ")");
                            }
                });
    }

    @Test
    void incrementalDecodingReproducesFullCausalAttention() {
        qt().withExamples(25).forAll(integers().between(1, 14), integers().between(1, 11), longs().all())
                .checkAssert((t, dh, seed) -> {
                    Rng rng = new Rng(seed);
                    int nb = 1 + rng.nextInt(2), nh = 1 + rng.nextInt(3);
                    Tensor q = randn(rng, nb, nh, t, dh), k = randn(rng, nb, nh, t, dh), v = randn(rng, nb, nh, t, dh);
                    float scale = (float) Math.pow(dh, -0.5);
                    Tensor full = Fused.attention(q, k, v, true, null, scale);
                    for (int i = 0; i < t; i++) {
                        // one query against a KV cache holding keys 0..i
                        Tensor qi = Ops.narrow(q, 2, i, 1), kc = Ops.narrow(k, 2, 0, i + 1), vc = Ops.narrow(v, 2, 0, i + 1);
                        Tensor step = Fused.attention(qi, kc, vc, true, null, scale);
                        assertEquals(4, step.dim());
                        assertClose("decode step " + i, step.data(), Ops.narrow(full, 2, i, 1).data(), 1e-5, 1e-6);
                        // a decode step sees every cached key: the same as no causal mask at all
                        assertArrayEquals(step.data(), Fused.attention(qi, kc, vc, false, null, scale).data(), "step " + i);
                    }
                });
    }

    @Test
    void aQueryThatMaySeeNoKeyOutputsZerosWithoutNaN() {
        Rng rng = new Rng(9);
        int tq = 4, tk = 6, dh = 3;
        float[] m = new float[tq * tk];
        java.util.Arrays.fill(m, 1f);
        for (int j = 0; j < tk; j++) m[tk + j] = 0f; // query 1 is fully blocked
        Tensor mask = Tensor.of(m, tq, tk);
        Tensor q = randn(rng, 1, 2, tq, dh).requiresGrad(true), k = randn(rng, 1, 2, tk, dh).requiresGrad(true),
                v = randn(rng, 1, 2, tk, dh).requiresGrad(true);
        Tensor out = Fused.attention(q, k, v, false, mask, 1f);
        for (float x : out.data()) assertTrue(Float.isFinite(x));
        for (int h = 0; h < 2; h++)
            for (int d = 0; d < dh; d++) assertEquals(0f, out.get(0, h, 1, d));
        out.sum().backward();
        for (Tensor t : new Tensor[]{q, k, v}) for (float x : t.gradData()) assertTrue(Float.isFinite(x));
        for (int h = 0; h < 2; h++)
            for (int d = 0; d < dh; d++) assertEquals(0f, q.grad().get(0, h, 1, d));
        // causal with Tq > Tk: the first Tq - Tk queries see no key
        Tensor q2 = randn(rng, 1, 1, 5, dh), k2 = randn(rng, 1, 1, 2, dh), v2 = randn(rng, 1, 1, 2, dh);
        Tensor o2 = Fused.attention(q2, k2, v2, true, null, 1f);
        for (int i = 0; i < 3; i++) for (int d = 0; d < dh; d++) assertEquals(0f, o2.get(0, 0, i, d));
        assertArrayEquals(Ops.narrow(v2, 2, 0, 1).data(), Ops.narrow(o2, 2, 3, 1).data(), "query 3 sees only key 0");
    }

    @Test
    void gradientsFlowToOnlyTheInputsThatNeedThem() {
        Rng rng = new Rng(21);
        Tensor q = randn(rng, 2, 2, 5, 4), k = randn(rng, 2, 2, 7, 4), v = randn(rng, 2, 2, 7, 3), g = randn(rng, 2, 2, 5, 3);
        float[][] all = grads(in -> Fused.attention(in[0], in[1], in[2], true, null, 0.5f), g, q, k, v);
        Tensor vl = v.copy().requiresGrad(true);
        Fused.attention(q, k, vl, true, null, 0.5f).backward(g);
        assertArrayEquals(all[2], vl.gradData());
        Tensor ql = q.copy().requiresGrad(true);
        Fused.attention(ql, k, v, true, null, 0.5f).backward(g);
        assertArrayEquals(all[0], ql.gradData());
        // the same tensor as q, k and v (self-attention on raw tokens) accumulates all three
        Tensor x = randn(rng, 1, 1, 6, 4);
        gradCheck("attention(x, x, x)", in -> Fused.attention(in[0], in[0], in[0], true, null, 0.7f),
                d -> attentionRef(d[0], d[0], d[0], 1, 1, 6, 6, 4, 4, allowed(1, 1, 6, 6, true, null), 0.7), 1, x);
    }

    @Test
    void resultsDoNotDependOnTheThreadCount() {
        Rng rng = new Rng(31);
        Tensor q = randn(rng, 3, 2, 70, 8), k = randn(rng, 3, 2, 70, 8), v = randn(rng, 3, 2, 70, 8), g = randn(rng, 3, 2, 70, 8);
        FusedTest.Fn f = in -> Fused.attention(in[0], in[1], in[2], true, null, 0.35f);
        int before = Parallel.threads();
        float[] y1;
        float[][] g1;
        try {
            Parallel.setThreads(1);
            y1 = f.apply(new Tensor[]{q, k, v}).data();
            g1 = grads(f, g, q, k, v);
            Parallel.setThreads(Math.max(3, before));
            assertArrayEquals(y1, f.apply(new Tensor[]{q, k, v}).data());
            float[][] g2 = grads(f, g, q, k, v);
            for (int i = 0; i < 3; i++) assertArrayEquals(g1[i], g2[i], "gradient " + i);
        } finally {
            Parallel.setThreads(before);
        }
    }

    @Test
    void inferenceUnderNoGradMatchesTheRecordedForward() {
        Rng rng = new Rng(8);
        Tensor q = randn(rng, 2, 2, 9, 6).requiresGrad(true), k = randn(rng, 2, 2, 9, 6), v = randn(rng, 2, 2, 9, 6);
        float[] recorded = Fused.attention(q, k, v, true, null, 0.4f).data();
        try (var ng = Grad.noGrad()) {
            assertArrayEquals(recorded, Fused.attention(q, k, v, true, null, 0.4f).data());
        }
    }

    @Test
    void rejectsBadShapes() {
        assertBad(() -> Fused.attention(Tensor.zeros(2, 4, 10, 32), Tensor.zeros(2, 4, 10, 16), Tensor.zeros(2, 4, 10, 16), true, null, 1f),
                "attention", "q is (2, 4, 10, 32)", "k is (2, 4, 10, 16)", "head dims must match");
        assertBad(() -> Fused.attention(Tensor.zeros(4, 10, 32), Tensor.zeros(2, 4, 10, 32), Tensor.zeros(2, 4, 10, 32), false, null, 1f),
                "attention", "q", "rank-4", "(4, 10, 32)");
        assertBad(() -> Fused.attention(Tensor.zeros(2, 4, 10, 8), Tensor.zeros(2, 3, 10, 8), Tensor.zeros(2, 3, 10, 8), false, null, 1f),
                "attention", "(2, 3, 10, 8)", "(B, H)");
        assertBad(() -> Fused.attention(Tensor.zeros(2, 4, 10, 8), Tensor.zeros(2, 4, 10, 8), Tensor.zeros(2, 4, 9, 8), false, null, 1f),
                "attention", "v is (2, 4, 9, 8)", "Tk");
        assertBad(() -> Fused.attention(Tensor.zeros(2, 4, 10, 8), Tensor.zeros(2, 4, 12, 8), Tensor.zeros(2, 4, 12, 8), true,
                Tensor.ones(10, 10), 1f), "attention", "mask is (10, 10)", "(2, 4, 10, 12)", "broadcast");
        assertBad(() -> Fused.attention(Tensor.zeros(2, 4, 10, 8), Tensor.zeros(2, 4, 12, 8), Tensor.zeros(2, 4, 12, 8), true,
                Tensor.ones(3, 4, 10, 12), 1f), "attention", "mask is (3, 4, 10, 12)");
        assertBad(() -> Fused.attention(Tensor.zeros(1, 1, 2, 0), Tensor.zeros(1, 1, 2, 0), Tensor.zeros(1, 1, 2, 3), false, null, 1f),
                "attention", "Dh");
    }
}
