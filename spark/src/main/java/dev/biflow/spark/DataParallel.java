// Synchronous data-parallel training steps on Spark: each worker the gradient of its shard of the batch, summed on the driver.
package dev.biflow.spark;

import com.fasterxml.jackson.databind.ObjectMapper;
import dev.biflow.cli.TrainerHooks;
import dev.biflow.engine.Arena;
import dev.biflow.engine.Ops;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.flow.inverse.BackwardCheckpoints;
import dev.biflow.flow.inverse.BackwardConfig;
import dev.biflow.flow.inverse.BackwardTrainer;
import dev.biflow.flow.inverse.BiFlowModel;
import dev.biflow.flow.inverse.FrozenFlow;
import dev.biflow.flow.data.ImageDataset;
import dev.biflow.flow.model.TarFlow;
import dev.biflow.flow.model.TarFlowConfig;
import dev.biflow.flow.train.ForwardTrainer;
import dev.biflow.flow.train.TrainConfig;
import org.apache.spark.BarrierTaskContext;
import org.apache.spark.TaskContext;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.broadcast.Broadcast;

import java.io.IOException;
import java.io.Serializable;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * One optimiser step = one Spark job. The driver runs the ordinary trainer (its TrainLoop draws the
 * batch and the noise exactly as on one machine, and owns the optimiser, EMA, checkpoints and
 * --resume); only the gradient is computed on the cluster:
 * <ol>
 *   <li>the current weights go out as a broadcast (P floats, fetched once per executor);</li>
 *   <li>the batch is cut into N shards of consecutive rows, [k B / N, (k + 1) B / N), one task each;</li>
 *   <li>a task loads the weights into its executor's replica (built once per executor and task slot),
 *       computes its shard's loss scaled by b_k / B, back-propagates, and returns the gradient;</li>
 *   <li>the driver adds the N gradients in partition order (fixed, so a run repeats bit for bit) into
 *       the parameters' grads; the trainer's step continues (checks, clipping, AdamW, EMA).</li>
 * </ol>
 * Because the losses are means over examples, sum_k (b_k / B) grad L_k = grad L of the whole batch: N
 * workers give one machine's update up to the order of float sums (bit for bit with N = 1). G's
 * adaptive weights a(L) = L / sg((L + eps)^p) need the whole batch's L before the backward pass: its
 * step runs as a barrier stage, and the tasks exchange their term values (a few doubles) with
 * {@link BarrierTaskContext#allGather} between forward and backward.
 *
 * <p>A failed task fails the step: Spark retries it (spark.task.maxFailures; a barrier stage is
 * retried whole), the driver's state is untouched until every gradient has arrived, so a retry
 * repeats the same step; when the retries are spent the run stops with an error naming the step and
 * the last checkpoint, which --resume continues from.
 */
final class DataParallel {
    private DataParallel() {}

    static final ObjectMapper JSON = new ObjectMapper();

    /** Tests: throws in a task when it says so (step, partition, attempt), to play a lost executor. */
    interface Fault extends Serializable { boolean failAt(long step, int partition, int attempt); }

    static volatile Fault fault;

    /**
     * What the cluster steps of a run cost, summed: steps, weight bytes sent out, gradient bytes back,
     * the gradient's wall time on the driver and the slowest task's time inside it (the rest is the
     * overhead: job scheduling, (de)serialising weights, shards and gradients, and the reduction).
     */
    static final class Cost {
        long steps, weightBytes, gradientBytes;
        double seconds, taskSeconds, reduceSeconds;

        synchronized void reset() {
            steps = weightBytes = gradientBytes = 0;
            seconds = taskSeconds = reduceSeconds = 0;
        }

        synchronized void add(long w, long g, double s, double t, double r) {
            steps++;
            weightBytes += w;
            gradientBytes += g;
            seconds += s;
            taskSeconds += t;
            reduceSeconds += r;
        }

        synchronized String summary(int workers) {
            if (steps == 0) return "spark: no data-parallel steps taken";
            return String.format(java.util.Locale.ROOT, "spark: %d steps over %d workers; per step: weights out %.2f MB, gradients back %.2f MB,"
                            + " gradient %.1f ms (slowest task %.1f ms), overhead %.1f ms (scheduling, serialisation; the driver's sum %.2f ms)",
                    steps, workers, weightBytes / 1e6 / steps, gradientBytes / 1e6 / steps, seconds * 1e3 / steps, taskSeconds * 1e3 / steps,
                    (seconds - taskSeconds) * 1e3 / steps, reduceSeconds * 1e3 / steps);
        }
    }

    /** The current command's costs (reset when it starts). */
    static final Cost COST = new Cost();

    // ------------------------------------------------------------------ shared by F and G

    /** The parameters as one array (P floats, in parameters() order). */
    static float[] flatten(List<Tensor> params) {
        int n = 0;
        for (Tensor p : params) n += p.numel();
        float[] out = new float[n];
        int o = 0;
        for (Tensor p : params) {
            System.arraycopy(p.data(), 0, out, o, p.numel());
            o += p.numel();
        }
        return out;
    }

    static void load(List<Tensor> params, float[] flat) {
        int o = 0;
        for (Tensor p : params) {
            System.arraycopy(flat, o, p.data(), 0, p.numel());
            o += p.numel();
        }
        if (o != flat.length) throw new IllegalStateException("the broadcast weights have " + flat.length + " values, the replica " + o);
    }

    /** Each parameter's gradient (a copy), or null where none reached it. */
    static float[][] grads(List<Tensor> params) {
        float[][] g = new float[params.size()][];
        for (int i = 0; i < g.length; i++) g[i] = params.get(i).gradData() == null ? null : params.get(i).gradData().clone();
        return g;
    }

    /** Adds the shards' gradients, in shard order, into the driver's parameters. */
    static long addGrads(List<Tensor> params, List<float[][]> shards) {
        long bytes = 0;
        for (float[][] g : shards)
            for (int i = 0; i < g.length; i++)
                if (g[i] != null) {
                    params.get(i).addToGrad(g[i]);
                    bytes += 4L * g[i].length;
                }
        return bytes;
    }

    static int[] rows(int[] a, int from, int to) { return a == null ? null : Arrays.copyOfRange(a, from, to); }

    static Tensor rows(Tensor x, int from, int to) {
        int per = x.numel() / x.size(0);
        int[] s = x.shape();
        s[0] = to - from;
        return Tensor.of(Arrays.copyOfRange(x.data(), from * per, to * per), s);
    }

    /** Shard k of N over B rows: [k B / N, (k + 1) B / N). */
    static int from(int k, int n, int b) { return (int) ((long) b * k / n); }

    static void checkFault(long step) {
        Fault f = fault;
        TaskContext tc = TaskContext.get();
        if (f != null && f.failAt(step, tc.partitionId(), tc.attemptNumber()))
            throw new IllegalStateException("injected failure: step " + step + ", partition " + tc.partitionId() + ", attempt " + tc.attemptNumber());
    }

    /** A step's Spark job failed: nothing of the step was applied; say where the run can resume. */
    static RuntimeException stepFailed(long step, Path dir, Exception e) {
        IllegalStateException f = SparkCommand.jobFailed("step " + step, e);
        return new IllegalStateException(f.getMessage() + "; the step was not applied and the last checkpoint in " + dir
                + " is intact: continue with biflow spark ... --resume " + dir, e);
    }

    // ------------------------------------------------------------------ F

    /** A shard of F's batch: noisy images (b, C, H, W), labels (or null), the weight b / B of its mean. */
    record ForwardShard(long step, float[] x, int[] shape, int[] y, float scale) implements Serializable {}

    record ForwardResult(float[][] grads, double loss, double[] zSquares, double seconds) implements Serializable {}

    /** Installs data-parallel gradients on an F trainer. */
    static void forward(SparkCommand.Session ss, ForwardTrainer t, Path dir) {
        JavaSparkContext sc = ss.sc();
        Broadcast<String> config = sc.broadcast(t.model.config.toJson());
        List<Tensor> params = t.model.parameters();
        t.setGradients((step, x, y) -> {
            long t0 = System.nanoTime();
            int b = x.size(0), n = Math.min(ss.partitions(), b);
            List<ForwardShard> shards = new ArrayList<>();
            for (int k = 0; k < n; k++) {
                int a = from(k, n, b), e = from(k + 1, n, b);
                Tensor xs = rows(x, a, e);
                shards.add(new ForwardShard(step, xs.data(), xs.shape(), rows(y, a, e), n == 1 ? 1f : (float) (e - a) / b));
            }
            float[] flat = flatten(params);
            Broadcast<float[]> weights = sc.broadcast(flat);
            List<ForwardResult> results;
            try {
                results = sc.parallelize(shards, n).map(sh -> forwardShard(config, weights, sh)).collect();
            } catch (Exception e) {
                throw stepFailed(step, dir, e);
            } finally {
                weights.destroy();
            }
            List<float[][]> gs = new ArrayList<>();
            double loss = 0, task = 0;
            double[] zsq = null;
            for (ForwardResult r : results) {
                gs.add(r.grads());
                loss += r.loss();
                task = Math.max(task, r.seconds());
                if (zsq == null) zsq = r.zSquares().clone();
                else for (int j = 0; j < zsq.length; j++) zsq[j] += r.zSquares()[j];
            }
            long r0 = System.nanoTime();
            long gradBytes = addGrads(params, gs);
            long r1 = System.nanoTime();
            COST.add(4L * flat.length, gradBytes, (r1 - t0) / 1e9, task, (r1 - r0) / 1e9);
            return new ForwardTrainer.Gradients.Computed(loss, zsq);
        });
    }

    private static ForwardResult forwardShard(Broadcast<String> config, Broadcast<float[]> weights, ForwardShard sh) {
        checkFault(sh.step());
        Replicas.useTaskCores();
        long t0 = System.nanoTime();
        try (var lease = Replicas.lease(config, json -> new TarFlow(TarFlowConfig.fromJson(json), new Rng(0)))) {
            TarFlow m = lease.value();
            List<Tensor> params = m.parameters();
            load(params, weights.value());
            for (Tensor p : params) p.zeroGrad();
            float[][] g;
            double lv;
            double[] zsq;
            try (Arena ws = Arena.open()) {
                TarFlow.Forward f = m.forward(Tensor.of(sh.x(), sh.shape()), sh.y());
                Tensor loss = TarFlow.loss(f);
                lv = loss.item();
                (sh.scale() == 1f ? loss : Ops.mulScalar(loss, sh.scale())).backward();
                g = grads(params);
                zsq = m.priorSquares(f.z());
            }
            for (Tensor p : params) p.zeroGrad();
            return new ForwardResult(g, lv * sh.scale(), zsq, (System.nanoTime() - t0) / 1e9);
        }
    }

    // ------------------------------------------------------------------ G

    /** What every G replica is built from, once per executor: F's checkpoint, G's config, the training settings, the perceptual nets' files. */
    record BackwardSetup(byte[] forward, String gConfig, String trainConfig, String perceptual, float perceptualWeight,
                         Map<String, byte[]> featureFiles) implements Serializable {}

    /** A shard of G's batch and of its draw. */
    record BackwardShard(long step, float[] x, int[] shape, float[] noisy, int[] labels, float[] w, float scale) implements Serializable {}

    record BackwardResult(float[][] grads, double loss, double recon, double align, double seconds) implements Serializable {}

    static void backward(SparkCommand.Session ss, BackwardTrainer t, Path dir, Path forward, TrainerHooks.Perceptual perceptual) throws IOException {
        JavaSparkContext sc = ss.sc();
        Map<String, byte[]> files = new LinkedHashMap<>();
        var terms = TrainerHooks.perceptualTerms(perceptual); // checked on the driver first
        if (!terms.isEmpty())
            for (String f : List.of(dev.biflow.flow.features.FeatureNets.LPIPS_FILE, dev.biflow.flow.features.FeatureNets.CONVNEXT_FILE))
                if (Files.exists(perceptual.features().resolve(f))) files.put(f, Files.readAllBytes(perceptual.features().resolve(f)));
        Broadcast<BackwardSetup> setup = sc.broadcast(new BackwardSetup(Files.readAllBytes(forward), t.model.config.toJson(),
                JSON.writeValueAsString(t.cfg), perceptual.distance(), perceptual.weight(), files));
        List<Tensor> params = t.model.parameters();
        t.setGradients((step, x, d) -> {
            long t0 = System.nanoTime();
            int b = x.size(0), n = Math.min(ss.partitions(), b);
            List<BackwardShard> shards = new ArrayList<>();
            for (int k = 0; k < n; k++) {
                int a = from(k, n, b), e = from(k + 1, n, b);
                Tensor xs = rows(x, a, e);
                shards.add(new BackwardShard(step, xs.data(), xs.shape(), rows(d.noisy(), a, e).data(), rows(d.labels(), a, e),
                        d.w() == null ? null : Arrays.copyOfRange(d.w(), a, e), n == 1 ? 1f : (float) (e - a) / b));
            }
            float[] flat = flatten(params);
            Broadcast<float[]> weights = sc.broadcast(flat);
            List<BackwardResult> results;
            try {
                // a barrier stage: all shards run at once (the allGather of term values needs every one of them)
                results = sc.parallelize(shards, n).rdd().barrier()
                        .mapPartitions(new BarrierStep(setup, weights), false, scala.reflect.ClassTag$.MODULE$.apply(BackwardResult.class))
                        .toJavaRDD().collect();
            } catch (Exception e) {
                throw stepFailed(step, dir, e);
            } finally {
                weights.destroy();
            }
            List<float[][]> gs = new ArrayList<>();
            double loss = 0, recon = 0, align = 0, task = 0;
            for (BackwardResult r : results) {
                gs.add(r.grads());
                loss += r.loss();
                recon += r.recon();
                align += r.align();
                task = Math.max(task, r.seconds());
            }
            long r0 = System.nanoTime();
            long gradBytes = addGrads(params, gs);
            long r1 = System.nanoTime();
            COST.add(4L * flat.length, gradBytes, (r1 - t0) / 1e9, task, (r1 - r0) / 1e9);
            return new BackwardTrainer.Gradients.Computed(loss, recon, align);
        });
    }

    /** A barrier task's body (RDDBarrier has only the Scala API): its one shard in, its one result out. */
    private static final class BarrierStep extends scala.runtime.AbstractFunction1<scala.collection.Iterator<BackwardShard>,
            scala.collection.Iterator<BackwardResult>> implements Serializable {
        private final Broadcast<BackwardSetup> setup;
        private final Broadcast<float[]> weights;

        BarrierStep(Broadcast<BackwardSetup> setup, Broadcast<float[]> weights) {
            this.setup = setup;
            this.weights = weights;
        }

        @Override
        public scala.collection.Iterator<BackwardResult> apply(scala.collection.Iterator<BackwardShard> it) {
            return scala.jdk.javaapi.CollectionConverters.asScala(List.of(backwardShard(setup, weights, it.next())).iterator());
        }
    }

    /** A worker's G: a trainer (for its objective) over a one-image stand-in dataset: the batches come from the driver. */
    private static BackwardTrainer replica(BackwardSetup s) {
        try {
            TarFlow f = dev.biflow.flow.model.Checkpoints.loadTarFlow(s.forward(), "the forward checkpoint broadcast by the driver");
            FrozenFlow ff = FrozenFlow.of(f);
            BiFlowModel g = new BiFlowModel(BackwardConfig.fromJson(s.gConfig()), new Rng(0));
            TrainConfig tc = JSON.readValue(s.trainConfig(), TrainConfig.class);
            var terms = List.<BackwardTrainer.Term>of();
            if (!s.featureFiles().isEmpty()) {
                Path tmp = Files.createTempDirectory("biflow-features");
                for (var e : s.featureFiles().entrySet()) Files.write(tmp.resolve(e.getKey()), e.getValue());
                terms = TrainerHooks.perceptualTerms(new TrainerHooks.Perceptual(s.perceptual(), tmp, s.perceptualWeight()));
            }
            var c = f.config;
            ImageDataset standIn = new ImageDataset("stand-in", new float[c.dims()], new int[1], c.inChannels(), c.imgSize(), c.imgSize(),
                    Math.max(1, c.numClasses()));
            BackwardTrainer t = new BackwardTrainer(ff, g, standIn, tc, terms, null);
            g.train();
            return t;
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    private static BackwardResult backwardShard(Broadcast<BackwardSetup> setup, Broadcast<float[]> weights, BackwardShard sh) {
        BarrierTaskContext ctx = BarrierTaskContext.get();
        checkFault(sh.step());
        Replicas.useTaskCores();
        long t0 = System.nanoTime();
        try (var lease = Replicas.lease(setup, DataParallel::replica)) {
            BackwardTrainer t = lease.value();
            List<Tensor> params = t.model.parameters();
            load(params, weights.value());
            for (Tensor p : params) p.zeroGrad();
            float[][] g;
            BackwardTrainer.Losses l;
            try (Arena ws = Arena.open()) {
                Tensor x = Tensor.of(sh.x(), sh.shape());
                var d = new BackwardTrainer.Draw(Tensor.of(sh.noisy(), sh.shape()), sh.labels(), sh.w());
                l = t.objective(x, d, local -> batchValues(ctx, sh.scale(), local));
                Tensor total = sh.scale() == 1f ? l.total() : Ops.mulScalar(l.total(), sh.scale());
                double lv = total.item();
                if (Double.isFinite(lv)) total.backward();
                g = grads(params);
                for (Tensor p : params) p.zeroGrad();
                return new BackwardResult(g, lv, l.recon() * sh.scale(), l.align() * sh.scale(), (System.nanoTime() - t0) / 1e9);
            }
        }
    }

    /**
     * The whole batch's term values from every shard's: each task sends "scale name=value ...", all get all
     * (in partition order), and each forms sum_k scale_k v_k the same way, so every shard weights alike.
     */
    private static Map<String, Double> batchValues(BarrierTaskContext ctx, float scale, Map<String, Double> local) {
        StringBuilder sb = new StringBuilder(Float.toString(scale));
        for (var e : local.entrySet()) sb.append(' ').append(e.getKey()).append('=').append(Double.doubleToRawLongBits(e.getValue()));
        String[] all = ctx.allGather(sb.toString());
        Map<String, Double> out = new LinkedHashMap<>();
        for (String k : local.keySet()) out.put(k, 0.0);
        for (String msg : all) {
            String[] parts = msg.split(" ");
            double s = Float.parseFloat(parts[0]);
            for (int i = 1; i < parts.length; i++) {
                int eq = parts[i].indexOf('=');
                String name = parts[i].substring(0, eq);
                out.merge(name, s * Double.longBitsToDouble(Long.parseLong(parts[i].substring(eq + 1))), Double::sum);
            }
        }
        return out;
    }
}
