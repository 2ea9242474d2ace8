// JMH benchmarks of the transformer's other kernels: attention fwd+bwd, layernorm, softmax, GELU, elementwise add.
package dev.biflow.bench;

import dev.biflow.engine.Fused;
import dev.biflow.engine.Grad;
import dev.biflow.engine.Ops;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.kernels.Parallel;
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

import java.util.concurrent.TimeUnit;

/**
 * Shapes of the reference TARFlow (batch 64, width 128, 4 heads of 32): T = 49 (patch 4) or 196
 * (patch 2). Attention counts 4 T^2 Dh flops per head forward and twice that backward; the
 * memory-bound kernels count bytes read + written once (their roofline is bandwidth).
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.Throughput)
@OutputTimeUnit(TimeUnit.SECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 4, time = 1)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector"})
public class OpsBench {
    @Param({"49", "196"})
    public int tokens;

    @Param({"1", "2"})
    public int threads;

    static final int B = 64, H = 4, DH = 32, D = 128;
    private Tensor q, k, v, x, w, bias, y4;

    @Setup(Level.Trial)
    public void setUp() {
        Parallel.setThreads(threads);
        Rng r = new Rng(1);
        q = Tensor.randn(r, B, H, tokens, DH).requiresGrad(true);
        k = Tensor.randn(r, B, H, tokens, DH).requiresGrad(true);
        v = Tensor.randn(r, B, H, tokens, DH).requiresGrad(true);
        x = Tensor.randn(r, B, tokens, D);
        w = Tensor.ones(D);
        bias = Tensor.zeros(D);
        y4 = Tensor.randn(r, B, tokens, 4 * D);
    }

    @Benchmark
    public Tensor attentionForward(Work work) {
        try (var ng = Grad.noGrad()) {
            Tensor o = Fused.attention(q, k, v, true, null, 0.17f);
            work.flop += 4.0 * B * H * tokens * tokens * DH;
            return o;
        }
    }

    @Benchmark
    public Tensor attentionForwardBackward(Work work) {
        q.zeroGrad(); k.zeroGrad(); v.zeroGrad();
        Tensor o = Fused.attention(q, k, v, true, null, 0.17f);
        o.backward(Tensor.onesLike(o));
        work.flop += 12.0 * B * H * tokens * tokens * DH;
        return o;
    }

    @Benchmark
    public Tensor layerNorm(Work work) {
        try (var ng = Grad.noGrad()) {
            Tensor o = Fused.layerNorm(x, w, bias, 1e-5f);
            work.bytes += 8.0 * x.numel();
            return o;
        }
    }

    @Benchmark
    public Tensor softmax(Work work) {
        try (var ng = Grad.noGrad()) {
            Tensor o = Fused.softmax(y4, -1);
            work.bytes += 8.0 * y4.numel();
            return o;
        }
    }

    @Benchmark
    public Tensor gelu(Work work) {
        try (var ng = Grad.noGrad()) {
            Tensor o = Ops.gelu(y4);
            work.bytes += 8.0 * y4.numel();
            return o;
        }
    }

    @Benchmark
    public Tensor add(Work work) {
        try (var ng = Grad.noGrad()) {
            Tensor o = Ops.add(x, x);
            work.bytes += 12.0 * x.numel();
            return o;
        }
    }
}
