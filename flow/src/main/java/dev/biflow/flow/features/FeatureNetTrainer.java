// Trains a feature network as a Fashion-MNIST classifier: cross-entropy, AdamW, shift/flip augmentation, a step or time budget.
package dev.biflow.flow.features;

import dev.biflow.engine.Fused;
import dev.biflow.engine.Grad;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.kernels.Parallel;
import dev.biflow.engine.optim.AdamW;
import dev.biflow.flow.data.ImageDataset;

import java.io.IOException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.function.Consumer;

/**
 * Supervised training of any {@link FeatureNet} on a labelled image set (Fashion-MNIST in [-1, 1]):
 * cross-entropy, AdamW, linear warm-up then cosine decay, optional augmentation (random shifts of
 * up to {@code maxShift} pixels filled with the background value -1, and horizontal flips).
 *
 * <p>Budget: training stops at {@code maxSteps} or after {@code maxSeconds} of wall time,
 * whichever comes first. The learning rate follows the progress p = max(step / maxSteps,
 * elapsed / maxSeconds): lr = minLr + (lr - minLr) (1 + cos(pi p)) / 2, times
 * min(1, (step + 1) / warmupSteps), so a run cut short by the clock still ends at the low rate.
 * With a time budget the number of steps depends on the machine, so such runs are not
 * bit-reproducible; with {@code maxSeconds = 0} (steps only) they are, for a fixed thread count
 * and seed.
 *
 * <p>Command line (for {@code biflow train-features} to wrap):
 * <pre>
 *   java ... dev.biflow.flow.features.FeatureNetTrainer --arch convnet|convnext|eval
 *        [--steps N (default: defaultSteps(arch))] [--minutes M (a time budget instead)] [--batch 128]
 *        [--lr 2e-3] [--seed 0] [--shift 2] [--no-flip] [--log-every 100]
 *        [--data /usr/share/datasets/fashion-mnist] [--out models/&lt;FeatureNets.fileName(arch)&gt;]
 * </pre>
 * Without --steps or --minutes a run is the reproducible one of {@link #defaultSteps}.
 */
public final class FeatureNetTrainer {
    private FeatureNetTrainer() {}

