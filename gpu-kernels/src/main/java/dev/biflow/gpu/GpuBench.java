// Kernel benchmarks for bench/gpu-check.sh: GEMM GFLOP/s and attention time, CPU backend vs OpenCL, one sitting, one table.
package dev.biflow.gpu;

import dev.biflow.engine.Backend;
import dev.biflow.engine.Fused;
import dev.biflow.engine.Grad;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.kernels.Attention;
import dev.biflow.engine.kernels.GemmEpilogue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Random;

/**
 * Usage: GpuBench [--device opencl[:N]] [--sizes 256,512,1024,2048] [--out table.md] [--budget-s 240] [--bidir-batch 64]
 *
 * <p>Each case is warmed up (the OpenCL kernels were already compiled by the backend's
 * constructor), then timed until 0.3 s or 15 runs; the table gives the median and the min-max
 * spread. "OpenCL with copies" is what ops see through {@link Backend} (staging, upload,
 * download); "kernel only" is the GEMM launch with operands resident on the device. Then a model
 * pass, BenchCommand.timeBidir's 8-layer bidirectional stack (width 128, 4 heads of 32, MLP 4x,
 * T = 49, 16 features in and out), three ways: the CPU backend, the same modules with every GEMM and
 * attention sent through the OpenCL backend ({@code Backend.use}, per-op copies), and a
 * {@link ResidentStack} (weights and activations on the device, one put and one get per pass),
 * in ms per image with the launches and copies of one pass. Cases are dropped, with a note, once
 * the time budget is spent.
 */
public final class GpuBench {
    private GpuBench() {}

