// Options and helpers shared by the subcommands: threads, seeds, progress bars, label parsing.
package dev.biflow.cli;

import dev.biflow.engine.kernels.Parallel;
import me.tongfei.progressbar.ProgressBar;
import me.tongfei.progressbar.ProgressBarBuilder;
import me.tongfei.progressbar.ProgressBarStyle;
import picocli.CommandLine.Option;

import java.time.Duration;

/** Mixed into commands that compute. */
final class Common {
    @Range(min = 1, max = 4096) @Option(names = "--threads", description = "CPU threads for kernels (default: all cores; 1 = deterministic).")
    Integer threads;

    @Option(names = "--device", description = "Where heavy kernels run: cpu | opencl | opencl:N (see `biflow devices`). "
            + "OpenCL never falls back silently: no device is an error.")
    String device = "cpu";

    @Option(names = "--allow-nonfinite", description = "Load checkpoints whose weights hold NaN or Inf (refused by default), for debugging a broken run.")
    boolean allowNonFinite;

    void apply() {
        dev.biflow.flow.model.Checkpoints.setAllowNonFinite(allowNonFinite);
        if (threads != null) Parallel.setThreads(threads);
        dev.biflow.engine.Backend.use(dev.biflow.gpu.Devices.backend(device));
    }

    /**
     * BiFlow's sampler for G, with G's 1-NFE pass as one resident device program when the active backend
     * is OpenCL (weights up once, one put and one get per batch of up to {@code batch}); op by op otherwise,
     * and for two-pass CFG with w > 0, which the resident program does not run (said on stderr). The
     * returned handle closes the device program.
     */
    static DeviceSampler biflowSampler(dev.biflow.flow.inverse.FrozenFlow ff, dev.biflow.flow.inverse.BiFlowModel g,
                                       float sigma, int batch, float w) {
        var one = dev.biflow.flow.inverse.BiFlowSampler.of(ff, g, sigma);
        if (!(dev.biflow.engine.Backend.active() instanceof dev.biflow.gpu.OpenClBackend be)) return new DeviceSampler(one, null);
        if (g.config.cfg() == dev.biflow.flow.inverse.BackwardConfig.Cfg.TWO_PASS && w > 0) {
            System.err.println("note: G uses two-pass CFG (w = " + w + "): it runs op by op on " + be.name() + ", not as one resident pass");
            return new DeviceSampler(one, null);
        }
        var r = dev.biflow.flow.inverse.ResidentBiFlow.of(g, be, batch);
        return new DeviceSampler(one.withResident(r), r);
    }

    /** A sampler and the device program it uses (null on the CPU). */
    record DeviceSampler(dev.biflow.flow.inverse.BiFlowSampler sampler, dev.biflow.flow.inverse.ResidentBiFlow program) implements AutoCloseable {
        @Override
        public void close() { if (program != null) program.close(); }
    }

    /**
     * A progress bar with rate and ETA. On a terminal it redraws in place; when output goes to a
     * file or CI log it prints one plain line every 15 s instead of a flood of carriage returns.
     */
    static ProgressBar bar(String task, long total, String unit) {
        ProgressBarBuilder b = new ProgressBarBuilder().setTaskName(task).setInitialMax(total).setUnit(" " + unit, 1)
                .setStyle(ProgressBarStyle.ASCII).showSpeed().setMaxRenderedLength(110)
                .setSpeedUnit(java.time.temporal.ChronoUnit.SECONDS);
        if (System.console() == null || System.getenv("CI") != null) {
            b.setUpdateIntervalMillis(15_000).setConsumer(new LineConsumer());
        } else {
            b.setUpdateIntervalMillis(500).continuousUpdate();
        }
        return b.build();
    }

    /** Plain lines for logs: each update on its own line, the last one printed at close. */
    private static final class LineConsumer implements me.tongfei.progressbar.ProgressBarConsumer {
        private String last = "";
        private String printed = "";

        @Override public int getMaxRenderedLength() { return 110; }

        @Override
        public void accept(String rendered) {
            last = rendered.strip();
            if (!last.equals(printed)) {
                System.err.println(last);
                printed = last;
            }
        }

        @Override
        public void close() {
            if (!last.equals(printed)) System.err.println(last);
        }
    }

    /** A map in the order given (k1, v1, k2, v2, ...): a report's rows must not come out in Map.of's per-JVM order. */
    static java.util.Map<String, String> ordered(String... kv) {
        java.util.Map<String, String> m = new java.util.LinkedHashMap<>();
        for (int i = 0; i + 1 < kv.length; i += 2) m.put(kv[i], kv[i + 1]);
        return m;
    }

    static String duration(double seconds) {
        Duration d = Duration.ofMillis((long) (seconds * 1000));
        return d.toHours() > 0 ? String.format("%dh%02dm%02ds", d.toHours(), d.toMinutesPart(), d.toSecondsPart())
                : d.toMinutes() > 0 ? String.format("%dm%02ds", d.toMinutes(), d.toSecondsPart())
                : String.format("%.1fs", seconds);
    }

    /** "0,1,2" or "all" (one of each class, cycling) for n samples of a model with the given classes. */
    static int[] labels(String spec, int n, int numClasses) { return labels(spec, 0, n, numClasses); }

    /** Labels {@code from .. from + n - 1} of the sequence {@link #labels(String, int, int)} describes (for batches). */
    static int[] labels(String spec, long from, int n, int numClasses) {
        if (numClasses == 0) {
            if (spec != null && !spec.equals("none"))
                throw new IllegalArgumentException("--labels given for an unconditional model; leave it out");
            return null;
        }
        int[] y = new int[n];
        if (spec == null || spec.equals("all")) {
            for (int i = 0; i < n; i++) y[i] = (int) ((from + i) % numClasses);
            return y;
        }
        String[] parts = spec.split(",");
        for (int i = 0; i < n; i++) {
            String p = parts[(int) ((from + i) % parts.length)].trim();
            try {
                y[i] = Integer.parseInt(p);
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("--labels: '" + p + "' is not a class index; use e.g. --labels 0,3,7 or --labels all");
            }
            if (y[i] < 0 || y[i] >= numClasses)
                throw new IllegalArgumentException("--labels: class " + y[i] + " is outside [0, " + numClasses + ")");
        }
        return y;
    }
}
