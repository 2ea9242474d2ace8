// Attention backward on every backend against a double reference, and Fused.attention routed to OpenCL against the CPU.
package dev.biflow.gpu;

import dev.biflow.engine.Backend;
import dev.biflow.engine.Fused;
import dev.biflow.engine.Grad;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.kernels.Attention;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.quicktheories.QuickTheory.qt;
import static org.quicktheories.generators.SourceDSL.integers;
import static org.quicktheories.generators.SourceDSL.longs;

/**
 * {@link Backend#attentionForward} (save = true) then {@link Backend#attentionBackward} on "cpu"
 * (the engine's default code) and "opencl" (AttentionKernel's log-sum-exp + AttentionBackwardKernel),
 * graded against {@link Ref#attentionBackward} in double. Tolerances (float32):
 * output 2e-5 + 1e-4 relative (as the forward suite); each gradient element
 * |err| <= 1e-5 + 1e-4 * (sum of |terms| it adds up), the GEMM rule, since dq, dk and dv are sums of
 * up to Tk (Tq) products of softmax weights and dot products. Shapes cover causal, bidirectional,
 * masked (including a query that sees no key), Tq < Tk, temperature, Dv != Dh, and T on both
 * sides of the 64-item work-group (T = 1 .. 90, 49, 63, 64, 65, 127). The gradients are added into
 * arrays that already hold values, and some are not wanted (null), as Fused.attention asks.
 *
 * <p>Then Fused.attention with Backend.use(opencl): forward and backward must go to the device
 * (exact launch and copy counts, printed) and give the CPU backend's output and gradients within
 * 1e-4 + 1e-4 relative.
 */
class AttentionBackwardConformanceTest {

    @ParameterizedTest @ValueSource(strings = {"cpu", "opencl"})
    void backwardRandomShapesMatchDoubleReference(String name) {
        Backend be = BackendConformanceTest.backend(name);
        qt().withExamples(30).forAll(integers().between(1, 2), integers().between(1, 3), integers().between(1, 90), longs().all())
                .checkAssert((nb, nh, t, seed) -> {
                    Random r = new Random(seed);
                    int tq = switch (r.nextInt(4)) { case 0 -> 1; case 1 -> 1 + r.nextInt(t); default -> t; }; // Tq <= Tk
                    int dh = 1 + r.nextInt(24), dv = r.nextBoolean() ? dh : 1 + r.nextInt(24);
                    float temperature = r.nextBoolean() ? 1f : 0.5f + r.nextFloat();
                    check(be, nb, nh, tq, t, dh, dv, r.nextBoolean(), r.nextInt(3), (float) (1 / Math.sqrt(dh)) / temperature, r);
                });
    }

    @ParameterizedTest @ValueSource(strings = {"cpu", "opencl"})
    void backwardAroundTheWorkGroupSize(String name) {
        Backend be = BackendConformanceTest.backend(name);
        Random r = new Random(11);
        for (int t : new int[]{49, 63, 64, 65, 127})
            for (int kind = 0; kind < 3; kind++) {
                check(be, 2, 2, t, t, 16, 16, true, kind, 0.25f, r);
                check(be, 1, 3, t, t, 8, 12, false, kind, 0.35f, r);
            }
        check(be, 4, 2, 49, 49, 64, 64, true, 0, 0.125f, r); // TarFlow-sized
        check(be, 2, 2, 3, 70, 16, 16, true, 0, 0.25f, r);   // Tq < Tk: the causal shift
    }