    public static void main(String[] args) throws IOException {
        String spec = "opencl", out = null;
        int[] sizes = {256, 512, 1024, 2048};
        double budget = 240;
        int bidirBatch = 64;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--device" -> spec = args[++i];
                case "--sizes" -> sizes = Arrays.stream(args[++i].split(",")).mapToInt(Integer::parseInt).toArray();
                case "--out" -> out = args[++i];
                case "--budget-s" -> budget = Double.parseDouble(args[++i]);
                case "--bidir-batch" -> bidirBatch = Integer.parseInt(args[++i]);
                default -> throw new IllegalArgumentException("unknown argument " + args[i]);
            }
        }
        long start = System.nanoTime();
        outPath = out == null ? null : Path.of(out);
        OpenClBackend cl = OpenClBackend.open(spec);
        List<String> rows = new ArrayList<>() {
            @Override public boolean add(String row) { // print and save as we go: a timeout still leaves the rows done
                super.add(row);
                System.out.println(row);
                save(outPath, this);
                return true;
            }
        };
        rows.add("# BiFlow-J kernel benchmark");
        rows.add("");
        rows.add("OpenCL device: " + cl.name() + "; CPU backend: Vector API on " + Runtime.getRuntime().availableProcessors()
                + " threads; JDK " + Runtime.version() + ". Median of up to 15 runs [min-max].");
        rows.add("");
        rows.add("| case | CPU backend | OpenCL with copies | OpenCL kernel only |");
        rows.add("|---|---|---|---|");
        Random r = new Random(1);
        warmCpuGemm(r);
        for (int n : sizes) {
            if (elapsed(start) > budget) { rows.add("| gemm " + n + " | skipped: time budget spent | | |"); continue; }
            float[] a = Ref.rand(r, n * n), b = Ref.rand(r, n * n), c = new float[n * n];
            double flops = 2.0 * n * n * n;
            double[] tc = time(() -> Backend.CPU.gemm(false, false, n, n, n, 1f, a, 0, n, b, 0, n, 0f, c, 0, n, GemmEpilogue.NONE));
            double[] tg = time(() -> cl.gemm(false, false, n, n, n, 1f, a, 0, n, b, 0, n, 0f, c, 0, n, GemmEpilogue.NONE));
            double tk = cl.gemmKernelSeconds(n, n, n, 3);
            rows.add(String.format(Locale.ROOT, "| sgemm %dx%dx%d (GFLOP/s) | %s | %s | %.1f |", n, n, n,
                    gflops(flops, tc), gflops(flops, tg), flops / tk / 1e9));
        }
        // TarFlow-shaped: the qkv projection of 256 images x 64 tokens, width 128.
        if (elapsed(start) <= budget) {
            int m = 256 * 64, k = 128, n = 384;
            float[] a = Ref.rand(r, m * k), b = Ref.rand(r, k * n), c = new float[m * n];
            double flops = 2.0 * m * n * k;
            double[] tc = time(() -> Backend.CPU.gemm(false, true, m, n, k, 1f, a, 0, k, b, 0, k, 0f, c, 0, n, GemmEpilogue.NONE));
            double[] tg = time(() -> cl.gemm(false, true, m, n, k, 1f, a, 0, k, b, 0, k, 0f, c, 0, n, GemmEpilogue.NONE));
            rows.add(String.format(Locale.ROOT, "| sgemm qkv %dx%dx%d, B^T (GFLOP/s) | %s | %s | |", m, n, k, gflops(flops, tc), gflops(flops, tg)));
        }
        int[][] att = {{64, 2, 64, 64}, {16, 8, 256, 64}}; // B, H, T, Dh
        for (int[] s : att) {
            if (elapsed(start) > budget) { rows.add("| attention " + Arrays.toString(s) + " | skipped: time budget spent | | |"); continue; }
            int nb = s[0], nh = s[1], t = s[2], dh = s[3];
            float[] q = Ref.rand(r, nb * nh * t * dh), k = Ref.rand(r, nb * nh * t * dh), v = Ref.rand(r, nb * nh * t * dh);
            float[] o = new float[q.length];
            float sc = (float) (1 / Math.sqrt(dh));
            // CPU column: Fused.attention, the engine's multithreaded path.
            Tensor tq = Tensor.of(q, nb, nh, t, dh), tk = Tensor.of(k, nb, nh, t, dh), tv = Tensor.of(v, nb, nh, t, dh);
            double[] tc = time(() -> {
                try (var ng = Grad.noGrad()) { Fused.attention(tq, tk, tv, true, null, sc); }
            });
            double[] tg = time(() -> cl.attentionForward(q, k, v, o, Attention.Layouts.contiguous(nh, t, t, dh, dh), nb, nh, t, t, dh, dh, true,
                    null, null, sc, false));
            rows.add(String.format(Locale.ROOT, "| causal attention B%d H%d T%d Dh%d (ms) | %s | %s | |", nb, nh, t, dh, ms(tc), ms(tg)));
        }
        rows.add("");
        rows.add(String.format(Locale.ROOT, "Copies made by the OpenCL backend during the kernel benchmarks: %s.", cl.transfers()));
        cl.close();
        // A fresh backend for the model pass: the per-op path's staging arrays (and so its bytes per put/get) are
        // then sized by this model's calls, not by the larger GEMMs above.
        try (OpenClBackend fresh = OpenClBackend.open(spec)) {
            bidirPass(fresh, rows, bidirBatch, start, budget);
        }
        rows.add("");
        rows.add(String.format(Locale.ROOT, "Total %.0f s.", elapsed(start)));
    }

    /**
     * BenchCommand.timeBidir's model (Linear 16 -> 128, 8 x (h + MHA(h), h + MLP(h)), Linear 128 -> 16)
     * on a (batch, 49, 16) input: CPU backend, OpenCL per op, resident stack.
     */
    private static void bidirPass(OpenClBackend cl, List<String> rows, int batch, long start, double budget) {
        int tokens = 49, din = 16, dim = 128;
        dev.biflow.engine.Rng rng = new dev.biflow.engine.Rng(4);
        List<dev.biflow.engine.nn.Module> layers = new ArrayList<>();
        layers.add(new dev.biflow.engine.nn.Linear(din, dim, true, rng));
        for (int l = 0; l < 8; l++) {
            layers.add(dev.biflow.engine.nn.MultiHeadAttention.withHeadDim(dim, 32, false, true, rng));
            layers.add(new dev.biflow.engine.nn.MLP(dim, 4, true, rng));
        }
        layers.add(new dev.biflow.engine.nn.Linear(dim, din, true, rng));
        Tensor z = Tensor.randn(rng, batch, tokens, din);
        Runnable modules = () -> { // exactly BenchCommand.timeBidir's loop
            try (var ng = Grad.noGrad()) {
                Tensor h = z;
                for (dev.biflow.engine.nn.Module m : layers)
                    h = m instanceof dev.biflow.engine.nn.Linear ? m.forward(h) : h.add(m.forward(h));
            }
        };
        rows.add("");
        rows.add(String.format(Locale.ROOT, "| bidir 8-layer pass, width 128, 4 heads of 32, MLP 4x, T %d, batch %d | ms/img | per pass: launches, puts (MB up), gets (MB down) |",
                tokens, batch));
        rows.add("|---|---|---|");
        String skipped = " | skipped: time budget spent | |";
        if (elapsed(start) > budget) { rows.add("| CPU backend" + skipped); return; }
        rows.add("| CPU backend | " + msPerImage(time(modules), batch) + " | none |");

        if (elapsed(start) > budget) { rows.add("| OpenCL per op (Backend.use)" + skipped); return; }
        Backend.use(cl);
        try {
            double[] t = time(modules);
            long[] before = snapshot(cl.transfers());
            modules.run();
            rows.add("| OpenCL per op (Backend.use: GEMMs and attention on the device, the rest on the CPU) | " + msPerImage(t, batch)
                    + " | " + perPass(before, cl.transfers()) + " |");
        } finally {
            Backend.use(Backend.CPU);
        }

        if (elapsed(start) > budget) { rows.add("| OpenCL resident stack" + skipped); return; }
        ResidentStack.Builder b = ResidentStack.builder(cl, batch, tokens);
        for (dev.biflow.engine.nn.Module m : layers) {
            if (m instanceof dev.biflow.engine.nn.Linear l) b.linear(l);
            else if (m instanceof dev.biflow.engine.nn.MultiHeadAttention a) b.attentionBlock(a);
            else b.mlpBlock((dev.biflow.engine.nn.MLP) m);
        }
        try (ResidentStack s = b.build()) {
            float[] x = z.data();
            double[] t = time(() -> s.run(x));
            long[] before = snapshot(s.transfers());
            float[] y = s.run(x);
            String pass = perPass(before, s.transfers());
            // the same modules on the CPU: the resident result must agree (a wrong fast number is no number)
            float[] ref;
            try (var ng = Grad.noGrad()) {
                Tensor h = z;
                for (dev.biflow.engine.nn.Module m : layers)
                    h = m instanceof dev.biflow.engine.nn.Linear ? m.forward(h) : h.add(m.forward(h));
                ref = h.data();
            }
            double err = 0;
            for (int i = 0; i < y.length; i++) err = Math.max(err, Math.abs(y[i] - ref[i]));
            rows.add(String.format(Locale.ROOT, "| OpenCL resident stack (weights uploaded once: %.1f MB) | %s | %s; max abs diff vs CPU %.2g |",
                    4e-6 * s.weightFloats(), msPerImage(t, batch), pass, err));
        }
    }

    /** launches, puts, bytes up, gets, bytes down. */
    private static long[] snapshot(Transfers t) {
        return new long[]{t.launches(), t.puts(), t.bytesToDevice(), t.gets(), t.bytesFromDevice()};
    }

    private static String perPass(long[] b, Transfers after) {
        long[] a = snapshot(after);
        return String.format(Locale.ROOT, "%d, %d (%.2f), %d (%.2f)", a[0] - b[0], a[1] - b[1], (a[2] - b[2]) / 1e6, a[3] - b[3], (a[4] - b[4]) / 1e6);
    }

    private static String msPerImage(double[] t, int batch) {
        double k = 1e3 / batch;
        return String.format(Locale.ROOT, "%.3f [%.3f-%.3f]", t[0] * k, t[1] * k, t[2] * k);
    }

    private static Path outPath;

    private static void save(Path p, List<String> rows) {
        if (p == null) return;
        try {
            Files.writeString(p, String.join("\n", rows) + "\n");
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    private static double elapsed(long start) { return (System.nanoTime() - start) / 1e9; }

    /** Seconds per run: median, min, max. */
    /**
     * The CPU GEMM's micro-kernel runs interpreted until C2 has compiled it (C1 cannot; see Gemm's class
     * comment): seconds at well under 1 GFLOP/s. One warm-up call per row was not enough (the first
     * rows showed 0.2 GFLOP/s for 256^3 on both PoCL's host and the H200's), so run GEMMs for 2 s first.
     */
    private static void warmCpuGemm(Random r) {
        int n = 256;
        float[] a = Ref.rand(r, n * n), b = Ref.rand(r, n * n), c = new float[n * n];
        long end = System.nanoTime() + 2_000_000_000L;
        while (System.nanoTime() < end) Backend.CPU.gemm(false, false, n, n, n, 1f, a, 0, n, b, 0, n, 0f, c, 0, n, GemmEpilogue.NONE);
    }

    private static double[] time(Runnable f) {
        f.run(); // warm-up (JIT for the CPU path, buffer allocation for OpenCL)
        List<Double> t = new ArrayList<>();
        long end = System.nanoTime() + 300_000_000L;
        while (t.size() < 3 || (t.size() < 15 && System.nanoTime() < end)) {
            long t0 = System.nanoTime();
            f.run();
            t.add((System.nanoTime() - t0) / 1e9);
        }
        double[] s = t.stream().mapToDouble(Double::doubleValue).sorted().toArray();
        return new double[]{s[s.length / 2], s[0], s[s.length - 1]};
    }

    private static String gflops(double flops, double[] t) {
        return String.format(Locale.ROOT, "%.1f [%.1f-%.1f]", flops / t[0] / 1e9, flops / t[2] / 1e9, flops / t[1] / 1e9);
    }

    private static String ms(double[] t) {
        return String.format(Locale.ROOT, "%.2f [%.2f-%.2f]", t[0] * 1e3, t[1] * 1e3, t[2] * 1e3);
    }

    /** Uniform [-1, 1) test data. */
    private static final class Ref {
        static float[] rand(Random r, int n) {
            float[] x = new float[n];
            for (int i = 0; i < n; i++) x[i] = r.nextFloat() * 2 - 1;
            return x;
        }
    }
}
