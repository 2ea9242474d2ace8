// biflow spark sample: the images of `biflow sample`, drawn in shards on Spark, each shard written by the executor that drew it.
package dev.biflow.spark;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.biflow.cli.SampleCommand;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.io.ImageGrid;
import dev.biflow.engine.io.Safetensors;
import dev.biflow.flow.model.Checkpoints;
import dev.biflow.flow.model.TarFlow;
import org.apache.spark.broadcast.Broadcast;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParentCommand;

import java.io.Serializable;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;

@Command(name = "sample", mixinStandardHelpOptions = true, showDefaultValues = true, sortOptions = false,
        description = {"biflow sample on Spark: image i is the image i of `biflow sample` with the same seed and options, bit for bit;",
                "the --n images are cut into --partitions shards of consecutive images, each drawn by one task (the executor",
                "reads the checkpoint once) and written by it into the run folder: shard-NNNNN.safetensors (float images",
                "(count, C, H, W) in [-1, 1]) and shard-NNNNN.png; the driver writes shards.json (which images each holds).",
                "On a cluster --run must be a folder every executor can write (a shared file system)."},
        footer = {"", "Example:", "  biflow spark --master 'local[2]' sample --model models/fmnist/forward.safetensors --n 400 --run runs/sample-spark"})
final class SparkSample implements Callable<Integer> {
    @ParentCommand SparkCommand spark;
    @Mixin SampleCommand sample;
    @picocli.CommandLine.Spec picocli.CommandLine.Model.CommandSpec spec;
    @Option(names = "--run", required = true, description = "Run folder for the shards and shards.json (created).") Path run;

    /** One shard: images [first, first + count) of the sequence. */
    record Shard(int index, long first, int count) implements Serializable {}

    /** What a task reports: its shard, the files it wrote, how long drawing took. */
    record Written(int index, long first, int count, String file, String grid, double seconds) implements Serializable {}

    static final ObjectMapper JSON = new ObjectMapper();

    @Override
    public Integer call() throws Exception {
        sample.applyCommon();
        if (spec.commandLine().getParseResult().hasMatchedOption("--out"))
            throw new IllegalArgumentException("--out is the PNG of `biflow sample`; spark sample writes shards into the folder --run");
        if (sample.backward() != null)
            throw new IllegalArgumentException("--backward (the BiFlow/exact comparison grid) is not sharded: run it with `biflow sample`");
        byte[] ckpt = Files.readAllBytes(sample.model());
        TarFlow m = Checkpoints.loadTarFlow(ckpt, sample.model().toString()); // a bad checkpoint or --labels fails here, before any task
        SampleCommand.Sampling s = sample.sampling();
        s.check(m);
        Files.createDirectories(run);
        try (SparkCommand.Session ss = spark.open("sample")) {
            long t0 = System.nanoTime();
            List<Written> written = draw(ss, ckpt, s, sample.n(), sample.nrow(), run);
            double secs = (System.nanoTime() - t0) / 1e9;
            writeManifest(run, written, s, sample.n(), sample.model());
            System.out.printf(Locale.ROOT, "spark sample: %d images in %.1f s (%.1f images/s) over %d shards -> %s%n",
                    sample.n(), secs, sample.n() / secs, written.size(), run.resolve("shards.json"));
        }
        return 0;
    }

    /** Shards [k n / P, (k + 1) n / P): P near-equal ranges in order (empty ones left out). */
    static List<Shard> shards(int n, int partitions) {
        List<Shard> out = new ArrayList<>();
        for (int k = 0; k < partitions; k++) {
            long a = (long) n * k / partitions, b = (long) n * (k + 1) / partitions;
            if (b > a) out.add(new Shard(out.size(), a, (int) (b - a)));
        }
        return out;
    }

    /** Draws the n images in shards on the cluster; each task writes its shard into run; the reports in shard order. */
    static List<Written> draw(SparkCommand.Session ss, byte[] ckpt, SampleCommand.Sampling s, int n, int nrow, Path run) {
        List<Shard> shards = shards(n, ss.partitions());
        Broadcast<byte[]> model = ss.sc().broadcast(ckpt);
        String dir = run.toAbsolutePath().toString();
        try {
            return ss.sc().parallelize(shards, shards.size()).<Written>map(sh -> {
                Replicas.useTaskCores();
                long t0 = System.nanoTime();
                Tensor x;
                try (var lease = Replicas.lease(model, Replicas::tarFlow)) {
                    x = s.images(lease.value(), sh.first(), sh.count());
                }
                double secs = (System.nanoTime() - t0) / 1e9;
                Path f = Path.of(dir, String.format(Locale.ROOT, "shard-%05d.safetensors", sh.index()));
                Path g = Path.of(dir, String.format(Locale.ROOT, "shard-%05d.png", sh.index()));
                Map<String, String> meta = new LinkedHashMap<>();
                meta.put("first", Long.toString(sh.first()));
                meta.put("count", Integer.toString(sh.count()));
                meta.put("seed", Long.toString(s.seed()));
                Safetensors.write(f, Map.of("images", x), meta);
                ImageGrid.write(g, x, -1f, 1f, nrow, 2, 3);
                return new Written(sh.index(), sh.first(), sh.count(), f.getFileName().toString(), g.getFileName().toString(), secs);
            }).collect();
        } catch (Exception e) { // SparkException (Scala declares none)
            throw SparkCommand.jobFailed("sampling", e);
        } finally {
            model.destroy();
        }
    }

    static void writeManifest(Path run, List<Written> written, SampleCommand.Sampling s, int n, Path model) throws java.io.IOException {
        ObjectNode o = JSON.createObjectNode();
        o.put("model", model.toString());
        o.put("n", n);
        o.set("sampling", JSON.valueToTree(s));
        ArrayNode a = o.putArray("shards");
        for (Written w : written) {
            ObjectNode e = a.addObject();
            e.put("file", w.file());
            e.put("grid", w.grid());
            e.put("first", w.first());
            e.put("count", w.count());
            e.put("seconds", w.seconds());
        }
        dev.biflow.engine.io.AtomicWrite.write(run.resolve("shards.json"), out -> out.write(JSON.writerWithDefaultPrettyPrinter().writeValueAsBytes(o)));
    }

    /** The images of a run folder, in order (shards.json's shards joined): (n, C, H, W). */
    static Tensor readImages(Path run) throws java.io.IOException {
        var manifest = JSON.readTree(run.resolve("shards.json").toFile());
        List<Tensor> parts = new ArrayList<>();
        for (var e : manifest.get("shards")) parts.add(Safetensors.readTensor(run.resolve(e.get("file").asText()), "images"));
        return dev.biflow.engine.Ops.concat(0, parts.toArray(Tensor[]::new));
    }
}
