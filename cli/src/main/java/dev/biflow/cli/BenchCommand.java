// biflow bench: end-to-end timings of the forward flow (training step, exact-inverse sampling) on 1 and 2 threads.
package dev.biflow.cli;

import dev.biflow.engine.Arena;
import dev.biflow.engine.Grad;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.kernels.Parallel;
import dev.biflow.engine.optim.AdamW;
import dev.biflow.engine.plan.CpuExecutor;
import dev.biflow.engine.plan.Plan;
import dev.biflow.engine.plan.PlanBuilder;
import dev.biflow.engine.plan.PlanOp;
import dev.biflow.engine.plan.Region;
import dev.biflow.flow.model.NormControl;
import dev.biflow.flow.model.TarFlow;
import dev.biflow.flow.model.TarFlowConfig;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;

@Command(name = "bench", mixinStandardHelpOptions = true, showDefaultValues = true, sortOptions = false,
        description = {"Time the forward flow end to end and print a table: training step (forward + backward + AdamW)",
                "and exact-inverse sampling per image (KV cache), for the reference configurations",
                "(28x28x1, width 128, 4 blocks x 2 layers, 4 heads of 32, MLP 4x, batch 64) at patch 2 and 4.",
                "Compare with ../shared/peers/tarflow_bench.py run in the same sitting.",
                "Per row: median, min and max of the timed repeats, the share of their wall time spent in GC pauses (gc %),",
                "and the memory allocated per timed pass by all threads (MB/pass; for train, per step): regressions show here."},
        footer = {"", "Examples:", "  biflow bench", "  biflow bench --patches 4 --threads-list 1,2 --repeats 5",
                "  biflow bench --what exact-cfg,biflow --device opencl --threads-list 16"})
final class BenchCommand implements Callable<Integer> {
    @Option(names = "--patches", split = ",", description = "Patch sizes to time.") int[] patches = {2, 4};
    @Option(names = "--threads-list", split = ",", description = "Thread counts to time.") int[] threadsList = {1, 2};
    @Option(names = "--batch", description = "Training batch size.") int batch = 64;
    @Option(names = "--sample-batch", description = "Images sampled together.") int sampleBatch = 64;
    @Option(names = "--repeats", description = "Timed repetitions (median reported) after the warm-up.") int repeats = 3;
    @Option(names = "--warmup", description = "Seconds of untimed passes before the timed ones, at least one pass "
            + "(default: ${DEFAULT-VALUE}): the JIT is still recompiling the GEMM kernel a few seconds in, so one pass is not enough.")
    double warmup = 3;
    @Option(names = "--what", split = ",", description = "train, sample, bidir (an 8-layer bidirectional pass of the size of the BiFlow backward model), "
            + "exact-cfg (TARFlow sampling: exact inverse with guidance 1 and score denoising; with --device opencl also a row for the exact inverse "
            + "with guidance as one resident device program, without denoising), biflow (BiFlow G, 1-NFE with training-time CFG; with --device opencl one resident device pass)") String[] what = {"train", "sample", "bidir"};
    @Option(names = "--device", description = "Where GEMMs and attention run: cpu | opencl | opencl:N (see `biflow devices`); "
            + "the other ops use the CPU threads of --threads-list. OpenCL never falls back silently: no device is an error.")
    String device = "cpu";

