// Hostile sizes: inputs that used to end in an OutOfMemoryError are one-line errors (exit 2), or stream in bounded memory.
package dev.biflow.cli;

import dev.biflow.cli.CliErrorsTest.Run;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.io.MemoryBudget;
import dev.biflow.engine.io.Safetensors;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.zip.GZIPOutputStream;

import static dev.biflow.cli.CliErrorsTest.run;
import static dev.biflow.cli.HostileInputsTest.oneLineError;
import static dev.biflow.cli.TrainSettingsTest.ok;
import static org.junit.jupiter.api.Assertions.*;

class MemoryLimitsTest {
    @TempDir static Path shared;
    static Path model;

    @BeforeAll
    static void tinyModel() throws IOException {
        model = TrainSettingsTest.tinyForwardModel(shared);
    }

    @AfterEach
    void noBudget() { System.clearProperty(MemoryBudget.PROPERTY); }

    /** A safetensors file with this header JSON, its data area {@code dataBytes} long (sparse: nothing written). */
    static Path rawSafetensors(Path file, String json, long dataBytes) throws IOException {
        byte[] h = json.getBytes(StandardCharsets.UTF_8);
        try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "rw")) {
            f.write(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(h.length).array());
            f.write(h);
            f.setLength(8L + h.length + dataBytes);
        }
        return file;
    }

    static String configOf(Path checkpoint) throws IOException {
        return Safetensors.readHeader(checkpoint).metadata().get("config");
    }

    @Test
    void aSmallCheckpointAskingForAHugeModelIsRefusedBeforeBuildingIt(@TempDir Path tmp) throws Exception {
        Safetensors.Contents c = Safetensors.read(model);
        Map<String, String> meta = new LinkedHashMap<>(c.metadata());
        meta.put("config", "{\"in_channels\":1,\"img_size\":28,\"patch_size\":4,\"channels\":65536,\"num_blocks\":64,"
                + "\"layers_per_block\":8,\"num_classes\":10,\"head_dim\":64}");
        Path bad = tmp.resolve("huge-config.safetensors");
        Safetensors.write(bad, c.tensors(), meta);
        assertTrue(Files.size(bad) < 1 << 20);
        Path png = tmp.resolve("s.png");
        oneLineError(run("sample", "--model", bad.toString(), "--n", "2", "--out", png.toString()),
                bad.toString(), "describes a TARFlow of", "weights, but the file holds only");
        assertFalse(Files.exists(png));
        // the right size of file, but more than the heap: the memory check names the numbers and the fix
        System.setProperty(MemoryBudget.PROPERTY, "16k");
        oneLineError(run("sample", "--model", model.toString(), "--n", "2", "--out", png.toString()),
                "more than the 16.0 KB budget", "BIFLOW_JAVA_OPTS=-Xmx");
    }

    @Test
    void aHugeU8TensorIsRefusedBeforeDecoding(@TempDir Path tmp) throws Exception {
        long n = 1_700_000_000L;
        String cfg = configOf(model).replace("\"", "\\\"");
        Path big = rawSafetensors(tmp.resolve("u8.safetensors"), "{\"w\":{\"dtype\":\"U8\",\"shape\":[" + n + "],\"data_offsets\":[0," + n
                + "]},\"__metadata__\":{\"config\":\"" + cfg + "\",\"kind\":\"tarflow\"}}", n);
        System.setProperty(MemoryBudget.PROPERTY, "256m");
        oneLineError(run("sample", "--model", big.toString(), "--n", "2", "--out", tmp.resolve("s.png").toString()),
                big.toString(), "loading its 1 tensors as float32 needs 6.3 GB, more than the 256.0 MB budget", "-Xmx");
        var e = assertThrows(dev.biflow.engine.io.InputTooLargeException.class, () -> Safetensors.readTensor(big, "w"));
        assertTrue(e.getMessage().contains("tensor 'w' (1700000000 U8 values, as float32) needs 6.3 GB"), e.getMessage());
    }

    @Test
    void aGzipIdxThatExpandsBeyondTheBudgetIsRefusedBeforeItIsKept(@TempDir Path tmp) throws Exception {
        Path dir = tmp.resolve("bomb");
        Files.createDirectories(dir);
        TinyIdx.writeSplit(dir, "t10k", 8, 2);
        TinyIdx.writeSplit(dir, "train", 8, 1);
        Files.delete(dir.resolve("train-images-idx3-ubyte"));
        int n = 20_000; // x 28 x 28 = 15 MB of pixels in a 15 KB gzip; 75 MB as bytes and floats, over a 16 MB budget
        ByteArrayOutputStream bo = new ByteArrayOutputStream();
        try (DataOutputStream d = new DataOutputStream(new GZIPOutputStream(bo))) {
            d.writeInt(0x00000803);
            d.writeInt(n);
            d.writeInt(28);
            d.writeInt(28);
            d.write(new byte[n * 28 * 28]);
        }
        Path gz = Files.write(dir.resolve("train-images-idx3-ubyte.gz"), bo.toByteArray());
        assertTrue(Files.size(gz) < 100_000);
        System.setProperty(MemoryBudget.PROPERTY, "16m");
        oneLineError(run(HostileInputsTest.tiny(tmp, "r", "--data", dir.toString())), gz.toString(),
                "IDX data (20000, 28, 28) of UBYTE (15.0 MB on disk after decompression, 4 bytes per value in memory) needs 74.8 MB,"
                        + " more than the 16.0 MB budget", "BIFLOW_JAVA_OPTS=-Xmx");
        // the same header with its data cut short is a truncated file, whatever the budget
        byte[] cut = java.util.Arrays.copyOf(Idx_gunzip(gz), 16 + 1000);
        Files.write(gz, cut);
        oneLineError(run(HostileInputsTest.tiny(tmp, "r", "--data", dir.toString())), "need 15680000 bytes of data but the file has only 1000");
        assertFalse(Files.exists(tmp.resolve("r")), "no run folder");
    }

    static byte[] Idx_gunzip(Path gz) throws IOException {
        try (var in = new java.util.zip.GZIPInputStream(Files.newInputStream(gz))) {
            return in.readAllBytes();
        }
    }

    /** sample: any --n in batches, as several grid files when one would be too large; batching does not change the images. */
    @Test
    void sampleStreamsAnyNumberInBatchesAndGrids(@TempDir Path tmp) throws Exception {
        Path one = tmp.resolve("one.png"), batched = tmp.resolve("batched.png");
        ok(List.of("sample", "--model", model.toString(), "--n", "30", "--batch", "30", "--out", one.toString(), "--threads", "1"));
        ok(List.of("sample", "--model", model.toString(), "--n", "30", "--batch", "7", "--out", batched.toString(), "--threads", "1"));
        assertArrayEquals(Files.readAllBytes(one), Files.readAllBytes(batched), "the same images, batch by batch");
        System.setProperty(MemoryBudget.PROPERTY, "8m"); // 1 MB per grid: 90 images
        Run r = ok(List.of("sample", "--model", model.toString(), "--n", "200", "--batch", "16", "--out", tmp.resolve("many.png").toString(), "--threads", "1"));
        assertTrue(r.out().contains("(3 grids of up to 90 images)"), r.out());
        for (int i = 0; i < 3; i++) assertTrue(Files.exists(tmp.resolve(String.format("many-%05d.png", i))));
        assertFalse(Files.exists(tmp.resolve("many.png")));
        assertFalse(Files.exists(tmp.resolve("many-00003.png")));
    }

    @Test
    void evalRefusesMoreSamplesThanTheMetricsCanHold(@TempDir Path tmp) throws Exception {
        Path net = Path.of("..", "models", "fmnist", "fashionnet-eval.safetensors");
        oneLineError(run("eval", "--model", model.toString(), "--samples", "2000000", "--bpd-images", "0", "--data", TrainSettingsTest.data.toString(),
                        "--eval-net", net.toString(), "--out", tmp.resolve("ev").toString(), "--threads", "1"),
                "--samples 2000000 is too many for this heap", "need every sample and its features in memory", "-Xmx", "or use --samples ");
        assertFalse(Files.exists(tmp.resolve("ev")));
    }

    /** flow forward|reverse read and write batch by batch: the same bytes as in one batch, in a budget the whole input exceeds. */
    @Test
    void flowStreamsBatchByBatch(@TempDir Path tmp) throws Exception {
        int n = 100;
        Tensor x = Tensor.randn(new dev.biflow.engine.Rng(3), n, 1, 28, 28);
        float[] y = new float[n];
        for (int i = 0; i < n; i++) y[i] = i % 10;
        Map<String, Tensor> in = new LinkedHashMap<>();
        in.put("x", x);
        in.put("y", Tensor.of(y, n));
        Path input = tmp.resolve("in.safetensors"), whole = tmp.resolve("whole.safetensors"), streamed = tmp.resolve("streamed.safetensors");
        Safetensors.write(input, in, Map.of());
        ok(List.of("flow", "forward", "--model", model.toString(), "--input", input.toString(), "--output", whole.toString(), "--batch", "100", "--threads", "1"));
        System.setProperty(MemoryBudget.PROPERTY, "256k"); // the input alone is 313 KB
        ok(List.of("flow", "forward", "--model", model.toString(), "--input", input.toString(), "--output", streamed.toString(), "--batch", "16", "--threads", "1"));
        System.clearProperty(MemoryBudget.PROPERTY);
        assertArrayEquals(Files.readAllBytes(whole), Files.readAllBytes(streamed));
        Safetensors.Contents out = Safetensors.read(streamed);
        assertArrayEquals(new int[]{n}, out.tensor("logdet").shape());
        // reverse too, from the z just written
        Path back = tmp.resolve("back.safetensors"), back1 = tmp.resolve("back1.safetensors");
        ok(List.of("flow", "reverse", "--model", model.toString(), "--input", streamed.toString(), "--output", back.toString(), "--batch", "9", "--threads", "1"));
        ok(List.of("flow", "reverse", "--model", model.toString(), "--input", streamed.toString(), "--output", back1.toString(), "--batch", "100", "--threads", "1"));
        assertArrayEquals(Files.readAllBytes(back1), Files.readAllBytes(back));
        oneLineError(run("flow", "forward", "--model", model.toString(), "--input", streamed.toString(), "--output", tmp.resolve("o").toString(), "--x-key", "z"),
                "tensor 'z' has shape [100, 49, 16]; the model forward takes (B, 1, 28, 28)");
        assertFalse(Files.exists(tmp.resolve("o")));
    }

    /** A real OutOfMemoryError (here: one huge batch in a 48 MB heap) is one line naming the fix, exit 3, no stack trace. */
    @Test
    void anOutOfMemoryErrorIsOneLineNamingTheFix(@TempDir Path tmp) throws Exception {
        int n = 8000;
        Path input = tmp.resolve("in.safetensors");
        Safetensors.write(input, Map.of("x", Tensor.zeros(n, 1, 28, 28)), Map.of());
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        List<String> cmd = new ArrayList<>(List.of(java, "--add-modules", "jdk.incubator.vector", "-XX:+UseSerialGC", "-Xmx48m",
                "-D" + MemoryBudget.PROPERTY + "=1g", "-cp", System.getProperty("java.class.path"), Main.class.getName(),
                "flow", "forward", "--model", model.toString(), "--input", input.toString(), "--output", tmp.resolve("o.safetensors").toString(),
                "--batch", String.valueOf(n), "--threads", "1"));
        Path log = tmp.resolve("log");
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
        assertTrue(p.waitFor(120, TimeUnit.SECONDS), "child timed out");
        String out = Files.readString(log).lines().filter(l -> !l.startsWith("WARNING")).reduce("", (a, b) -> a + b + "\n");
        assertEquals(3, p.exitValue(), out);
        assertTrue(out.matches("(?s)biflow flow: error: out of memory: the Java heap \\(4\\d\\.\\d MB\\) is too small for this; run with more, e.g."
                + " BIFLOW_JAVA_OPTS=-Xmx2g \\./biflow flow \\.\\.\\., or use a smaller --batch .*"), out);
        assertEquals(1, out.strip().lines().count(), out);
        assertFalse(Files.exists(tmp.resolve("o.safetensors")));
    }
}
