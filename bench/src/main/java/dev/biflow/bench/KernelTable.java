// Runs the kernel benchmarks through JMH and prints one table of GFLOP/s (or GB/s) per thread count.
package dev.biflow.bench;

import java.io.File;
import java.lang.reflect.Field;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TreeSet;
import java.util.regex.Pattern;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.infra.BenchmarkParams;
import org.openjdk.jmh.results.BenchmarkResult;
import org.openjdk.jmh.results.IterationResult;
import org.openjdk.jmh.results.Result;
import org.openjdk.jmh.results.RunResult;
import org.openjdk.jmh.runner.Runner;
import org.openjdk.jmh.runner.RunnerException;
import org.openjdk.jmh.runner.options.ChainedOptionsBuilder;
import org.openjdk.jmh.runner.options.OptionsBuilder;
import org.openjdk.jmh.runner.options.TimeValue;
import org.openjdk.jmh.runner.options.VerboseMode;

/**
 * The kernel table: every benchmark in {@link #BENCHMARKS}, each in fresh forked JVMs, reported
 * as the median rate over all measured iterations with the min..max spread (the host is noisy;
 * a single number hides that), and again per CPU-second with the cores the JVM actually got
 * ({@link CpuTimeProfiler}), which separates a slow kernel from a starved one.
 *
 * <p>To add a kernel: write a JMH class whose {@code @Benchmark} methods take a {@link Work} and
 * count each call's flop (or bytes), give it an {@code int threads} {@code @Param} that calls
 * {@code Parallel.setThreads} if it is multithreaded, and list it in {@link #BENCHMARKS}.
 *
 * <pre>
 * java -cp bench/target/benchmarks.jar dev.biflow.bench.KernelTable [--threads 1,2] [--include REGEX]
 *      [--param name=v1,v2] [--forks N] [--warmup N] [--iterations N] [--time MS] [--log FILE]
 * </pre>
 */
public final class KernelTable {
    private KernelTable() {}

    /** The benchmarks the table runs, in print order. Add new kernel benchmarks here. */
    static final List<Class<?>> BENCHMARKS = List.of(
            GemmBench.class, OpsBench.class);

    static final String USAGE = """
            usage: KernelTable [--threads 1,2] [--include REGEX] [--param name=v1,v2]... [--forks N]
                               [--warmup N] [--iterations N] [--time MS] [--log FILE]
              --threads     values for each benchmark's 'threads' parameter (default: 1,2)
              --include     run the benchmarks whose full name matches REGEX instead of the list
                            (e.g. 'GemmBench'; any JMH benchmark in the jar can be named)
              --param       override a @Param, e.g. --param shape=1024x1024x1024
              --forks       fresh JVMs per configuration (default 1); iterations of all forks are pooled
              --warmup      warm-up iterations per fork (default 4)
              --iterations  measured iterations per fork (default 5)
              --time        length of one iteration in ms (default 1000)
              --log         where JMH's own output goes (default bench/target/kernel-table.log)
            """;

    public static void main(String[] args) throws RunnerException {
        String threads = "1,2", include = null, log = "bench/target/kernel-table.log";
        int forks = 1, warmup = 4, iterations = 5, timeMs = 1000;
        Map<String, String[]> params = new LinkedHashMap<>();
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (a.equals("-h") || a.equals("--help")) {
                System.out.print(USAGE);
                return;
            }
            if (i + 1 >= args.length) fail("missing value after " + a);
            String v = args[++i];
            switch (a) {
                case "--threads" -> threads = v;
                case "--include" -> include = v;
                case "--log" -> log = v;
                case "--forks" -> forks = positive(a, v);
                case "--warmup" -> warmup = nonNegative(a, v);
                case "--iterations" -> iterations = positive(a, v);
                case "--time" -> timeMs = positive(a, v);
                case "--param" -> {
                    int eq = v.indexOf('=');
                    if (eq <= 0) fail("--param wants name=v1,v2, got " + v);
                    params.put(v.substring(0, eq), v.substring(eq + 1).split(","));
                }
                default -> fail("unknown option " + a);
            }
        }
        for (String t : threads.split(",")) positive("--threads", t);

