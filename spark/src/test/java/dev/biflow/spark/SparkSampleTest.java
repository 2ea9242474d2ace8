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
    void badOptionsFailBeforeAnyTask() {
        var r = SparkFixture.biflow("spark", "sample", "--model", model.toString(), "--labels", "9", "--run", dir.resolve("bad").toString());
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().contains("--labels"), r.err());
        var o = SparkFixture.biflow("spark", "sample", "--model", model.toString(), "--out", "x.png", "--run", dir.resolve("bad").toString());
        assertEquals(2, o.code(), o.err());
        assertTrue(o.err().contains("--run"), o.err());
    }
}
