// The same kernel checks on every backend: CPU always, OpenCL when a device exists (skipped with the reason otherwise).
package dev.biflow.gpu;

import dev.biflow.engine.Backend;
import dev.biflow.engine.kernels.Attention;
import dev.biflow.engine.kernels.GemmEpilogue;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.quicktheories.QuickTheory.qt;
import static org.quicktheories.generators.SourceDSL.integers;
import static org.quicktheories.generators.SourceDSL.longs;

/**
 * Every check grades a backend against the double-precision {@link Ref}; since CPU and OpenCL meet
 * the same bound, they agree with each other within twice it. Tolerances (float32 kernels):
 * GEMM |err| <= 1e-5 + 1e-4 * sum_p |alpha a_ip b_pj| + |beta c| (a k-term float dot product is
 * within ~k * 6e-8 of that sum); attention 2e-5 absolute + 1e-4 relative.
 */
class BackendConformanceTest {
    private static OpenClBackend opencl;
    private static String openclMissing;

    /** The backend a test parameter names; OpenCL tests are skipped, with the reason, when there is no device. */
    static Backend backend(String name) {
        if (name.equals("cpu")) return Backend.CPU;
        synchronized (BackendConformanceTest.class) {
            if (opencl == null && openclMissing == null) {
                try {
                    opencl = OpenClBackend.open(System.getProperty("biflow.test.device", "opencl"));
                    System.out.println("[conformance] OpenCL backend: " + opencl.name());
                } catch (OpenClUnavailableException e) {
                    if (!e.noDevice()) throw e; // a kernel that does not build or falls back is a failure, not a skip
                    openclMissing = e.getMessage();
                    System.out.println("[conformance] skipping OpenCL tests: " + openclMissing);
                }
            }
        }
        Assumptions.assumeTrue(opencl != null, () -> "no OpenCL device: " + openclMissing);
        return opencl;
    }

    @AfterAll
    static void close() {
        if (opencl != null) System.out.println("[conformance] " + opencl.name() + ": " + opencl.transfers());
    }

    // ---------------------------------------------------------------- GEMM

    @ParameterizedTest @ValueSource(strings = {"cpu", "opencl"})
    void gemmRandomShapesTransposesAndStrides(String name) {
        Backend be = backend(name);
        qt().withExamples(40).forAll(integers().between(1, 70), integers().between(1, 70), integers().between(1, 70), longs().all())
                .checkAssert((m, n, k, seed) -> checkGemm(be, m, n, k, seed));
    }

    @ParameterizedTest @ValueSource(strings = {"cpu", "opencl"})
    void gemmLargerThanOneTileEveryLayout(String name) {
        Backend be = backend(name);
        for (long seed = 0; seed < 4; seed++) checkGemm(be, 129, 257, 200, seed); // seed picks transA/transB
    }

