// The engine's one fixed thread pool: every CPU kernel splits its outer loop here.
package dev.biflow.engine.kernels;

import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A fixed pool sized to the cores (or to {@code -Dbiflow.threads=N} / {@link #setThreads}).
 * Work is split into contiguous static ranges, so a kernel whose output elements are each
 * computed by one range gives the same bits for any thread count; with 1 thread everything runs
 * on the caller, which makes runs deterministic and easy to profile.
 */
public final class Parallel {
    /** A body over the half-open range [lo, hi). */
    @FunctionalInterface
    public interface RangeBody { void run(int lo, int hi); }

    private static volatile int threads = defaultThreads();
    private static ExecutorService pool;
    private static int poolSize;
    /** Nested calls (a kernel called from inside a parallel body) run serially on the caller. */
    private static final ThreadLocal<Boolean> INSIDE = ThreadLocal.withInitial(() -> false);

    private Parallel() {}

    private static int defaultThreads() {
        String p = System.getProperty("biflow.threads");
        if (p == null) p = System.getenv("BIFLOW_THREADS");
        if (p != null && !p.isBlank()) {
            try {
                int n = Integer.parseInt(p.trim());
                if (n >= 1) return n;
            } catch (NumberFormatException ignored) {
                // fall through to the core count; a bad value must not stop the engine
            }
            System.err.println("biflow: ignoring biflow.threads=" + p + " (want an integer >= 1)");
        }
        return Runtime.getRuntime().availableProcessors();
    }

    /** Number of threads kernels use. */
    public static int threads() { return threads; }

    /** Sets the number of threads (>= 1). 1 runs everything on the calling thread. */
    public static synchronized void setThreads(int n) {
        if (n < 1) throw new IllegalArgumentException("thread count must be >= 1, got " + n);
        threads = n;
    }

    private static synchronized ExecutorService pool(int n) {
        if (pool == null || poolSize < n) {
            // not shutdown(): a kernel on another thread may still be about to submit to the old
            // pool and would be rejected; its threads instead retire once idle
            if (pool instanceof ThreadPoolExecutor old) {
                old.setKeepAliveTime(1, TimeUnit.SECONDS);
                old.allowCoreThreadTimeOut(true);
            }
            AtomicInteger id = new AtomicInteger();
            ThreadFactory tf = r -> {
                Thread t = new Thread(() -> { INSIDE.set(true); r.run(); }, "biflow-worker-" + id.incrementAndGet());
                t.setDaemon(true);
                return t;
            };
            pool = Executors.newFixedThreadPool(n, tf);
            poolSize = n;
        }
        return pool;
    }

    /**
     * Runs body over [0, n) split into at most threads() contiguous chunks of at least
     * {@code grain} items. Blocks until all are done; the caller runs the first chunk.
     */
    public static void forRange(int n, int grain, RangeBody body) {
        if (n <= 0) return;
        int t = threads;
        int chunks = Math.min(t, Math.max(1, n / Math.max(1, grain)));
        if (chunks <= 1 || INSIDE.get()) {
            body.run(0, n);
            return;
        }
        ExecutorService ex = pool(t - 1 >= 1 ? t - 1 : 1);
        @SuppressWarnings("unchecked")
        Future<?>[] fs = new Future<?>[chunks - 1];
        for (int c = 1; c < chunks; c++) {
            int lo = (int) ((long) n * c / chunks), hi = (int) ((long) n * (c + 1) / chunks);
            fs[c - 1] = ex.submit(() -> body.run(lo, hi));
        }
        Throwable first = null;
        INSIDE.set(true);
        try {
            body.run(0, (int) ((long) n / chunks));
        } catch (Throwable e) {
            first = e;
        } finally {
            INSIDE.set(false);
        }
        // wait for every chunk even when one failed: returning early would leave workers writing
        // into the caller's arrays after the op has already thrown
        boolean interrupted = false;
        for (Future<?> f : fs) {
            while (true) {
                try {
                    f.get();
                } catch (java.util.concurrent.ExecutionException e) {
                    if (first == null) first = e.getCause();
                    else if (first != e.getCause()) first.addSuppressed(e.getCause());
                } catch (InterruptedException e) {
                    interrupted = true;
                    continue;
                }
                break;
            }
        }
        if (interrupted) Thread.currentThread().interrupt();
        if (first instanceof RuntimeException re) throw re;
        if (first instanceof Error err) throw err; // an AssertionError or OutOfMemoryError stays what it is
        if (first != null) throw new RuntimeException(first);
    }

    /** forRange with grain 1. */
    public static void forRange(int n, RangeBody body) { forRange(n, 1, body); }
}