        File logFile = new File(log);
        if (logFile.getParentFile() != null) logFile.getParentFile().mkdirs();
        ChainedOptionsBuilder opt = new OptionsBuilder()
                .forks(forks)
                .warmupIterations(warmup)
                .measurementIterations(iterations)
                .warmupTime(TimeValue.milliseconds(timeMs))
                .measurementTime(TimeValue.milliseconds(timeMs))
                .threads(1) // kernels parallelise themselves through Parallel
                .jvmArgsAppend("--add-modules", "jdk.incubator.vector")
                .addProfiler(CpuTimeProfiler.class)
                .shouldFailOnError(true)
                .verbosity(VerboseMode.NORMAL)
                .output(logFile.getPath())
                .param("threads", threads.split(","));
        if (include != null) opt.include(include);
        else for (Class<?> c : BENCHMARKS) opt.include(Pattern.quote(c.getName()) + "\\.");
        params.forEach(opt::param);

        System.out.printf(Locale.ROOT, "Kernel table: %s; threads %s; %d fork(s) x (%d warm-up + %d measured) x %d ms%n",
                BENCHMARKS.stream().map(Class::getSimpleName).toList(), threads, forks, warmup, iterations, timeMs);
        System.out.println("JMH log: " + logFile.getPath());
        long t0 = System.nanoTime();
        Collection<RunResult> results = new Runner(opt.build()).run();
        System.out.printf(Locale.ROOT, "done in %.0f s%n%n", (System.nanoTime() - t0) * 1e-9);
        System.out.print(table(results));
    }

    /** One printed cell: the median of the per-iteration rates and their spread. */
    record Cell(double median, double min, double max, int n, String unit) {
        @Override public String toString() {
            return String.format(Locale.ROOT, "%7.1f (%5.1f-%5.1f)", median, min, max);
        }
    }

    /** What one configuration measured: wall-clock rates, rates per CPU-second, cores kept busy. */
    record Measured(Cell wall, Cell perCpu, Cell cores) {}

    /**
     * Formats results as rows (benchmark + parameters other than threads) x columns (threads):
     * first the wall-clock rates, then the same per CPU-second with the cores the JVM kept busy.
     */
    static String table(Collection<RunResult> results) {
        Map<String, Map<String, Measured>> rows = new LinkedHashMap<>();
        Map<String, String> units = new LinkedHashMap<>();
        TreeSet<String> columns = new TreeSet<>(Comparator.comparingInt(KernelTable::numericOrMax).thenComparing(s -> s));
        List<RunResult> sorted = new ArrayList<>(results);
        sorted.sort(Comparator.comparing(KernelTable::sortKey));
        for (RunResult r : sorted) {
            BenchmarkParams p = r.getParams();
            String name = p.getBenchmark().replaceFirst("^dev\\.biflow\\.bench\\.", "");
            StringBuilder row = new StringBuilder(name);
            for (String key : p.getParamsKeys())
                if (!key.equals("threads")) row.append(' ').append(key).append('=').append(p.getParam(key));
            String col = p.getParamsKeys().contains("threads") ? p.getParam("threads") : "-";
            columns.add(col);
            Measured m = measured(r);
            rows.computeIfAbsent(row.toString(), x -> new LinkedHashMap<>()).put(col, m);
            units.put(row.toString(), m.wall().unit());
        }
        int w = Math.max(9, rows.keySet().stream().mapToInt(String::length).max().orElse(9));
        StringBuilder out = new StringBuilder();
        header(out, w, columns, "benchmark (wall clock)");
        for (var e : rows.entrySet()) {
            out.append(String.format(Locale.ROOT, "%-" + w + "s  %-9s", e.getKey(), units.get(e.getKey())));
            for (String c : columns) {
                Measured m = e.getValue().get(c);
                out.append("  ").append(m == null ? String.format(Locale.ROOT, "%-21s", "") : m.wall().toString());
            }
            out.append('\n');
        }
        out.append("median over all measured iterations (min-max); GFLOP/s from Work.flop, GB/s from Work.bytes\n\n");
        header(out, w, columns, "benchmark (per CPU-second)");
        for (var e : rows.entrySet()) {
            out.append(String.format(Locale.ROOT, "%-" + w + "s  %-9s", e.getKey(), units.get(e.getKey())));
            for (String c : columns) {
                Measured m = e.getValue().get(c);
                String cell = m == null || m.perCpu().n() == 0 ? ""
                        : String.format(Locale.ROOT, "%7.1f @ %4.2f cores", m.perCpu().median(), m.cores().median());
                out.append(String.format(Locale.ROOT, "  %-21s", cell));
            }
            out.append('\n');
        }
        out.append("rate / (process CPU time per wall second), medians; on a busy shared host the wall-clock\n"
                   + "rate drops with the CPU the JVM gets, this one much less (cores < threads: it was starved)\n");
        return out.toString();
    }

    private static void header(StringBuilder out, int w, Collection<String> columns, String title) {
        out.append(String.format(Locale.ROOT, "%-" + w + "s  %-9s", title, "unit"));
        for (String c : columns)
            out.append(String.format(Locale.ROOT, "  %-21s", c.equals("-") ? "" : c + (c.equals("1") ? " thread" : " threads")));
        out.append('\n');
    }

    /** Per-iteration rates of the Work counter that was used (flop, else bytes, else the raw score). */
    static Measured measured(RunResult r) {
        List<Double> flop = new ArrayList<>(), bytes = new ArrayList<>(), score = new ArrayList<>(), cores = new ArrayList<>();
        for (BenchmarkResult br : r.getBenchmarkResults())
            for (IterationResult it : br.getIterationResults()) {
                Map<String, Result> sec = it.getSecondaryResults();
                flop.add(sec.containsKey("flop") ? sec.get("flop").getScore() : 0);
                bytes.add(sec.containsKey("bytes") ? sec.get("bytes").getScore() : 0);
                cores.add(sec.containsKey("cpu.cores") ? sec.get("cpu.cores").getScore() : Double.NaN);
                score.add(it.getPrimaryResult().getScore());
            }
        List<Double> rate;
        double scale;
        String unit;
        if (flop.stream().anyMatch(x -> x > 0)) {
            rate = flop; scale = 1e-9; unit = "GFLOP/s";
        } else if (bytes.stream().anyMatch(x -> x > 0)) {
            rate = bytes; scale = 1e-9; unit = "GB/s";
        } else {
            rate = score; scale = 1; unit = r.getPrimaryResult().getScoreUnit();
        }
        List<Double> perCpu = new ArrayList<>(), busy = new ArrayList<>();
        for (int i = 0; i < rate.size(); i++)
            if (cores.get(i) > 0) {
                perCpu.add(rate.get(i) / cores.get(i));
                busy.add(cores.get(i));
            }
        return new Measured(stats(rate, scale, unit), stats(perCpu, scale, unit), stats(busy, 1, "cores"));
    }

    static Cell stats(List<Double> xs, double scale, String unit) {
        double[] v = xs.stream().mapToDouble(x -> x * scale).sorted().toArray();
        if (v.length == 0) return new Cell(Double.NaN, Double.NaN, Double.NaN, 0, unit);
        double med = v.length % 2 == 1 ? v[v.length / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
        return new Cell(med, v[0], v[v.length - 1], v.length, unit);
    }

    /** Orders rows as declared: benchmark list order, then each @Param's declared value order. */
    static String sortKey(RunResult r) {
        BenchmarkParams p = r.getParams();
        String bench = p.getBenchmark();
        StringBuilder key = new StringBuilder();
        int classIndex = BENCHMARKS.size();
        Class<?> cls = null;
        for (int i = 0; i < BENCHMARKS.size(); i++)
            if (bench.startsWith(BENCHMARKS.get(i).getName() + ".")) {
                classIndex = i;
                cls = BENCHMARKS.get(i);
            }
        key.append(String.format(Locale.ROOT, "%04d|%s", classIndex, bench));
        for (String name : p.getParamsKeys()) {
            if (name.equals("threads")) continue;
            int idx = declaredIndex(cls, name, p.getParam(name));
            key.append(String.format(Locale.ROOT, "|%04d%s", idx, idx == 9999 ? p.getParam(name) : ""));
        }
        return key.toString();
    }

    static int declaredIndex(Class<?> cls, String field, String value) {
        if (cls == null) return 9999;
        try {
            Field f = cls.getField(field);
            Param ann = f.getAnnotation(Param.class);
            int i = ann == null ? -1 : Arrays.asList(ann.value()).indexOf(value);
            return i < 0 ? 9999 : i;
        } catch (NoSuchFieldException e) {
            return 9999;
        }
    }

    static int numericOrMax(String s) {
        try {
            return Integer.parseInt(s);
        } catch (NumberFormatException e) {
            return Integer.MAX_VALUE;
        }
    }

    private static int positive(String opt, String v) {
        int x = nonNegative(opt, v);
        if (x == 0) fail(opt + " must be >= 1, got " + v);
        return x;
    }

    private static int nonNegative(String opt, String v) {
        try {
            int x = Integer.parseInt(v.trim());
            if (x < 0) fail(opt + " must be >= 0, got " + v);
            return x;
        } catch (NumberFormatException e) {
            fail(opt + " wants an integer, got " + v);
            return 0;
        }
    }

    private static void fail(String msg) {
        System.err.println("KernelTable: " + msg);
        System.err.print(USAGE);
        System.exit(2);
    }
}
