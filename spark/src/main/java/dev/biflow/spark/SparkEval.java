// biflow spark eval: biflow eval with each sampler's images drawn and embedded in shards on Spark, graded on the driver.
package dev.biflow.spark;

import dev.biflow.cli.EvalCommand;
import dev.biflow.cli.SamplerEval;
import dev.biflow.engine.Tensor;
import dev.biflow.flow.inverse.BackwardCheckpoints;
import dev.biflow.flow.inverse.BiFlowSampler;
import dev.biflow.flow.inverse.FrozenFlow;
import dev.biflow.flow.metrics.Metrics;
import dev.biflow.flow.model.TarFlow;
import org.apache.spark.broadcast.Broadcast;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.ParentCommand;

import java.io.IOException;
import java.io.Serializable;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.Callable;

@Command(name = "eval", mixinStandardHelpOptions = true, showDefaultValues = true, sortOptions = false,
        description = {"biflow eval on Spark: each sampler's --samples images are cut into --partitions shards of consecutive",
                "images (noise and labels as on one machine), drawn and embedded by FashionNet-eval on the executors",
                "(F, G and the evaluation network read once per executor, from a broadcast); the embeddings come back",
                "whole and in order, and the driver computes every metric from them exactly as biflow eval does (no",
                "per-shard averages). bits/dim, the real-data floor and G's reconstruction run on the driver.",
                "ms/image and images/s are the cluster's wall-clock time per image, embedding included."})
final class SparkEval implements Callable<Integer> {
    @ParentCommand SparkCommand spark;
    @Mixin EvalCommand eval;

    /** The checkpoints every replica is built from, as bytes (file name -> contents). */
    record Setup(byte[] forward, byte[] backward, byte[] evalNet) implements Serializable {}

    /** What a shard sends back: its embeddings and, when it holds some of them, the grid's leading images. */
    record Part(float[] features, float[] probs, float[] first, int[] firstShape, int dim, int classes) implements Serializable {}

    @Override
    public Integer call() throws Exception {
        Path g = eval.backward();
        Setup setup = new Setup(Files.readAllBytes(eval.model()), g == null ? null : Files.readAllBytes(g),
                Files.exists(eval.evalNet()) ? Files.readAllBytes(eval.evalNet()) : null);
        try (SparkCommand.Session ss = spark.open("eval")) {
            Broadcast<Setup> b = ss.sc().broadcast(setup);
            try {
                return eval.run(job -> draw(ss, b, job));
            } finally {
                b.destroy();
            }
        }
    }

    /** A replica: F, G (or null) and the metrics' network, from the broadcast bytes (G and the network through files). */
    record Replica(TarFlow f, FrozenFlow ff, dev.biflow.flow.inverse.BiFlowModel g, Metrics metrics) {}

    static Replica replica(Setup s) {
        try {
            TarFlow f = Replicas.tarFlow(s.forward());
            Path tmp = Files.createTempDirectory("biflow-eval");
            try {
                dev.biflow.flow.inverse.BiFlowModel g = null;
                if (s.backward() != null) g = BackwardCheckpoints.read(Files.write(tmp.resolve("g.safetensors"), s.backward())).model();
                Metrics m = Metrics.load(Files.write(tmp.resolve("eval.safetensors"), s.evalNet()));
                return new Replica(f, FrozenFlow.of(f), g, m);
            } finally {
                try (var files = Files.list(tmp)) {
                    for (Path p : files.toList()) Files.deleteIfExists(p);
                }
                Files.deleteIfExists(tmp);
            }
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    static SamplerEval.Drawn draw(SparkCommand.Session ss, Broadcast<Setup> setup, SamplerEval.Job job) {
        long t0 = System.nanoTime();
        List<SparkSample.Shard> shards = SparkSample.shards(job.n(), ss.partitions());
        List<Part> parts;
        try {
            parts = ss.sc().parallelize(shards, shards.size()).<Part>map(sh -> {
                Replicas.useTaskCores();
                try (var lease = Replicas.lease(setup, SparkEval::replica)) {
                    Replica r = lease.value();
                    BiFlowSampler s = SamplerEval.sampler(job.sampler(), r.ff(), r.g(), job.sigma());
                    Tensor x = SamplerEval.sampleRange(s, r.f().config, job, (int) sh.first(), sh.count());
                    Metrics.Embedding e = r.metrics().embed(x);
                    int keep = (int) Math.max(0, Math.min(sh.count(), job.keep() - sh.first()));
                    int per = x.numel() / x.size(0);
                    int[] shape = x.shape();
                    shape[0] = keep;
                    return new Part(e.features(), e.probs(), Arrays.copyOf(x.data(), keep * per), shape, e.dim(), e.numClasses());
                }
            }).collect();
        } catch (Exception e) {
            throw SparkCommand.jobFailed("drawing the " + job.sampler() + " sampler's images", e);
        }
        double secs = (System.nanoTime() - t0) / 1e9;
        int dim = parts.get(0).dim(), classes = parts.get(0).classes();
        float[] feats = new float[job.n() * dim], probs = new float[job.n() * classes];
        List<float[]> first = new ArrayList<>();
        int o = 0, keep = 0;
        int[] shape = null;
        for (Part p : parts) {
            int c = p.features().length / dim;
            System.arraycopy(p.features(), 0, feats, o * dim, c * dim);
            System.arraycopy(p.probs(), 0, probs, o * classes, c * classes);
            o += c;
            if (p.firstShape()[0] > 0) {
                first.add(p.first());
                keep += p.firstShape()[0];
                shape = p.firstShape();
            }
        }
        float[] lead = new float[first.stream().mapToInt(a -> a.length).sum()];
        int q = 0;
        for (float[] a : first) {
            System.arraycopy(a, 0, lead, q, a.length);
            q += a.length;
        }
        shape[0] = keep;
        return new SamplerEval.Drawn(new Metrics.Embedding(feats, probs, job.n(), dim, classes), Tensor.of(lead, shape), secs);
    }
}
