// biflow spark: the commands that spread their work over an Apache Spark cluster (or Spark's local mode).
package dev.biflow.spark;

import org.apache.spark.SparkConf;
import org.apache.spark.api.java.JavaSparkContext;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.util.ArrayList;
import java.util.List;

/**
 * {@code biflow spark [--master M] [--partitions N] [--conf k=v]... <command> [its options]}: the
 * Spark options come before the command, the command's own options (those of {@code biflow sample},
 * {@code train-forward}, ...) after it. One SparkContext per command run, stopped at its end; tests
 * share one ({@link #shareContext}).
 */
@Command(name = "spark", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Run sampling, evaluation or training on Apache Spark: images split over partitions by seed ranges,",
                "training data-parallel (each step every worker computes the gradient of its shard of the batch, the driver",
                "sums them and takes one optimiser step). See docs/SCALING.md."},
        subcommands = {SparkSample.class, SparkEval.class, SparkTrain.Forward.class, SparkTrain.Backward.class},
        footer = {"", "Examples:",
                "  biflow spark --master 'local[2]' sample --model models/fmnist/forward.safetensors --n 400 --run runs/sample-spark",
                "  biflow spark --master 'local[2]' train-forward --name f-dp --batch 64 --steps 200",
                "  spark-submit --class dev.biflow.spark.SparkMain biflow-spark-all.jar train-backward --forward f.safetensors ..."})
public final class SparkCommand implements Runnable {
    @Option(names = "--master", description = "Spark master URL: local[N], spark://host:7077, k8s://... (default: the one spark-submit set).")
    String master;

    @Option(names = "--partitions", description = "Shards (sampling) or workers (training); default: Spark's default parallelism.")
    Integer partitions;

    @Option(names = "--conf", description = "A Spark property, key=value (repeatable), e.g. --conf spark.task.cpus=4.")
    List<String> conf = new ArrayList<>();

    private static JavaSparkContext shared;

    /** Tests: every command run uses this context (and does not stop it); null: each run makes its own. */
    public static void shareContext(JavaSparkContext sc) { shared = sc; }

    @Override
    public void run() { new picocli.CommandLine(this).usage(System.out); }

    /** A Spark context for one command run; closing it stops it unless it is the shared one. */
    public Session open(String appName) {
        if (shared != null) return new Session(shared, false, partitions(shared));
        SparkConf sc = new SparkConf().setAppName("biflow " + appName)
                .setIfMissing("spark.ui.showConsoleProgress", "false")
                .setIfMissing("spark.ui.enabled", "false")
                // weights and gradients are float arrays, which LZ4 barely shrinks: compressing the per-step broadcast costs
                // time for nothing; and a gradient (2-11 MB) comes back in the task's reply, not through a block fetch
                .setIfMissing("spark.broadcast.compress", "false")
                .setIfMissing("spark.task.maxDirectResultSize", "64m");
        if (master != null) sc.setMaster(master);
        else if (!sc.contains("spark.master"))
            throw new IllegalArgumentException("no Spark master: pass --master (e.g. --master 'local[2]') or run under spark-submit");
        for (String kv : conf) {
            int eq = kv.indexOf('=');
            if (eq <= 0) throw new IllegalArgumentException("--conf expects key=value, got '" + kv + "'");
            sc.set(kv.substring(0, eq), kv.substring(eq + 1));
        }
        JavaSparkContext jsc = new JavaSparkContext(sc);
        jsc.setLogLevel(System.getenv("BIFLOW_SPARK_LOG") != null ? System.getenv("BIFLOW_SPARK_LOG") : "WARN");
        return new Session(jsc, true, partitions(jsc));
    }

    private int partitions(JavaSparkContext sc) {
        int p = partitions != null ? partitions : sc.defaultParallelism();
        if (p < 1) throw new IllegalArgumentException("--partitions must be >= 1, got " + p);
        return p;
    }

    /**
     * A Spark job that failed after its retries, as one line: Spark's message (its first line, not the
     * executor's stack trace it carries) and the root cause.
     */
    static IllegalStateException jobFailed(String what, Exception e) {
        Throwable root = e;
        while (root.getCause() != null) root = root.getCause();
        String why = e.getMessage() == null ? e.toString() : e.getMessage().lines().findFirst().orElse("");
        return new IllegalStateException(what + " failed on the cluster after Spark's retries (" + why
                + (root != e && root.getMessage() != null ? "; cause: " + root.getMessage().lines().findFirst().orElse("") : "") + ")", e);
    }

    /** A context and the number of partitions (shards or workers) to use. */
    public record Session(JavaSparkContext sc, boolean owned, int partitions) implements AutoCloseable {
        @Override
        public void close() { if (owned) sc.stop(); }
    }
}
