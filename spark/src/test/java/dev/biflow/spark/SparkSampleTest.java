package dev.biflow.spark;

import dev.biflow.cli.SampleCommand;
import dev.biflow.engine.Tensor;
import dev.biflow.flow.model.TarFlow;
import org.apache.spark.api.java.JavaSparkContext;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Sharded sampling on local[2]: the images of one machine, bit for bit, whatever the shards and batches. */
class SparkSampleTest {
    static JavaSparkContext sc;
    @TempDir static Path dir;
    static Path model;
    static TarFlow flow;

    @BeforeAll
    static void setUp() throws Exception {
        sc = SparkFixture.start();
        flow = SparkFixture.tinyFlow(3);
        model = SparkFixture.save(flow, dir.resolve("f.safetensors"));
    }

    @AfterAll
    static void tearDown() { SparkFixture.stop(sc); }

    @Test
    void shardsEqualOneMachineBitForBit() throws Exception {
        Path run = dir.resolve("run");
        int built = Replicas.BUILT.get();
        // 11 images in 3 shards (3, 4, 4) drawn 2 at a time, guided and denoised; one machine draws them in one batch
        SparkFixture.ok("spark", "--partitions", "3", "sample", "--model", model.toString(), "--n", "11", "--batch", "2",
                "--guidance", "1.5", "--denoise", "0.1", "--seed", "7", "--run", run.toString());
        Tensor sharded = SparkSample.readImages(run);
        Tensor one = new SampleCommand.Sampling("all", 1.5f, false, 1f, 1f, 0.1f, 7, 11).images(flow, 0, 11);
        assertArrayEquals(one.shape(), sharded.shape());
        float[] a = one.data(), b = sharded.data();
        for (int i = 0; i < a.length; i++) assertEquals(Float.floatToRawIntBits(a[i]), Float.floatToRawIntBits(b[i]), "value " + i);
        assertTrue(Files.exists(run.resolve("shard-00002.png")));
        // three tasks on two slots: at most one replica of the model per slot
        assertTrue(Replicas.BUILT.get() - built <= 2, "replicas built: " + (Replicas.BUILT.get() - built));
    }

    @Test
    void shardedEvalGradesExactlyAsOneMachine() throws Exception {
        // a 28x28 F (the evaluation network's input) and an untrained FashionNet-eval: the numbers only need to be equal
        Path idx = dir.resolve("idx");
        Files.createDirectories(idx);
        dev.biflow.cli.TinyIdx.writeSplit(idx, "train", 16, 1);
        dev.biflow.cli.TinyIdx.writeSplit(idx, "t10k", 8, 2);
        TarFlow f = new TarFlow(new dev.biflow.flow.model.TarFlowConfig(1, 28, 7, 16, 1, 1, 10, 8, dev.biflow.flow.model.NormControl.NONE, 0f),
                new dev.biflow.engine.Rng(4));
        Path fFile = SparkFixture.save(f, dir.resolve("f28.safetensors"));
        Path net = dir.resolve("eval-net.safetensors");
        dev.biflow.flow.features.FeatureNets.save(dev.biflow.flow.features.FeatureNets.build(
                dev.biflow.flow.features.FeatureNetConfig.evalDefault(), new dev.biflow.engine.Rng(5)), net, java.util.Map.of());
        String[] common = {"--model", fFile.toString(), "--eval-net", net.toString(), "--data", idx.toString(), "--samples", "12",
                "--bpd-images", "0", "--batch", "5", "--w", "1", "--seed", "3"};
        Path one = dir.resolve("eval-one"), sharded = dir.resolve("eval-spark");
        SparkFixture.ok(cat(new String[]{"eval", "--out", one.toString()}, common));
        SparkFixture.ok(cat(new String[]{"spark", "--partitions", "3", "eval", "--out", sharded.toString()}, common));
        List<String> a = Files.readAllLines(one.resolve("eval.jsonl")), b = Files.readAllLines(sharded.resolve("eval.jsonl"));
        assertEquals(a.size(), b.size());
        var json = new com.fasterxml.jackson.databind.ObjectMapper();
        for (int i = 0; i < a.size(); i++) {
            var ra = (com.fasterxml.jackson.databind.node.ObjectNode) json.readTree(a.get(i));
            var rb = (com.fasterxml.jackson.databind.node.ObjectNode) json.readTree(b.get(i));
            for (String timing : new String[]{"ms_per_image", "images_per_s"}) {
                ra.remove(timing);
                rb.remove(timing);
            }
            assertEquals(ra, rb, "row " + i + ": FD, CS, precision/recall and class consistency from the same features");
        }
        assertTrue(Files.exists(sharded.resolve("samples-exact.png")));
    }

    static String[] cat(String[] a, String[] b) {
        String[] out = java.util.Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, out, a.length, b.length);
        return out;
    }

    @Test
    void badOptionsFailBeforeAnyTask() {
        var r = SparkFixture.biflow("spark", "sample", "--model", model.toString(), "--labels", "9", "--run", dir.resolve("bad").toString());
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().contains("--labels"), r.err());
        var o = SparkFixture.biflow("spark", "sample", "--model", model.toString(), "--out", "x.png", "--run", dir.resolve("bad").toString());
        assertEquals(2, o.code(), o.err());
        assertTrue(o.err().contains("--run"), o.err());
    }
}