    /**
     * Training settings.
     *
     * @param maxSteps    optimizer steps at most (>= 1)
     * @param maxSeconds  wall-time budget in seconds; 0 = none (steps only)
     * @param batchSize   images per step
     * @param lr          peak learning rate
     * @param minLr       learning rate at the end of the cosine
     * @param weightDecay AdamW decoupled weight decay
     * @param warmupSteps linear warm-up from 0
     * @param maxShift    random shift of each image by up to this many pixels in x and y (0 = none)
     * @param hflip       random horizontal flips (Fashion-MNIST items are roughly left-right symmetric)
     * @param seed        weights are not drawn here (the caller builds the net); this seeds data order and augmentation
     * @param logEvery    log a line every this many steps (0 = never)
     */
    public record Options(long maxSteps, double maxSeconds, int batchSize, double lr, double minLr, double weightDecay,
                          int warmupSteps, int maxShift, boolean hflip, long seed, int logEvery) {
        public Options {
            if (maxSteps < 1 || batchSize < 1 || warmupSteps < 0 || maxShift < 0 || !(maxSeconds >= 0) || !(lr > 0) || !(minLr >= 0)
                    || !(weightDecay >= 0) || logEvery < 0)
                throw new IllegalArgumentException("FeatureNetTrainer.Options: invalid " + this);
        }

        /** The settings the shipped networks were trained with, for a given time budget (seconds). */
        public static Options defaults(double maxSeconds) {
            return new Options(100_000, maxSeconds, 128, 2e-3, 1e-5, 0.05, 100, 2, true, 0, 100);
        }

        public Options withSteps(long s) { return new Options(s, maxSeconds, batchSize, lr, minLr, weightDecay, warmupSteps, maxShift, hflip, seed, logEvery); }
        public Options withSeconds(double s) { return new Options(maxSteps, s, batchSize, lr, minLr, weightDecay, warmupSteps, maxShift, hflip, seed, logEvery); }
        public Options withBatch(int b) { return new Options(maxSteps, maxSeconds, b, lr, minLr, weightDecay, warmupSteps, maxShift, hflip, seed, logEvery); }
        public Options withLr(double l) { return new Options(maxSteps, maxSeconds, batchSize, l, minLr, weightDecay, warmupSteps, maxShift, hflip, seed, logEvery); }
        public Options withWarmup(int w) { return new Options(maxSteps, maxSeconds, batchSize, lr, minLr, weightDecay, w, maxShift, hflip, seed, logEvery); }
        public Options withAugment(int shift, boolean flip) { return new Options(maxSteps, maxSeconds, batchSize, lr, minLr, weightDecay, warmupSteps, shift, flip, seed, logEvery); }
        public Options withSeed(long s) { return new Options(maxSteps, maxSeconds, batchSize, lr, minLr, weightDecay, warmupSteps, maxShift, hflip, s, logEvery); }
        public Options withLogEvery(int n) { return new Options(maxSteps, maxSeconds, batchSize, lr, minLr, weightDecay, warmupSteps, maxShift, hflip, seed, n); }

        /** Metadata entries describing these settings. */
        public Map<String, String> toMetadata() {
            Map<String, String> m = new LinkedHashMap<>();
            m.put("batch_size", Integer.toString(batchSize));
            m.put("lr", Double.toString(lr));
            m.put("min_lr", Double.toString(minLr));
            m.put("weight_decay", Double.toString(weightDecay));
            m.put("warmup_steps", Integer.toString(warmupSteps));
            m.put("max_shift", Integer.toString(maxShift));
            m.put("hflip", Boolean.toString(hflip));
            m.put("data_seed", Long.toString(seed));
            return m;
        }
    }

    /**
     * What a run achieved.
     *
     * @param steps        optimizer steps taken
     * @param seconds      wall time of the training loop (without the final evaluation)
     * @param cpuSeconds   CPU time the process spent meanwhile (all threads; NaN where the JVM cannot tell):
     *                     on a shared, loaded machine this says more about cost than the wall time
     * @param trainLoss    mean cross-entropy over the last (up to) 100 steps
     * @param testAccuracy accuracy on the test set after training (NaN when no test set was given)
     */
    public record Result(long steps, double seconds, double cpuSeconds, double trainLoss, double testAccuracy) {
        public Map<String, String> toMetadata() {
            Map<String, String> m = new LinkedHashMap<>();
            m.put("steps", Long.toString(steps));
            m.put("train_seconds", String.format(Locale.ROOT, "%.1f", seconds));
            if (!Double.isNaN(cpuSeconds)) m.put("train_cpu_seconds", String.format(Locale.ROOT, "%.1f", cpuSeconds));
            m.put("train_loss", String.format(Locale.ROOT, "%.4f", trainLoss));
            if (!Double.isNaN(testAccuracy)) m.put("test_accuracy", String.format(Locale.ROOT, "%.4f", testAccuracy));
            return m;
        }
    }

    /**
     * One report every {@code logEvery} steps: loss and training accuracy averaged over those steps,
     * the learning rate of the last one, throughput, wall and CPU seconds since the start.
     */
    public record StepStats(String arch, long step, double loss, double trainAccuracy, double lr, double imagesPerSecond,
                            double seconds, double cpuSeconds) {
        /** The log line: "convnet step 5  loss 2.1000  train-acc 0.125  lr 1.00e-04  900 img/s  3s (cpu 6s)". */
        public String line() {
            return String.format(Locale.ROOT, "%s step %d  loss %.4f  train-acc %.3f  lr %.2e  %.0f img/s  %.0fs (cpu %.0fs)",
                    arch, step, loss, trainAccuracy, lr, imagesPerSecond, seconds, cpuSeconds);
        }
    }

