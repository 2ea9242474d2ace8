// JMH profiler that records how many cores the forked JVM kept busy in each iteration.
package dev.biflow.bench;

import java.lang.management.ManagementFactory;
import java.util.Collection;
import java.util.List;
import org.openjdk.jmh.infra.BenchmarkParams;
import org.openjdk.jmh.infra.IterationParams;
import org.openjdk.jmh.profile.InternalProfiler;
import org.openjdk.jmh.results.AggregationPolicy;
import org.openjdk.jmh.results.IterationResult;
import org.openjdk.jmh.results.Result;
import org.openjdk.jmh.results.ScalarResult;

/**
 * Reports "cpu.cores": process CPU time / wall time over an iteration. On a shared, busy host a
 * kernel's wall-clock rate falls with the CPU it is given; rate / cpu.cores (work per CPU-second)
 * tells a slow kernel from a starved one. A 2-thread kernel on an idle 2-core host shows ~2.
 */
public final class CpuTimeProfiler implements InternalProfiler {
    private long cpu0, wall0;

    private static long processCpuNanos() {
        return ((com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean()).getProcessCpuTime();
    }

    @Override
    public String getDescription() {
        return "process CPU time per wall-clock second (cores kept busy)";
    }

    @Override
    public void beforeIteration(BenchmarkParams benchmarkParams, IterationParams iterationParams) {
        cpu0 = processCpuNanos();
        wall0 = System.nanoTime();
    }

    @Override
    public Collection<? extends Result> afterIteration(BenchmarkParams benchmarkParams, IterationParams iterationParams,
                                                       IterationResult result) {
        double cores = (processCpuNanos() - cpu0) / (double) Math.max(1, System.nanoTime() - wall0);
        return List.of(new ScalarResult("cpu.cores", cores, "cores", AggregationPolicy.AVG));
    }
}
