// Executor-side copies of what a task needs (a model from checkpoint bytes), made once per executor and task slot.
package dev.biflow.spark;

import org.apache.spark.TaskContext;
import org.apache.spark.broadcast.Broadcast;

import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.function.Function;

/**
 * A pool per broadcast: a task leases a replica built from the broadcast's value (a checkpoint's
 * bytes, read once per executor by Spark's broadcast), and hands it back when done, so an executor
 * builds at most one replica per concurrent task and none again for the next task or step. Models are
 * not shared between concurrent tasks: their forward passes keep state (caches, arenas) per call.
 */
final class Replicas {
    private static final Map<String, ConcurrentLinkedQueue<Object>> POOLS = new ConcurrentHashMap<>();
    /** How many replicas were built here (tests: "each executor loads the checkpoint once"). */
    static final java.util.concurrent.atomic.AtomicInteger BUILT = new java.util.concurrent.atomic.AtomicInteger();

    private Replicas() {}

    /** A leased replica; close hands it back. */
    record Lease<T>(T value, String key) implements AutoCloseable {
        @Override
        public void close() { POOLS.get(key).add(value); }
    }

    @SuppressWarnings("unchecked")
    static <B, T> Lease<T> lease(Broadcast<B> b, Function<B, T> build) {
        // broadcast ids restart at 0 in every SparkContext: the application id keeps two contexts of one JVM (tests) apart
        String key = org.apache.spark.SparkEnv.get().conf().getAppId() + "/" + b.id();
        var pool = POOLS.computeIfAbsent(key, k -> new ConcurrentLinkedQueue<>());
        Object v = pool.poll();
        if (v == null) {
            v = build.apply(b.value());
            BUILT.incrementAndGet();
        }
        return new Lease<>((T) v, key);
    }

    /** Kernels use the cores Spark gave this task (spark.task.cpus; 1 in local[N]), not every core of the machine. */
    static void useTaskCores() {
        TaskContext tc = TaskContext.get();
        if (tc != null) dev.biflow.engine.kernels.Parallel.setThreads(Math.max(1, tc.cpus()));
    }

    /** A forward flow from checkpoint bytes (a Function for {@link #lease}). */
    static dev.biflow.flow.model.TarFlow tarFlow(byte[] checkpoint) {
        try {
            return dev.biflow.flow.model.Checkpoints.loadTarFlow(checkpoint, "the checkpoint broadcast by the driver");
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

}