    /** mask kind: 0 none, 1 (1, 1, Tq, Tk), 2 (B, 1, Tq, Tk); masks block a quarter of the keys and all of query 0's. */
    private static void check(Backend be, int nb, int nh, int tq, int tk, int dh, int dv, boolean causal, int kind, float scale, Random r) {
        float[] mask = null;
        int[] ms = kind == 1 ? new int[]{1, 1, tq, tk} : kind == 2 ? new int[]{nb, 1, tq, tk} : null;
        if (ms != null) {
            mask = new float[ms[0] * ms[1] * tq * tk];
            for (int i = 0; i < mask.length; i++) mask[i] = r.nextInt(4) == 0 ? 0f : 1f;
            java.util.Arrays.fill(mask, 0, tk, 0f); // a query that sees no key
        }
        float[] q = Ref.rand(r, nb * nh * tq * dh, 1f), k = Ref.rand(r, nb * nh * tk * dh, 1f), v = Ref.rand(r, nb * nh * tk * dv, 1f);
        float[] dout = Ref.rand(r, nb * nh * tq * dv, 1f), out = new float[nb * nh * tq * dv];
        String what = be.name() + " attention backward B" + nb + " H" + nh + " Tq" + tq + " Tk" + tk + " Dh" + dh + " Dv" + dv
                + (causal ? " causal" : "") + (mask != null ? " masked" : "") + " scale " + scale;
        Attention.Layouts lay = Attention.Layouts.contiguous(nh, tq, tk, dh, dv);
        Object saved = be.attentionForward(q, k, v, out, lay, nb, nh, tq, tk, dh, dv, causal, mask, ms, scale, true);
        Ref.assertClose(what + ": out", Ref.attention(q, k, v, nb, nh, tq, tk, dh, dv, causal, mask, ms, scale), out, out.length, 2e-5, 1e-4);
        int skip = r.nextInt(4); // 0..2: that gradient is not wanted
        float[] q0 = Ref.rand(r, q.length, 1f), k0 = Ref.rand(r, k.length, 1f), v0 = Ref.rand(r, v.length, 1f); // values already there
        float[] gq = skip == 0 ? null : q0.clone(), gk = skip == 1 ? null : k0.clone(), gv = skip == 2 ? null : v0.clone();
        be.attentionBackward(saved, dout, q, k, v, gq, gk, gv, lay, nb, nh, tq, tk, dh, dv, causal, mask, ms, scale);
        double[][] want = Ref.attentionBackward(q, k, v, dout, nb, nh, tq, tk, dh, dv, causal, mask, ms, scale);
        if (gq != null) assertGrad(what + ": dq", want[0], want[3], q0, gq);
        if (gk != null) assertGrad(what + ": dk", want[1], want[4], k0, gk);
        if (gv != null) assertGrad(what + ": dv", want[2], want[5], v0, gv);
    }

    private static void assertGrad(String what, double[] want, double[] absSum, float[] before, float[] got) {
        for (int i = 0; i < want.length; i++) {
            double g = (double) got[i] - before[i], tol = 1e-5 + 1e-4 * absSum[i];
            if (!(Math.abs(g - want[i]) <= tol))
                throw new AssertionError(what + ": element " + i + " is " + g + ", expected " + want[i] + " (tolerance " + tol + ")");
        }
    }

    // ---------------------------------------------------------------- Fused.attention routed to the device

    @Test
    void fusedAttentionForwardAndBackwardRunOnOpenClAndMatchCpu() {
        OpenClBackend cl = (OpenClBackend) BackendConformanceTest.backend("opencl");
        fused(cl, 2, 2, 49, 49, 16, true, false, 0.25f);
        fused(cl, 1, 3, 70, 70, 8, false, true, 0.35f);  // bidirectional, (Tq, Tk) mask
        fused(cl, 2, 1, 5, 65, 16, true, false, 0.25f);   // Tq < Tk
    }

