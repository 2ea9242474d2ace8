// The work counter every kernel benchmark reports, so KernelTable can print GFLOP/s or GB/s.
package dev.biflow.bench;

import org.openjdk.jmh.annotations.AuxCounters;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;

/**
 * Add it as a parameter of a {@code @Benchmark} method and count each call's work: {@code flop}
 * for compute-bound kernels (GEMM, attention), {@code bytes} (read + written) for memory-bound
 * ones (layernorm, softmax, elementwise). JMH reports each counter as a rate next to the score,
 * and {@link KernelTable} turns the rates into GFLOP/s and GB/s.
 */
@State(Scope.Thread)
@AuxCounters(AuxCounters.Type.OPERATIONS)
public class Work {
    /** Floating-point operations done so far in this iteration (an FMA counts 2). */
    public double flop;
    /** Bytes read plus bytes written so far in this iteration. */
    public double bytes;

    @Setup(Level.Iteration)
    public void reset() {
        flop = 0;
        bytes = 0;
    }
}
