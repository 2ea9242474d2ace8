// The same kernel checks on every backend: CPU always, OpenCL when a device exists (skipped with the reason otherwise).
package dev.biflow.gpu;

import dev.biflow.engine.Backend;
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
 * within ~k * 6e-8 of that sum); LayerNorm, softmax, attention 2e-5 absolute + 1e-4 relative;
 * coupling 1e-5 + 1e-5 relative, its log-det (a sum of perSample terms) 1e-6 * perSample + 1e-5 relative.
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
        be.sgemm(tA, tB, m, n, k, alpha, a, aOff, lda, b, bOff, ldb, beta, c, cOff, ldc);
        String what = be.name() + " sgemm " + m + "x" + n + "x" + k + (tA ? " A^T" : "") + (tB ? " B^T" : "");
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

    @ParameterizedTest @ValueSource(strings = {"cpu", "opencl"})
    void gemmBatchedMatchesOneAtATime(String name) {
        Backend be = backend(name);
        Random r = new Random(7);
        int batch = 5, m = 33, n = 20, k = 47;
        float[] a = Ref.rand(r, batch * k * m, 1f), b = Ref.rand(r, batch * n * k, 1f), c = new float[batch * m * n];
        be.sgemmBatched(batch, true, true, m, n, k, 1f, a, 0, k * m, m, b, 0, n * k, k, 0f, c, 0, m * n, n);
        for (int i = 0; i < batch; i++) {
            double[] abs = new double[m * n];
            double[] want = Ref.gemm(true, true, m, n, k, 1f, a, i * k * m, m, b, i * n * k, k, 0f, c, 0, n, abs);
            float[] got = java.util.Arrays.copyOfRange(c, i * m * n, (i + 1) * m * n);
            Ref.assertClose(be.name() + " batched sgemm, matrix " + i, want, got, m * n, 1e-5, 1e-4);
        }
    }

    // ---------------------------------------------------------------- row kernels

    @ParameterizedTest @ValueSource(strings = {"cpu", "opencl"})
    void layerNorm(String name) {
        Backend be = backend(name);
        qt().withExamples(20).forAll(integers().between(1, 40), integers().between(1, 300), longs().all())
                .checkAssert((rows, d, seed) -> {
                    Random r = new Random(seed);
                    float[] x = Ref.rand(r, rows * d, 3f);
                    for (int i = 0; i < x.length; i++) x[i] += 5f; // an offset the two-pass variance must handle
                    float[] w = r.nextBoolean() ? Ref.rand(r, d, 1f) : null, b = r.nextBoolean() ? Ref.rand(r, d, 1f) : null;
                    float[] y = new float[rows * d], mean = new float[rows], rstd = new float[rows];
                    be.layerNorm(x, w, b, y, mean, rstd, rows, d, 1e-5f);
                    Ref.assertClose(be.name() + " layerNorm " + rows + "x" + d, Ref.layerNorm(x, w, b, rows, d, 1e-5f), y, y.length, 2e-5, 1e-4);
                    double[] mu = new double[rows];
                    for (int i = 0; i < rows * d; i++) mu[i / d] += x[i] / (double) d;
                    Ref.assertClose(be.name() + " layerNorm mean", mu, mean, rows, 1e-5, 1e-5);
                });
    }

    @ParameterizedTest @ValueSource(strings = {"cpu", "opencl"})
    void softmax(String name) {
        Backend be = backend(name);
        qt().withExamples(20).forAll(integers().between(1, 40), integers().between(1, 300), longs().all())
                .checkAssert((rows, n, seed) -> {
                    float[] x = Ref.rand(new Random(seed), rows * n, 10f), y = new float[rows * n];
                    be.softmaxRows(x, y, rows, n);
                    Ref.assertClose(be.name() + " softmax " + rows + "x" + n, Ref.softmax(x, rows, n), y, y.length, 2e-6, 1e-4);
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
                    be.attention(q, k, v, out, nb, nh, tq, tk, dh, dv, causal, mask, ms, scale);
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
        be.attention(q, k, v, out, nb, nh, t, t, dh, dh, true, null, null, 0.125f);
        Ref.assertClose(be.name() + " attention TarFlow-sized", Ref.attention(q, k, v, nb, nh, t, t, dh, dh, true, null, null, 0.125f),
                out, out.length, 2e-5, 1e-4);
    }

    // ---------------------------------------------------------------- affine coupling

    @ParameterizedTest @ValueSource(strings = {"cpu", "opencl"})
    void affineCouplingForwardInverseAndLogDet(String name) {
        Backend be = backend(name);
        qt().withExamples(20).forAll(integers().between(1, 9), integers().between(1, 800), longs().all())
                .checkAssert((batch, per, seed) -> {
                    Random r = new Random(seed);
                    int n = batch * per;
                    float[] x = Ref.rand(r, n, 1f), a = Ref.rand(r, n, 0.5f), b = Ref.rand(r, n, 1f);
                    float[] z = new float[n], back = new float[n], ld = new float[batch], ldInv = new float[batch];
                    be.affineCoupling(false, x, a, b, z, ld, batch, per);
                    double[] wantZ = new double[n], wantLd = new double[batch];
                    for (int i = 0; i < n; i++) {
                        wantZ[i] = (x[i] - (double) b[i]) * Math.exp(-a[i]);
                        wantLd[i / per] -= a[i];
                    }
                    Ref.assertClose(be.name() + " coupling forward", wantZ, z, n, 1e-5, 1e-5);
                    Ref.assertClose(be.name() + " coupling log-det", wantLd, ld, batch, 1e-6 * per, 1e-5);
                    be.affineCoupling(true, z, a, b, back, ldInv, batch, per);
                    double[] xd = new double[n], minus = new double[batch];
                    for (int i = 0; i < n; i++) xd[i] = x[i];
                    for (int i = 0; i < batch; i++) minus[i] = -ld[i];
                    Ref.assertClose(be.name() + " coupling inverse(forward(x)) = x", xd, back, n, 1e-5, 1e-5);
                    Ref.assertClose(be.name() + " inverse log-det = -forward log-det", minus, ldInv, batch, 1e-6 * per, 1e-5);
                });
    }
}