    private static void checkGemm(Backend be, int m, int n, int k, long seed) {
        Random r = new Random(seed);
        boolean tA = (seed & 1) != 0, tB = (seed & 2) != 0;
        int padA = r.nextInt(3), padB = r.nextInt(3), padC = r.nextInt(3), aOff = r.nextInt(5), bOff = r.nextInt(5), cOff = r.nextInt(5);
        int lda = (tA ? m : k) + padA, ldb = (tB ? k : n) + padB, ldc = n + padC;
        float[] a = Ref.rand(r, aOff + (tA ? k : m) * lda, 1f), b = Ref.rand(r, bOff + (tB ? n : k) * ldb, 1f);
        float[] c = Ref.rand(r, cOff + m * ldc, 1f);
        float alpha = r.nextBoolean() ? 1f : (float) r.nextGaussian();
        float beta = switch (r.nextInt(3)) { case 0 -> 0f; case 1 -> 1f; default -> 0.5f; };
        if (beta == 0f) for (int i = 0; i < c.length; i++) if (r.nextInt(7) == 0) c[i] = Float.NaN; // beta 0 must not read C
        float[] c0 = c.clone();
        double[] abs = new double[m * n];
        double[] want = Ref.gemm(tA, tB, m, n, k, alpha, a, aOff, lda, b, bOff, ldb, beta, c0, cOff, ldc, abs);
        be.gemm(tA, tB, m, n, k, alpha, a, aOff, lda, b, bOff, ldb, beta, c, cOff, ldc, GemmEpilogue.NONE);
        String what = be.name() + " gemm " + m + "x" + n + "x" + k + (tA ? " A^T" : "") + (tB ? " B^T" : "");
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                float got = c[cOff + i * ldc + j];
                double tol = 1e-5 + 1e-4 * abs[i * n + j];
                if (!(Math.abs(got - want[i * n + j]) <= tol))
                    throw new AssertionError(what + ": C[" + i + "," + j + "] = " + got + ", expected " + want[i * n + j]);
            }
        // Padding between rows and before the offset is untouched.
        for (int i = 0; i < cOff; i++) assertEquals(Float.floatToRawIntBits(c0[i]), Float.floatToRawIntBits(c[i]), what + ": wrote before cOff");
        for (int i = 0; i < m; i++)
            for (int j = n; j < ldc && cOff + i * ldc + j < c.length; j++)
                assertEquals(Float.floatToRawIntBits(c0[cOff + i * ldc + j]), Float.floatToRawIntBits(c[cOff + i * ldc + j]), what + ": wrote padding");
    }

    /**
     * Each epilogue (bias, bias + GELU, residual, gated residual) on this backend agrees with the CPU backend's
     * fused one within twice the GEMM bound (the OpenCL backend runs them as host passes around its GEMM).
     */
    @ParameterizedTest @ValueSource(strings = {"cpu", "opencl"})
    void gemmEpiloguesAgreeWithTheCpuBackend(String name) {
        Backend be = backend(name);
        qt().withExamples(20).forAll(integers().between(1, 70), integers().between(1, 70), integers().between(1, 70), longs().all())
                .checkAssert((m, n, k, seed) -> {
                    Random r = new Random(seed);
                    int gRows = r.nextBoolean() ? 1 : m;
                    float[] a = Ref.rand(r, m * k, 1f), b = Ref.rand(r, n * k, 1f), bias = r.nextBoolean() ? Ref.rand(r, n, 1f) : null;
                    float[] res = Ref.rand(r, m * n, 1f), gate = Ref.rand(r, m / gRows * n, 1f);
                    GemmEpilogue epi = switch (r.nextInt(4)) {
                        case 0 -> GemmEpilogue.bias(bias);
                        case 1 -> GemmEpilogue.biasGelu(bias);
                        case 2 -> GemmEpilogue.biasAdd(bias, res, 0, n);
                        default -> GemmEpilogue.biasGatedAdd(bias, 0, res, 0, n, gate, 0, n, gRows);
                    };
                    float[] got = new float[m * n], cpu = new float[m * n];
                    be.gemm(false, true, m, n, k, 1f, a, 0, k, b, 0, k, 0f, got, 0, n, epi);
                    Backend.CPU.gemm(false, true, m, n, k, 1f, a, 0, k, b, 0, k, 0f, cpu, 0, n, epi);
                    double[] abs = new double[m * n];
                    Ref.gemm(false, true, m, n, k, 1f, a, 0, k, b, 0, k, 0f, new float[m * n], 0, n, abs);
                    String what = be.name() + " gemm " + m + "x" + n + "x" + k + " " + epi.getClass().getSimpleName() + (bias == null ? ", no bias" : "");
                    for (int i = 0; i < m * n; i++) {
                        // twice the GEMM bound, scaled by the gate, plus the epilogue's own roundings
                        double g = epi instanceof GemmEpilogue.GatedAdd ? Math.max(1, Math.abs(gate[(i / n / gRows) * n + i % n])) : 1;
                        double tol = 2 * (1e-5 + 1e-4 * abs[i]) * g + 1e-6 * Math.abs(cpu[i]);
                        if (!(Math.abs(got[i] - cpu[i]) <= tol))
                            throw new AssertionError(what + ": C[" + i / n + "," + i % n + "] = " + got[i] + ", cpu " + cpu[i] + " (tolerance " + tol + ")");
                    }
                });
    }

    // ---------------------------------------------------------------- attention

    @ParameterizedTest @ValueSource(strings = {"cpu", "opencl"})
    void attentionCausalBidirectionalMaskedAndTemperature(String name) {
        Backend be = backend(name);
        qt().withExamples(30).forAll(integers().between(1, 3), integers().between(1, 3), integers().between(1, 40), longs().all())
                .checkAssert((nb, nh, t, seed) -> {
                    Random r = new Random(seed);
                    int tq = r.nextInt(4) == 0 ? 1 : t, tk = tq == 1 ? t : t; // tq = 1: a decode step against t keys
                    int dh = 1 + r.nextInt(24), dv = r.nextBoolean() ? dh : 1 + r.nextInt(24);
                    boolean causal = r.nextBoolean();
                    float temperature = r.nextBoolean() ? 1f : 0.5f + r.nextFloat();
                    float scale = (float) (1 / Math.sqrt(dh)) / temperature;
                    float[] mask = null;
                    int[] ms = null;
                    int kind = r.nextInt(3);
                    if (kind == 1) ms = new int[]{1, 1, tq, tk};
                    if (kind == 2) ms = new int[]{nb, 1, tq, tk};
                    if (ms != null) {
                        mask = new float[ms[0] * ms[1] * tq * tk];
                        for (int i = 0; i < mask.length; i++) mask[i] = r.nextInt(4) == 0 ? 0f : 1f;
                        if (mask.length >= tk) java.util.Arrays.fill(mask, 0, tk, 0f); // a query that sees no key
                    }
                    float[] q = Ref.rand(r, nb * nh * tq * dh, 1f), k = Ref.rand(r, nb * nh * tk * dh, 1f), v = Ref.rand(r, nb * nh * tk * dv, 1f);
                    float[] out = new float[nb * nh * tq * dv];
                    be.attentionForward(q, k, v, out, Attention.Layouts.contiguous(nh, tq, tk, dh, dv), nb, nh, tq, tk, dh, dv, causal,
                            mask, ms, scale, false);
                    Ref.assertClose(be.name() + " attention B" + nb + " H" + nh + " Tq" + tq + " Tk" + tk + " Dh" + dh + " Dv" + dv
                                    + (causal ? " causal" : "") + (mask != null ? " masked" : "") + " scale " + scale,
                            Ref.attention(q, k, v, nb, nh, tq, tk, dh, dv, causal, mask, ms, scale), out, out.length, 2e-5, 1e-4);
                });
    }

    @ParameterizedTest @ValueSource(strings = {"cpu", "opencl"})
    void attentionTarFlowSizedCausal(String name) {
        Backend be = backend(name);
        Random r = new Random(3);
        int nb = 4, nh = 2, t = 49, dh = 64;
        float[] q = Ref.rand(r, nb * nh * t * dh, 1f), k = Ref.rand(r, nb * nh * t * dh, 1f), v = Ref.rand(r, nb * nh * t * dh, 1f);
        float[] out = new float[q.length];
        be.attentionForward(q, k, v, out, Attention.Layouts.contiguous(nh, t, t, dh, dh), nb, nh, t, t, dh, dh, true, null, null, 0.125f, false);
        Ref.assertClose(be.name() + " attention TarFlow-sized", Ref.attention(q, k, v, nb, nh, t, t, dh, dh, true, null, null, 0.125f),
                out, out.length, 2e-5, 1e-4);
    }

    /**
     * Heads read where a packed qkv projection (B, T, 3 H Dh) wrote them, the output written with the heads merged
     * (B, T, H Dh), and the gradients added in place: the same numbers as the contiguous call on split copies.
     */
    @ParameterizedTest @ValueSource(strings = {"cpu", "opencl"})
    void attentionOnPackedHeadsMatchesTheContiguousCall(String name) {
        Backend be = backend(name);
        Random r = new Random(9);
        int nb = 2, nh = 3, t = 11, dh = 5, d = nh * dh, w = 3 * d;
        float[] qkv = Ref.rand(r, nb * t * w, 1f), dout = Ref.rand(r, nb * t * d, 1f);
        float[][] split = new float[3][nb * nh * t * dh];
        float[] dsplit = new float[nb * nh * t * dh];
        for (int b = 0; b < nb; b++)
            for (int h = 0; h < nh; h++)
                for (int i = 0; i < t; i++) {
                    for (int part = 0; part < 3; part++)
                        System.arraycopy(qkv, (b * t + i) * w + part * d + h * dh, split[part], ((b * nh + h) * t + i) * dh, dh);
                    System.arraycopy(dout, (b * t + i) * d + h * dh, dsplit, ((b * nh + h) * t + i) * dh, dh);
                }
        Attention.Layouts contiguous = Attention.Layouts.contiguous(nh, t, t, dh, dh), packed = Attention.Layouts.packed(nh, t, dh);
        float[] want = new float[nb * nh * t * dh], gq = new float[want.length], gk = new float[want.length], gv = new float[want.length];
        Object s0 = be.attentionForward(split[0], split[1], split[2], want, contiguous, nb, nh, t, t, dh, dh, true, null, null, 0.3f, true);
        be.attentionBackward(s0, dsplit, split[0], split[1], split[2], gq, gk, gv, contiguous, nb, nh, t, t, dh, dh, true, null, null, 0.3f);
        float[] got = new float[nb * t * d], g = new float[qkv.length];
        Object s1 = be.attentionForward(qkv, qkv, qkv, got, packed, nb, nh, t, t, dh, dh, true, null, null, 0.3f, true);
        be.attentionBackward(s1, dout, qkv, qkv, qkv, g, g, g, packed, nb, nh, t, t, dh, dh, true, null, null, 0.3f);
        float[][] wantGrads = {gq, gk, gv};
        for (int b = 0; b < nb; b++)
            for (int h = 0; h < nh; h++)
                for (int i = 0; i < t; i++)
                    for (int j = 0; j < dh; j++) {
                        int c = ((b * nh + h) * t + i) * dh + j, row = b * t + i;
                        assertEquals(want[c], got[row * d + h * dh + j], 1e-6, be.name() + " out");
                        for (int part = 0; part < 3; part++)
                            assertEquals(wantGrads[part][c], g[row * w + part * d + h * dh + j], 1e-6, be.name() + " gradient of part " + part);
                    }
    }
}
