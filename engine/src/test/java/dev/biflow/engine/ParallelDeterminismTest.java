// Thread-count independence of op results, the Vec kernels against scalar references, and the pool's error handling.
package dev.biflow.engine;

import dev.biflow.engine.kernels.Parallel;
import dev.biflow.engine.kernels.Vec;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;

import static org.junit.jupiter.api.Assertions.*;

class ParallelDeterminismTest {
    private int saved;

    @BeforeEach
    void save() { saved = Parallel.threads(); }

    @AfterEach
    void restore() { Parallel.setThreads(saved); }

    /** Forward outputs and input gradients of a small "model" touching the parallel paths, as raw bits. */
    private static List<float[]> run() {
        Tensor x = TestData.randn(1, 3, 97, 139).requiresGrad(true);   // 40353 elements, odd sizes
        Tensor w = TestData.randn(2, 139, 67).requiresGrad(true);
        Tensor b = TestData.randn(3, 139).requiresGrad(true);
        Tensor h = Ops.mul(Ops.add(x, b), Ops.sigmoid(x));             // broadcast + same-shape + unary
        h = Ops.div(h, Ops.addScalar(Ops.abs(x), 1f));
        Tensor m = Ops.matmul(h, w, false, false);                      // shared-B GEMM
        Tensor s = Ops.sum(Ops.gelu(m), new int[]{1}, true);            // axis reduction
        Tensor t = Ops.transpose(Ops.mulScalar(m, 0.3f), 1, 2);         // permute
        Tensor loss = Ops.add(Ops.mean(Ops.mul(s, s)), Ops.mean(Ops.tanh(t)));
        loss.backward();
        List<float[]> r = new ArrayList<>();
        r.add(h.data());
        r.add(m.data());
        r.add(s.data());
        r.add(t.data());
        r.add(loss.data());
        r.add(x.gradData());
        r.add(w.gradData());
        r.add(b.gradData());
        return r;
    }

    private static void assertSameBits(List<float[]> a, List<float[]> b, String what) {
        assertEquals(a.size(), b.size());
        for (int i = 0; i < a.size(); i++) {
            float[] x = a.get(i), y = b.get(i);
            assertEquals(x.length, y.length);
            for (int j = 0; j < x.length; j++)
                if (Float.floatToRawIntBits(x[j]) != Float.floatToRawIntBits(y[j]))
                    fail(what + ": result " + i + " differs at " + j + ": " + x[j] + " vs " + y[j]);
        }
    }

    @Test
    void opsGiveTheSameBitsForOneTwoAndThreeThreads() {
        Parallel.setThreads(1);
        List<float[]> one = run();
        Parallel.setThreads(2);
        List<float[]> two = run();
        Parallel.setThreads(3);
        List<float[]> three = run();
        assertSameBits(one, two, "1 vs 2 threads");
        assertSameBits(one, three, "1 vs 3 threads");
    }

    /** Every Vec kernel: split at arbitrary points, the pieces give the same bits as one pass. */
    @Test
    void vecKernelsAreSplitInvariant() {
        Rng r = new Rng(5);
        int n = 1003;
        float[] a = new float[n], b = new float[n], y0 = new float[n];
        r.fillNormal(a);
        r.fillNormal(b);
        r.fillNormal(y0);
        float s = 0.3f;
        int[][] splits = {{0, n}, {0, 3, n}, {0, 1, 2, 500, 509, n}, {0, 7, 15, 16, 17, 999, n}};
        for (String k : List.of("add", "sub", "mul", "div", "scale", "axpy", "axpyOff")) {
            float[] whole = null;
            for (int[] sp : splits) {
                float[] out = y0.clone();
                for (int p = 0; p + 1 < sp.length; p++) {
                    int lo = sp[p], hi = sp[p + 1];
                    switch (k) {
                        case "add" -> Vec.add(a, b, out, lo, hi);
                        case "sub" -> Vec.sub(a, b, out, lo, hi);
                        case "mul" -> Vec.mul(a, b, out, lo, hi);
                        case "div" -> Vec.div(a, b, out, lo, hi);
                        case "scale" -> Vec.scale(s, a, out, lo, hi);
                        case "axpy" -> Vec.axpy(s, a, out, lo, hi);
                        default -> Vec.axpy(s, a, lo, out, lo, hi - lo);
                    }
                }
                if (whole == null) whole = out;
                else assertSameBits(List.of(whole), List.of(out), k + " split " + java.util.Arrays.toString(sp));
            }
        }
    }