    /** What a run reports as it goes: the step reports, then one closing line (test accuracy). */
    public interface Listener {
        void onStep(StepStats s);

        default void onDone(String summary) {}

        /** Both as text lines, for a log or a terminal. */
        static Listener lines(Consumer<String> log) {
            return new Listener() {
                @Override public void onStep(StepStats s) { log.accept(s.line()); }

                @Override public void onDone(String summary) { log.accept(summary); }
            };
        }
    }

    /**
     * Trains net in place (it is switched to training mode with gradients on, and left in eval mode
     * with gradients off). test may be null. listener may be null.
     */
    public static Result train(FeatureNet net, ImageDataset train, ImageDataset test, Options o, Listener listener) {
        checkData(net, train);
        if (test != null) checkData(net, test);
        net.train();
        net.requiresGrad(true);
        AdamW opt = new AdamW(net.parameters(), o.lr(), 0.9, 0.999, 1e-8, o.weightDecay());
        Rng rng = new Rng(o.seed());
        int[] order = rng.permutation(train.n);
        int pos = 0;
        long t0 = System.nanoTime();
        double c0 = processCpuSeconds();
        double[] recent = new double[100];
        int seen = 0;
        long step = 0;
        double lossSum = 0, correct = 0, count = 0;
        while (step < o.maxSteps()) {
            double elapsed = (System.nanoTime() - t0) / 1e9;
            double p = Math.max((double) step / o.maxSteps(), o.maxSeconds() > 0 ? elapsed / o.maxSeconds() : 0);
            if (p >= 1) break;
            double lr = o.minLr() + 0.5 * (1 + Math.cos(Math.PI * p)) * (o.lr() - o.minLr());
            if (step < o.warmupSteps()) lr *= (step + 1.0) / o.warmupSteps();
            opt.setLr(lr);
            int b = Math.min(o.batchSize(), train.n);
            int[] idx = new int[b];
            for (int i = 0; i < b; i++) {
                if (pos == order.length) { order = rng.permutation(train.n); pos = 0; }
                idx[i] = order[pos++];
            }
            Tensor x = augment(train.batch(idx, ImageDataset.Noise.NONE, 0, rng), rng, o.maxShift(), o.hflip());
            int[] y = train.labelsOf(idx);
            Tensor logits = net.forward(x);
            Tensor loss = Fused.crossEntropy(logits, y);
            double lv = loss.item();
            if (!Double.isFinite(lv)) // checked before the update, so the weights stay those of the last good step
                throw new IllegalStateException("feature network training diverged at step " + step + " (loss " + lv
                        + "); lower the learning rate (--lr, now " + o.lr() + ")");
            loss.backward();
            opt.step();
            opt.zeroGrad();
            recent[(int) (step % recent.length)] = lv;
            seen = (int) Math.min(recent.length, step + 1);
            lossSum += lv;
            correct += countCorrect(logits, y);
            count += b;
            step++;
            if (listener != null && o.logEvery() > 0 && step % o.logEvery() == 0) {
                double el = (System.nanoTime() - t0) / 1e9;
                listener.onStep(new StepStats(net.config.arch().id, step, lossSum / o.logEvery(), correct / count, lr,
                        step * (double) b / el, el, processCpuSeconds() - c0));
                lossSum = 0;
                correct = 0;
                count = 0;
            }
        }
        double seconds = (System.nanoTime() - t0) / 1e9, cpu = processCpuSeconds() - c0;
        net.eval();
        net.requiresGrad(false);
        double tl = 0;
        for (int i = 0; i < seen; i++) tl += recent[i];
        double acc = test == null ? Double.NaN : accuracy(net, test, 500);
        if (listener != null)
            listener.onDone(String.format(Locale.ROOT, "%s done: %d steps in %.1fs (cpu %.1fs), test accuracy %s", net.config.arch().id, step, seconds, cpu,
                    Double.isNaN(acc) ? "n/a" : String.format(Locale.ROOT, "%.4f", acc)));
        return new Result(step, seconds, cpu, seen == 0 ? Double.NaN : tl / seen, acc);
    }