    @Override
    public Integer call() {
        List<String> rows = new ArrayList<>();
        rows.add("device: " + device);
        rows.add(String.format(Locale.ROOT, "%-8s %-8s %-22s %12s %12s %12s %8s %12s", "patch", "threads", "what", "median", "min", "max", "gc %", "MB/pass"));
        int saved = Parallel.threads();
        dev.biflow.engine.Backend backend = dev.biflow.gpu.Devices.backend(device);  // kernels built (warm-up) here, outside the timings
        dev.biflow.engine.Backend.use(backend);
        java.util.Map<String, Double> medians = new java.util.HashMap<>();
        try {
            for (int p : patches) {
                TarFlowConfig cfg = new TarFlowConfig(1, 28, p, 128, 4, 2, 10, 32, NormControl.SOFT, 4f);
                for (int th : threadsList) {
                    Parallel.setThreads(th);
                    for (String w : what) {
                        double[] t = switch (w) {
                            case "train" -> timeTrain(cfg);
                            case "sample" -> timeSample(cfg);
                            case "bidir" -> timeBidir(cfg);
                            case "exact-cfg" -> timeSampler(cfg, false, backend);
                            case "biflow" -> timeSampler(cfg, true, backend);
                            default -> throw new IllegalArgumentException("--what: unknown '" + w + "' (train, sample, bidir, exact-cfg, biflow)");
                        };
                        String label = switch (w) {
                            case "train" -> "train step (s)";
                            case "sample" -> "exact inverse (ms/img)";
                            case "exact-cfg" -> "exact+CFG+denoise (ms/img)";
                            case "biflow" -> backend instanceof dev.biflow.gpu.OpenClBackend ? "BiFlow 1-NFE resident (ms/img)" : "BiFlow 1-NFE (ms/img)";
                            default -> "bidir 8L pass (ms/img)";
                        };
                        double scale = w.equals("train") ? 1 : 1000.0 / sampleBatch;
                        Arrays.sort(t);
                        medians.put(p + "/" + th + "/" + w, t[t.length / 2] * scale);
                        String row = String.format(Locale.ROOT, "%-8s %-8d %-22s %12.3f %12.3f %12.3f %8.1f %12.1f", p + " (T=" + cfg.tokens() + ")", th, label,
                                t[t.length / 2] * scale, t[0] * scale, t[t.length - 1] * scale, 100 * lastGcShare, lastAllocPerPass / 1e6);
                        rows.add(row);
                        System.out.println(row);
                        // On OpenCL, the exact inverse with CFG also runs resident (ResidentTarFlow): a second row, since score
                        // denoising (F's autograd backward) stays per op and that row leaves it out; the row above is unchanged.
                        if (w.equals("exact-cfg") && backend instanceof dev.biflow.gpu.OpenClBackend cl) {
                            double[] tr = timeExactResident(cfg, cl);
                            Arrays.sort(tr);
                            medians.put(p + "/" + th + "/exact-resident", tr[tr.length / 2] * scale);
                            String rr = String.format(Locale.ROOT, "%-8s %-8d %-22s %12.3f %12.3f %12.3f", p + " (T=" + cfg.tokens() + ")", th,
                                    "exact+CFG resident, no denoise (ms/img)", tr[tr.length / 2] * scale, tr[0] * scale, tr[tr.length - 1] * scale);
                            rows.add(rr);
                            System.out.println(rr);
                        }
                    }
                }
            }
        } finally {
            Parallel.setThreads(saved);
            dev.biflow.engine.Backend.use(dev.biflow.engine.Backend.CPU);
            if (backend instanceof AutoCloseable c) try { c.close(); } catch (Exception ignored) { /* releasing device memory at exit */ }
        }
        // the paper's comparison: the same batch through both samplers, as a ratio
        for (int p : patches)
            for (int th : threadsList) {
                Double exact = medians.get(p + "/" + th + "/exact-cfg"), one = medians.get(p + "/" + th + "/biflow");
                if (exact != null && one != null)
                    rows.add(String.format(Locale.ROOT, "patch %d, %d thread(s): BiFlow 1-NFE %.2f ms/img vs exact inverse + CFG + denoising %.2f ms/img: %.1fx faster",
                            p, th, one, exact, exact / one));
                Double res = medians.get(p + "/" + th + "/exact-resident");
                if (res != null && one != null)
                    rows.add(String.format(Locale.ROOT, "patch %d, %d thread(s): BiFlow 1-NFE %.2f ms/img vs resident exact inverse + CFG (no denoising) %.2f ms/img: %.1fx faster",
                            p, th, one, res, res / one));
            }
        System.out.println();
        rows.forEach(System.out::println);
        return 0;
    }

    /**
     * Runs pass (which times its own work and returns seconds) untimed for the warm-up, at least once, then
     * repeats times, returning those timings.
     */
    private double[] measure(java.util.function.DoubleSupplier pass) {
        long end = System.nanoTime() + (long) (warmup * 1e9);
        do pass.getAsDouble(); while (System.nanoTime() < end);
        double[] t = new double[repeats];
        long gc0 = gcMillis(), a0 = allocatedBytes(), w0 = System.nanoTime();
        for (int r = 0; r < repeats; r++) t[r] = pass.getAsDouble();
        long wall = System.nanoTime() - w0;
        lastGcShare = (gcMillis() - gc0) * 1e6 / Math.max(1, wall);
        lastAllocPerPass = (allocatedBytes() - a0) / (double) repeats;
        return t;
    }

    /** Of the last measure(): the share of its timed wall time spent in GC, and bytes allocated per timed pass (all threads). */
    private double lastGcShare, lastAllocPerPass;

    /** Milliseconds all collectors have spent so far (pauses, as the JVM counts them). */
    private static long gcMillis() {
        long s = 0;
        for (var gc : java.lang.management.ManagementFactory.getGarbageCollectorMXBeans()) s += Math.max(0, gc.getCollectionTime());
        return s;
    }