    @Test
    void vecKernelsAgainstScalarReferences() {
        Rng r = new Rng(6);
        for (int n : new int[]{0, 1, 7, 8, 9, 16, 31, 33, 100}) {
            float[] a = new float[n + 3], b = new float[n + 3];
            r.fillNormal(a);
            r.fillNormal(b);
            double sum = 0, dot = 0, max = Double.NEGATIVE_INFINITY;
            for (int i = 0; i < n; i++) {
                sum += a[i + 3];
                dot += (double) a[i + 3] * b[i + 1];
                max = Math.max(max, a[i + 2]);
            }
            assertEquals(sum, Vec.sum(a, 3, n), 1e-5 * Math.max(1, n), "sum n=" + n);
            assertEquals(dot, Vec.dot(a, 3, b, 1, n), 1e-5 * Math.max(1, n), "dot n=" + n);
            if (n > 0) assertEquals((float) max, Vec.max(a, 2, n), "max n=" + n);
            float[] y = b.clone();
            Vec.axpy(-2f, a, 1, y, 2, n);
            for (int i = 0; i < n; i++) assertEquals(Math.fma(-2f, a[1 + i], b[2 + i]), y[2 + i], "axpy n=" + n);
            for (int i = 0; i < 2; i++) assertEquals(b[i], y[i], "axpy wrote outside its range");
        }
        float[] withNaN = new float[20];
        withNaN[13] = Float.NaN;
        assertTrue(Float.isNaN(Vec.max(withNaN, 0, 20)), "max propagates NaN from the vector body");
        withNaN[13] = 0;
        withNaN[19] = Float.NaN;
        assertTrue(Float.isNaN(Vec.max(withNaN, 0, 20)), "max propagates NaN from the tail");
    }

    @Test
    void forRangeCoversEveryIndexOnceAndNestsSerially() {
        Parallel.setThreads(3);
        for (int n : new int[]{1, 2, 3, 10, 1001}) {
            int[] hits = new int[n];
            Parallel.forRange(n, 1, (lo, hi) -> {
                for (int i = lo; i < hi; i++) hits[i]++;
                // a nested call runs on the calling thread and still covers its range
                int[] inner = new int[4];
                Parallel.forRange(4, 1, (l2, h2) -> { for (int j = l2; j < h2; j++) inner[j]++; });
                for (int v : inner) assertEquals(1, v);
            });
            for (int i = 0; i < n; i++) assertEquals(1, hits[i], "index " + i + " of " + n);
        }
        Parallel.forRange(0, (lo, hi) -> fail("empty range ran"));
        assertThrows(IllegalArgumentException.class, () -> Parallel.setThreads(0));
    }

    @Test
    void exceptionsInAnyChunkReachTheCallerAfterAllChunksFinish() {
        Parallel.setThreads(2);
        AtomicInteger finished = new AtomicInteger();
        java.util.concurrent.CountDownLatch thrown = new java.util.concurrent.CountDownLatch(1);
        // the caller's own chunk fails; the other chunk only finishes after that failure: the call must wait for it
        RuntimeException e = assertThrows(RuntimeException.class, () -> Parallel.forRange(2, 1, (lo, hi) -> {
            if (lo == 0) {
                thrown.countDown();
                throw new IllegalStateException("boom in chunk 0");
            }
            try {
                thrown.await();
            } catch (InterruptedException ie) {
                Thread.currentThread().interrupt();
            }
            finished.incrementAndGet();
        }));
        assertEquals("boom in chunk 0", e.getMessage());
        assertEquals(1, finished.get(), "forRange returned while another chunk was still running");
        // a worker's exception is rethrown as is
        IllegalArgumentException e2 = assertThrows(IllegalArgumentException.class, () -> Parallel.forRange(2, 1, (lo, hi) -> {
            if (lo == 1) throw new IllegalArgumentException("boom in chunk 1");
        }));
        assertEquals("boom in chunk 1", e2.getMessage());
        // an Error in a worker stays an Error (an AssertionError in a kernel test must not turn into a RuntimeException)
        AssertionError e3 = assertThrows(AssertionError.class, () -> Parallel.forRange(2, 1, (lo, hi) -> {
            if (lo == 1) throw new AssertionError("assert in chunk 1");
        }));
        assertEquals("assert in chunk 1", e3.getMessage());
        // the pool is still usable afterwards
        int[] hits = new int[2];
        Parallel.forRange(2, 1, (lo, hi) -> { for (int i = lo; i < hi; i++) hits[i]++; });
        assertArrayEquals(new int[]{1, 1}, hits);
    }

    /** Several threads calling forRange at once (their chunks queue on the same workers): every range runs once, nothing hangs. */
    @Test
    void concurrentCallersEachGetTheirWholeRange() throws Throwable {
        Parallel.setThreads(3);
        // a lost wake-up would block the joins below forever: the suite-wide fork timeout (the parent pom's
        // forkedProcessTimeoutInSeconds) ends such a run with a failure, so this test carries no timing of its own
        int callers = 4, calls = 3000;
        java.util.concurrent.atomic.AtomicReference<Throwable> err = new java.util.concurrent.atomic.AtomicReference<>();
        Thread[] ts = new Thread[callers];
        for (int c = 0; c < callers; c++) {
            int id = c;
            ts[c] = new Thread(() -> {
                try {
                    for (int k = 0; k < calls; k++) {
                        int n = 1 + (k * 7 + id) % 97;
                        int[] hits = new int[n];
                        Parallel.forRange(n, 1, (lo, hi) -> { for (int i = lo; i < hi; i++) hits[i]++; });
                        for (int i = 0; i < n; i++)
                            if (hits[i] != 1) throw new AssertionError("caller " + id + " call " + k + ": index " + i + " ran " + hits[i] + " times");
                    }
                } catch (Throwable e) {
                    err.compareAndSet(null, e);
                }
            });
            ts[c].start();
        }
        for (Thread t : ts) t.join();
        if (err.get() != null) throw err.get();
    }
}