    /** CPU time of this process in seconds, or NaN where the JVM does not report it. */
    static double processCpuSeconds() {
        try {
            if (java.lang.management.ManagementFactory.getOperatingSystemMXBean() instanceof com.sun.management.OperatingSystemMXBean os) {
                long t = os.getProcessCpuTime();
                if (t >= 0) return t / 1e9;
            }
        } catch (LinkageError | RuntimeException e) {
            // jdk.management absent from a trimmed runtime: report no CPU time rather than fail training
        }
        return Double.NaN;
    }

    private static void checkData(FeatureNet net, ImageDataset d) {
        FeatureNetConfig c = net.config;
        if (d.channels != c.inChannels() || d.height != c.imgSize() || d.width != c.imgSize())
            throw new IllegalArgumentException(d.name + " has " + d.channels + "x" + d.height + "x" + d.width + " images but the network takes "
                    + c.inChannels() + "x" + c.imgSize() + "x" + c.imgSize());
        for (int l : d.labels)
            if (l >= c.numClasses())
                throw new IllegalArgumentException(d.name + " has label " + l + " but the network has " + c.numClasses() + " classes");
    }

    private static int countCorrect(Tensor logits, int[] y) {
        int[] pred = argmax(logits);
        int c = 0;
        for (int i = 0; i < y.length; i++) if (pred[i] == y[i]) c++;
        return c;
    }

    /** Row-wise argmax of a (N, K) tensor. */
    public static int[] argmax(Tensor logits) {
        int n = logits.size(0), k = logits.size(1);
        float[] d = logits.data();
        int[] out = new int[n];
        for (int i = 0; i < n; i++) {
            int best = 0;
            for (int j = 1; j < k; j++) if (d[i * k + j] > d[i * k + best]) best = j;
            out[i] = best;
        }
        return out;
    }

    /** Classification accuracy on a dataset, in batches, without recording a graph. */
    public static double accuracy(FeatureNet net, ImageDataset data, int batch) {
        boolean wasTraining = net.isTraining();
        net.eval();
        long correct = 0;
        try (var ng = Grad.noGrad()) {
            for (int s = 0; s < data.n; s += batch) {
                int b = Math.min(batch, data.n - s);
                int[] idx = new int[b];
                for (int i = 0; i < b; i++) idx[i] = s + i;
                correct += countCorrect(net.forward(data.batch(idx, ImageDataset.Noise.NONE, 0, null)), data.labelsOf(idx));
            }
        } finally {
            net.train(wasTraining);
        }
        return (double) correct / data.n;
    }

    /**
     * Augments a (B, C, H, W) batch in [-1, 1]: each image is shifted by (dy, dx) uniform in
     * [-maxShift, maxShift] (vacated pixels become -1, the background) and, when hflip, mirrored
     * left-right with probability 1/2. Returns x itself when there is nothing to do.
     */
    public static Tensor augment(Tensor x, Rng rng, int maxShift, boolean hflip) {
        if (maxShift == 0 && !hflip) return x;
        int[] s = x.shape();
        int b = s[0], c = s[1], h = s[2], w = s[3];
        float[] src = x.data(), out = new float[src.length];
        java.util.Arrays.fill(out, -1f);
        for (int i = 0; i < b; i++) {
            int dy = maxShift == 0 ? 0 : rng.nextInt(2 * maxShift + 1) - maxShift;
            int dx = maxShift == 0 ? 0 : rng.nextInt(2 * maxShift + 1) - maxShift;
            boolean flip = hflip && rng.nextInt(2) == 1;
            for (int ch = 0; ch < c; ch++) {
                int base = (i * c + ch) * h * w;
                for (int yy = 0; yy < h; yy++) {
                    int sy = yy - dy;
                    if (sy < 0 || sy >= h) continue;
                    for (int xx = 0; xx < w; xx++) {
                        int sx = xx - dx;
                        if (sx < 0 || sx >= w) continue;
                        if (flip) sx = w - 1 - sx;
                        out[base + yy * w + xx] = src[base + sy * w + sx];
                    }
                }
            }
        }
        return Tensor.of(out, s);
    }

