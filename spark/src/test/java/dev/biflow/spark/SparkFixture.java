package dev.biflow.spark;

import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.flow.model.Checkpoints;
import dev.biflow.flow.model.NormControl;
import dev.biflow.flow.model.TarFlow;
import dev.biflow.flow.model.TarFlowConfig;
import org.apache.spark.SparkConf;
import org.apache.spark.api.java.JavaSparkContext;

import java.io.ByteArrayOutputStream;
import java.nio.file.Files;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.Map;

/** What the spark tests share: one local Spark context per test class, a tiny forward flow, running biflow in-process. */
final class SparkFixture {
    private SparkFixture() {}

    /**
     * local[2, 2]: two task slots, and a task may fail once and be retried (plain local[N] never retries),
     * so the retry tests see what a cluster does.
     */
    static JavaSparkContext start() {
        JavaSparkContext sc = new JavaSparkContext(new SparkConf().setMaster("local[2,2]").setAppName("biflow-test")
                .set("spark.ui.enabled", "false").set("spark.ui.showConsoleProgress", "false"));
        sc.setLogLevel("ERROR");
        SparkCommand.shareContext(sc);
        return sc;
    }

    static void stop(JavaSparkContext sc) {
        SparkCommand.shareContext(null);
        if (sc != null) sc.stop();
    }

    /** A tiny class-conditional TarFlow on 1x8x8 images (2 blocks), its weights made non-trivial (the zero-initialised output heads too). */
    static TarFlow tinyFlow(long seed) {
        TarFlow m = new TarFlow(new TarFlowConfig(1, 8, 2, 16, 2, 1, 3, 8, NormControl.NONE, 0f), new Rng(seed));
        Rng r = new Rng(seed + 1);
        for (Tensor p : m.parameters()) {
            float[] d = p.data();
            for (int i = 0; i < d.length; i++) d[i] += 0.05f * (float) r.nextGaussian();
        }
        return m;
    }

    static Path save(TarFlow m, Path file) throws IOException {
        Checkpoints.save(m, file, Map.of());
        return file;
    }

    record Run(int code, String out, String err) {}

    /** biflow with these arguments, in this JVM, its output captured. */
    static Run biflow(String... args) {
        PrintStream o = System.out, e = System.err;
        ByteArrayOutputStream bo = new ByteArrayOutputStream(), be = new ByteArrayOutputStream();
        System.setOut(new PrintStream(bo, true));
        System.setErr(new PrintStream(be, true));
        try {
            int code = dev.biflow.cli.Main.execute(args);
            return new Run(code, bo.toString(), be.toString());
        } finally {
            System.setOut(o);
            System.setErr(e);
        }
    }

    static Run ok(String... args) {
        Run r = biflow(args);
        if (r.code() != 0) throw new AssertionError("biflow " + String.join(" ", args) + " -> " + r.code() + "\nstdout:\n" + r.out() + "\nstderr:\n" + r.err());
        return r;
    }

}