    /** Bytes allocated so far by every live thread (the kernel pool's workers included); -1 where the JVM cannot tell. */
    private static long allocatedBytes() {
        if (java.lang.management.ManagementFactory.getThreadMXBean() instanceof com.sun.management.ThreadMXBean tb && tb.isThreadAllocatedMemorySupported())
            return tb.getTotalThreadAllocatedBytes();
        return -1;
    }

    private double[] timeTrain(TarFlowConfig cfg) {
        TarFlow m = new TarFlow(cfg, new Rng(1));
        randomiseOutput(m);
        AdamW opt = new AdamW(m.parameters(), 1e-4, 0.9, 0.95, 1e-8, 1e-4);
        Rng rng = new Rng(2);
        double[] t = measure(() -> {
            Tensor x = Tensor.randn(rng, batch, 1, 28, 28);
            int[] y = new int[batch];
            for (int i = 0; i < batch; i++) y[i] = i % 10;
            long t0 = System.nanoTime();
            opt.zeroGrad();
            try (Arena ws = Arena.open()) { // as the trainers do: reused step buffers
                Tensor loss = TarFlow.loss(m.forward(x, y));
                loss.backward();
                opt.step();
            }
            return (System.nanoTime() - t0) / 1e9;
        });
        return t;
    }

    private double[] timeSample(TarFlowConfig cfg) {
        TarFlow m = new TarFlow(cfg, new Rng(1));
        randomiseOutput(m);
        Rng rng = new Rng(3);
        double[] t;
        int[] y = new int[sampleBatch];
        for (int i = 0; i < sampleBatch; i++) y[i] = i % 10;
        t = measure(() -> {
            Tensor z = Tensor.randn(rng, sampleBatch, cfg.tokens(), cfg.tokenDim());
            long t0 = System.nanoTime();
            m.reverse(z, y, TarFlow.Guidance.NONE);
            return (System.nanoTime() - t0) / 1e9;
        });
        return t;
    }

    /**
     * One 1-NFE pass of a bidirectional pre-LN transformer of the backward model's size (width 128,
     * 4 heads, MLP 4x, 8 layers) over the flow's tokens, batch sampleBatch, no grad: the cost of a
     * BiFlow sample without its embedding and heads (the peers' `bidir` measures the same thing), run as the stack's
     * inference plan (the layers' lower methods) on the CPU executor.
     */
    private double[] timeBidir(TarFlowConfig cfg) {
        Rng rng = new Rng(4);
        dev.biflow.engine.nn.Linear in = new dev.biflow.engine.nn.Linear(cfg.tokenDim(), 128, true, rng);
        List<dev.biflow.engine.nn.MultiHeadAttention> attn = new ArrayList<>();
        List<dev.biflow.engine.nn.MLP> mlps = new ArrayList<>();
        for (int l = 0; l < 8; l++) {
            attn.add(dev.biflow.engine.nn.MultiHeadAttention.withHeadDim(128, 32, false, true, rng));
            mlps.add(new dev.biflow.engine.nn.MLP(128, 4, true, rng));
        }
        dev.biflow.engine.nn.Linear out = new dev.biflow.engine.nn.Linear(128, cfg.tokenDim(), true, rng);
        // the inference plan of the stack, built once: h + attn(h) and h + mlp(h) with the adds inside proj's and fc2's GEMMs
        int rows = sampleBatch * cfg.tokens();
        PlanBuilder p = new PlanBuilder(sampleBatch);
        Region z = p.alloc(rows, cfg.tokenDim()), y = p.alloc(rows, cfg.tokenDim());
        Region h = p.alloc(rows, 128), next = p.alloc(rows, 128);
        in.lower(p, z, h);
        for (int l = 0; l < 8; l++) {
            attn.get(l).lower(p, h, next, PlanOp.Epilogue.add(h));
            mlps.get(l).lower(p, next, h, PlanOp.Epilogue.add(next));
        }
        out.lower(p, h, y);
        Plan plan = p.build();
        double[] t = measure(() -> {
            Tensor zt = Tensor.randn(rng, sampleBatch, cfg.tokens(), cfg.tokenDim());
            long t0 = System.nanoTime();
            try (Arena scope = Arena.open()) {
                float[] a = Arena.floats(plan.size());
                System.arraycopy(zt.data(), 0, a, z.off(), rows * cfg.tokenDim());
                CpuExecutor.run(plan, a);
                Tensor.of(Arrays.copyOfRange(a, y.off(), y.off() + rows * cfg.tokenDim()), sampleBatch, cfg.tokens(), cfg.tokenDim());
            }
            return (System.nanoTime() - t0) / 1e9;
        });
        return t;
    }