    private static void fused(OpenClBackend cl, int nb, int nh, int tq, int tk, int dh, boolean causal, boolean masked, float scale) {
        Rng rng = new Rng(nb * 1000L + tq);
        Tensor q = Tensor.randn(rng, nb, nh, tq, dh), k = Tensor.randn(rng, nb, nh, tk, dh), v = Tensor.randn(rng, nb, nh, tk, dh);
        Tensor dout = Tensor.randn(rng, nb, nh, tq, dh);
        Tensor mask = null;
        if (masked) {
            float[] m = new float[tq * tk];
            for (int i = 0; i < m.length; i++) m[i] = rng.nextInt(4) == 0 ? 0f : 1f;
            mask = Tensor.of(m, tq, tk); // rank 2: broadcast over (B, H)
        }
        String what = "Fused.attention B" + nb + " H" + nh + " Tq" + tq + " Tk" + tk + " Dh" + dh + (causal ? " causal" : "") + (masked ? " masked" : "");
        Backend before = Backend.active();
        try {
            Backend.use(Backend.CPU);
            Tensor[] cpu = run(q, k, v, dout, causal, mask, scale);
            Backend.use(cl);
            Transfers tr = cl.transfers();
            tr.reset();
            Tensor[] dev = runCounted(q, k, v, dout, causal, mask, scale, tr, what, masked ? 1 : 0);
            String[] names = {"out", "dq", "dk", "dv"};
            for (int i = 0; i < 4; i++) {
                float[] w = cpu[i].data(), g = dev[i].data();
                for (int j = 0; j < w.length; j++)
                    if (!(Math.abs(w[j] - g[j]) <= 1e-4 + 1e-4 * Math.abs(w[j])))
                        throw new AssertionError(what + ": " + names[i] + "[" + j + "] is " + g[j] + " on OpenCL, " + w[j] + " on the CPU");
            }
            // Sampling (no graph): the fused forward only, nothing saved.
            tr.reset();
            try (var ng = Grad.noGrad()) {
                Fused.attention(q, k, v, causal, mask, scale);
            }
            assertEquals(1, tr.launches(), what + " no-grad launches");
            assertEquals(3 + (masked ? 1 : 0), tr.puts(), what + " no-grad puts");
            assertEquals(1, tr.gets(), what + " no-grad gets");
        } finally {
            Backend.use(before);
        }
    }

    /** Output and gradients of sum(dout * attention(q, k, v)) on the active backend, from fresh leaves. */
    private static Tensor[] run(Tensor q, Tensor k, Tensor v, Tensor dout, boolean causal, Tensor mask, float scale) {
        Tensor lq = leaf(q), lk = leaf(k), lv = leaf(v);
        Tensor out = Fused.attention(lq, lk, lv, causal, mask, scale);
        out.backward(dout);
        return new Tensor[]{out, lq.grad(), lk.grad(), lv.grad()};
    }

    private static Tensor[] runCounted(Tensor q, Tensor k, Tensor v, Tensor dout, boolean causal, Tensor mask, float scale,
                                       Transfers tr, String what, int maskPuts) {
        Tensor lq = leaf(q), lk = leaf(k), lv = leaf(v);
        Tensor out = Fused.attention(lq, lk, lv, causal, mask, scale);
        // forward: q, k, v (+ mask) up; out and the per-row log-sum-exp down; one launch
        System.out.println("[attention-backward] " + what + " forward: " + tr);
        assertEquals(1, tr.launches(), what + " forward launches");
        assertEquals(3 + maskPuts, tr.puts(), what + " forward puts");
        assertEquals(2, tr.gets(), what + " forward gets");
        tr.reset();
        out.backward(dout);
        // backward: q, k, v, dout, lse (+ mask) up; dq, dk, dv down; two launches (rows, keys)
        System.out.println("[attention-backward] " + what + " backward: " + tr);
        assertEquals(2, tr.launches(), what + " backward launches");
        assertEquals(5 + maskPuts, tr.puts(), what + " backward puts");
        assertEquals(3, tr.gets(), what + " backward gets");
        return new Tensor[]{out, lq.grad(), lk.grad(), lv.grad()};
    }

    private static Tensor leaf(Tensor t) { return Tensor.of(t.data().clone(), t.shape()).requiresGrad(true); }
}