    /**
     * Builds the default network of an architecture (weights from {@code weightSeed}), trains it on
     * the dataset in dataDir, and writes it to out with its config, settings and accuracy.
     */
    public static Result trainAndSave(FeatureNetConfig config, long weightSeed, Path dataDir, Options o, Path out,
                                      Consumer<String> log) throws IOException {
        ImageDataset train = ImageDataset.loadIdx(dataDir, "train"), test = ImageDataset.loadIdx(dataDir, "test");
        FeatureNet net = FeatureNets.build(config, new Rng(weightSeed));
        if (log != null) log.accept(net.displayName() + ": " + net.parameterCount() + " parameters, " + Parallel.threads() + " threads");
        Result r = train(net, train, test, o, log == null ? null : Listener.lines(log));
        Map<String, String> meta = new LinkedHashMap<>(o.toMetadata());
        meta.putAll(r.toMetadata());
        meta.put("weight_seed", Long.toString(weightSeed));
        meta.put("dataset", train.name);
        meta.put("threads", Integer.toString(Parallel.threads()));
        FeatureNets.save(net, out, meta);
        if (log != null) log.accept("wrote " + out);
        return r;
    }

    /**
     * Steps of 128 images that the shipped checkpoints were trained for (seed 0, default options):
     * enough for about 89% test accuracy for the two conv nets and 86% for the ConvNeXt-style one,
     * which learns more slowly through its global pooling.
     */
    public static long defaultSteps(FeatureNetConfig.Arch arch) {
        return arch == FeatureNetConfig.Arch.CONVNEXT ? 1000 : 800;
    }

    public static void main(String[] args) throws IOException {
        FeatureNetConfig.Arch arch = null;
        double minutes = 0;
        long steps = 0, seed = 0;
        int batch = 128, shift = 2, logEvery = 100;
        double lr = 2e-3;
        boolean flip = true;
        Path data = ImageDataset.FASHION_MNIST_DIR, out = null;
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            switch (a) {
                case "--arch" -> arch = FeatureNetConfig.Arch.parse(args[++i]);
                case "--minutes" -> minutes = Double.parseDouble(args[++i]);
                case "--steps" -> steps = Long.parseLong(args[++i]);
                case "--batch" -> batch = Integer.parseInt(args[++i]);
                case "--lr" -> lr = Double.parseDouble(args[++i]);
                case "--seed" -> seed = Long.parseLong(args[++i]);
                case "--shift" -> shift = Integer.parseInt(args[++i]);
                case "--no-flip" -> flip = false;
                case "--log-every" -> logEvery = Integer.parseInt(args[++i]);
                case "--data" -> data = Path.of(args[++i]);
                case "--out" -> out = Path.of(args[++i]);
                default -> throw new IllegalArgumentException("unknown argument " + a + "; see the class comment of FeatureNetTrainer");
            }
        }
        if (arch == null) throw new IllegalArgumentException("--arch convnet|convnext|eval is required");
        if (out == null) out = Path.of("models", FeatureNets.fileName(arch));
        if (steps == 0) steps = minutes > 0 ? 1_000_000 : defaultSteps(arch);
        Options o = Options.defaults(minutes * 60).withSteps(steps).withBatch(batch).withLogEvery(logEvery).withLr(lr).withAugment(shift, flip).withSeed(seed);
        trainAndSave(FeatureNetConfig.defaultFor(arch), seed, data, o, out, System.out::println);
    }
}