    /**
     * The two samplers of the paper's speed comparison on the same batch: TARFlow's (exact inverse,
     * CFG as a second pass per step, then one forward+backward of F for score denoising) and
     * BiFlow's (one pass of G, width 128, 4 stages x 2 layers + 1 denoising layer, CFG trained in).
     */
    private double[] timeSampler(TarFlowConfig cfg, boolean biflow, dev.biflow.engine.Backend backend) {
        TarFlow m = new TarFlow(cfg, new Rng(1));
        randomiseOutput(m);
        dev.biflow.flow.inverse.FrozenFlow ff = dev.biflow.flow.inverse.FrozenFlow.of(m);
        dev.biflow.flow.inverse.BiFlowSampler sampler;
        dev.biflow.flow.inverse.ResidentBiFlow resident = null;
        if (biflow) {
            var bc = dev.biflow.flow.inverse.BackwardConfig.forFlow(cfg).withSize(128, 32, 2, 1)
                    .withCfg(dev.biflow.flow.inverse.BackwardConfig.Cfg.TRAINING_TIME);
            var g = new dev.biflow.flow.inverse.BiFlowModel(bc, new Rng(2));
            sampler = dev.biflow.flow.inverse.BiFlowSampler.of(ff, g, 0.1f);
            // On OpenCL, G's pass runs resident (weights uploaded once, here, outside the timings; 1 put + 1 get per call)
            // instead of per op; denoising is LEARNED (forFlow's default), so sampler.sample is g.sample and the two time the same thing.
            if (backend instanceof dev.biflow.gpu.OpenClBackend cl && sampler.denoise != dev.biflow.flow.inverse.BackwardConfig.Denoise.SCORE)
                resident = dev.biflow.flow.inverse.ResidentBiFlow.of(g, cl, sampleBatch);
        } else {
            sampler = dev.biflow.flow.inverse.BiFlowSampler.exactInverse(ff, dev.biflow.flow.inverse.BackwardConfig.Denoise.SCORE, 0.1f);
        }
        Rng rng = new Rng(3);
        int[] y = new int[sampleBatch];
        for (int i = 0; i < sampleBatch; i++) y[i] = i % 10;
        double[] t;
        var res = resident;
        var smp = sampler;
        try {
            t = measure(() -> {
                Tensor z = Tensor.randn(rng, sampleBatch, cfg.tokens(), cfg.tokenDim());
                long t0 = System.nanoTime();
                if (res != null) res.sample(z, y, 1f);
                else smp.sample(z, y, 1f);
                return (System.nanoTime() - t0) / 1e9;
            });
        } finally {
            if (resident != null) resident.close();
        }
        return t;
    }

    /**
     * The exact-cfg row's inverse (same F, seeds and guidance as BiFlowSampler.exactInverse with w = 1: scale 1, no
     * annealing, temperature 1) as one resident program: built once here, outside the timings (weights: 1 put per
     * program); each call is 1 put, the unrolled decode loop's launches, 1 get. Score denoising is not included.
     */
    private double[] timeExactResident(TarFlowConfig cfg, dev.biflow.gpu.OpenClBackend cl) {
        TarFlow m = new TarFlow(cfg, new Rng(1));
        randomiseOutput(m);
        Rng rng = new Rng(3);
        int[] y = new int[sampleBatch];
        for (int i = 0; i < sampleBatch; i++) y[i] = i % 10;
        TarFlow.Guidance g = new TarFlow.Guidance(1f, false, 1f); // FrozenFlow.exactInverse(eps, y, w = 1)
        double[] t;
        try (dev.biflow.flow.model.ResidentTarFlow resident = dev.biflow.flow.model.ResidentTarFlow.of(m, cl, sampleBatch)) {
            t = measure(() -> {
                Tensor z = Tensor.randn(rng, sampleBatch, cfg.tokens(), cfg.tokenDim());
                long t0 = System.nanoTime();
                resident.reverse(z, y, g);
                return (System.nanoTime() - t0) / 1e9;
            });
        }
        return t;
    }

    /** proj_out starts at zero; small random values make the timed work realistic (no shortcut on zeros exists, but be honest). */
    private static void randomiseOutput(TarFlow m) {
        Rng r = new Rng(9);
        try (var ng = Grad.noGrad()) {
            for (TarFlow.MetaBlock b : m.blocks) {
                float[] w = b.projOut.weight.data();
                for (int i = 0; i < w.length; i++) w[i] = (float) (0.01 * r.nextGaussian());
            }
        }
    }
}
