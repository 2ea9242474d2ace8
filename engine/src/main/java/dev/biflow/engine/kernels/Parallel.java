// The engine's one fixed thread pool: every CPU kernel splits its outer loop here.
package dev.biflow.engine.kernels;

import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.locks.LockSupport;

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
    /** Workers (threads() - 1 of them are used; the caller runs the first chunk). Grows, never shrinks. */
    private static volatile Worker[] workers = new Worker[0];
    /** Nested calls (a kernel called from inside a parallel body) run serially on the caller. */
    private static final ThreadLocal<Boolean> INSIDE = ThreadLocal.withInitial(() -> false);
    /**
     * How long an idle worker, and a caller waiting for its workers, spin before parking. Parking
     * and waking a thread costs tens of microseconds, as long as a whole layernorm of a BiFlow
     * batch: with a plain executor the second core joined each small op late and 2 threads were
     * only ~1.4x faster than one. Spinning this briefly keeps a worker ready between the ops of
     * a model pass and costs an idle host at most this much CPU per op.
     */
    private static final long SPIN_NS = Long.getLong("biflow.spin.us", 100) * 1000;

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

    /** At least n started workers. */
    private static Worker[] workers(int n) {
        Worker[] w = workers;
        if (w.length >= n) return w;
        synchronized (Parallel.class) {
            w = workers;
            if (w.length >= n) return w;
            Worker[] grown = java.util.Arrays.copyOf(w, n);
            for (int i = w.length; i < n; i++) {
                grown[i] = new Worker("biflow-worker-" + (i + 1));
                grown[i].start();
            }
            workers = grown;
            return grown;
        }
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
        Worker[] w = workers(t - 1);
        Job job = new Job(body, n, chunks, Thread.currentThread());
        for (int c = 1; c < chunks; c++) w[c - 1].submit(job, c);
        INSIDE.set(true);
        try {
            job.run(0);
        } catch (Throwable e) {
            job.fail(e);
        } finally {
            INSIDE.set(false);
        }
        // wait for every chunk even when one failed: returning early would leave workers writing
        // into the caller's arrays after the op has already thrown
        job.awaitWorkers();
        Throwable first = job.first;
        if (first instanceof RuntimeException re) throw re;
        if (first instanceof Error err) throw err; // an AssertionError or OutOfMemoryError stays what it is
        if (first != null) throw new RuntimeException(first);
    }

    /** One forRange call: its chunks, how many workers are still running one, the first failure. */
    private static final class Job {
        final RangeBody body;
        final int n, chunks;
        final Thread caller;
        final AtomicInteger pending;
        volatile boolean callerParked;
        volatile Throwable first;

        Job(RangeBody body, int n, int chunks, Thread caller) {
            this.body = body;
            this.n = n;
            this.chunks = chunks;
            this.caller = caller;
            this.pending = new AtomicInteger(chunks - 1);
        }

        void run(int c) {
            body.run((int) ((long) n * c / chunks), (int) ((long) n * (c + 1) / chunks));
        }

        synchronized void fail(Throwable e) {
            if (first == null) first = e;
            else if (first != e) first.addSuppressed(e);
        }

        /** A worker finished its chunk. */
        void done() {
            if (pending.decrementAndGet() == 0 && callerParked) LockSupport.unpark(caller);
        }

        void awaitWorkers() {
            long deadline = System.nanoTime() + SPIN_NS;
            while (pending.get() != 0) {
                if (System.nanoTime() < deadline) {
                    Thread.onSpinWait();
                } else {
                    callerParked = true;
                    // re-check after publishing callerParked: a worker that finished in between saw it or we see its count
                    if (pending.get() != 0) LockSupport.park(this);
                }
            }
        }
    }

    /** A pool thread: takes (job, chunk) pairs from its queue, spinning briefly when idle, then parking. */
    private static final class Worker extends Thread {
        private record Task(Job job, int chunk) {}

        private final ConcurrentLinkedQueue<Task> queue = new ConcurrentLinkedQueue<>();
        private volatile boolean parked;

        Worker(String name) {
            super(name);
            setDaemon(true);
        }

        void submit(Job job, int chunk) {
            queue.add(new Task(job, chunk));
            if (parked) LockSupport.unpark(this);
        }

        @Override
        public void run() {
            INSIDE.set(true);
            while (true) {
                Task t = next();
                try {
                    t.job().run(t.chunk());
                } catch (Throwable e) {
                    t.job().fail(e);
                } finally {
                    t.job().done();
                }
            }
        }

        private Task next() {
            long deadline = System.nanoTime() + SPIN_NS;
            while (true) {
                Task t = queue.poll();
                if (t != null) return t;
                if (System.nanoTime() < deadline) {
                    Thread.onSpinWait();
                    continue;
                }
                parked = true;
                // re-poll after publishing parked: a task added in between is seen here or unparks us
                t = queue.poll();
                if (t != null) {
                    parked = false;
                    return t;
                }
                LockSupport.park(this);
                parked = false;
                deadline = System.nanoTime() + SPIN_NS;
            }
        }
    }

    /** forRange with grain 1. */
    public static void forRange(int n, RangeBody body) { forRange(n, 1, body); }

    /** True on a thread already running a parallel body (a nested forRange runs serially there). */
    public static boolean inside() { return INSIDE.get(); }
}
