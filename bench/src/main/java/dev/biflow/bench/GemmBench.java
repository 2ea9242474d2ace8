// JMH benchmark of Gemm.gemm without an epilogue: square sizes, the transformer's Linear layers and attention GEMMs.
package dev.biflow.bench;

import dev.biflow.engine.kernels.Gemm;
import dev.biflow.engine.kernels.GemmEpilogue;
import dev.biflow.engine.kernels.Parallel;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.Warmup;

/**
 * shape is "MxNxK" with an optional ":TT" suffix (op flags of A and B, N or T): C(MxN) =
 * op(A)(MxK) op(B)(KxN). Shapes: squares; the transformer's Linear layers, (B*T x D) x (D x 4D)
 * with B*T = 64*49 = 3136 or 64*196 = 12544 and D = 128 or 256, weights stored (out, in) as in
 * PyTorch, hence B transposed; attention per head (T = 196, head dim 32): scores Q K^T and P V.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.Throughput)
@OutputTimeUnit(TimeUnit.SECONDS)
@Warmup(iterations = 4, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector"})
public class GemmBench {
    @Param({"128x128x128", "256x256x256", "512x512x512", "1024x1024x1024", "2048x2048x2048",
            "3136x512x128:NT", "12544x512x128:NT", "3136x1024x256:NT", "12544x1024x256:NT",
            "196x196x32:NT", "196x32x196:NN"})
    public String shape;

    @Param({"1", "2"})
    public int threads;

    private int m, n, k;
    private boolean transA, transB;
    private float[] a, b, c;

    @Setup(Level.Trial)
    public void setUp() {
        String[] parts = shape.split(":");
        String[] dims = parts[0].split("x");
        m = Integer.parseInt(dims[0]);
        n = Integer.parseInt(dims[1]);
        k = Integer.parseInt(dims[2]);
        String ops = parts.length > 1 ? parts[1] : "NN";
        transA = ops.charAt(0) == 'T';
        transB = ops.charAt(1) == 'T';
        SplittableRandom r = new SplittableRandom(1);
        a = random(r, m * k);
        b = random(r, k * n);
        c = new float[m * n];
        Parallel.setThreads(threads);
    }

    static float[] random(SplittableRandom r, int len) {
        float[] x = new float[len];
        for (int i = 0; i < len; i++) x[i] = (float) (r.nextDouble() * 2 - 1);
        return x;
    }

    /** Named sgemm (BLAS's name for it) so results stay comparable with earlier sittings (bench/sitting.sh greps it). */
    @Benchmark
    public float[] sgemm(Work work) {
        Gemm.gemm(transA, transB, m, n, k, 1f, a, 0, transA ? m : k, b, 0, transB ? k : n, 0f, c, 0, n, GemmEpilogue.NONE);
        work.flop += 2.0 * m * n * k;
        return c;
    }
}
