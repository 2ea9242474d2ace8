// The main job end to end on tiny models: demo from a models folder, eval's table and files, export to F16 and back.
package dev.biflow.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.biflow.cli.CliErrorsTest.Run;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.io.Safetensors;
import dev.biflow.flow.features.FeatureNets;
import dev.biflow.flow.model.Checkpoints;
import dev.biflow.flow.model.TarFlow;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static dev.biflow.cli.CliErrorsTest.run;
import static dev.biflow.cli.TrainSettingsTest.ok;
import static org.junit.jupiter.api.Assertions.*;

class DemoEvalExportTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    @TempDir static Path shared;
    static Path data, models;

    /** A models folder as the demo expects it, filled with tiny freshly trained models (2 steps each). */
    @BeforeAll
    static void tinyModels() throws IOException {
        data = shared.resolve("tiny-idx");
        Files.createDirectories(data);
        TinyIdx.writeSplit(data, "train", 16, 1);
        TinyIdx.writeSplit(data, "t10k", 8, 2);
        Path runs = shared.resolve("runs");
        ok(List.of("train-forward", "--data", data.toString(), "--runs", runs.toString(), "--name", "f", "--width", "16", "--blocks", "2",
                "--layers", "1", "--head-dim", "8", "--steps", "2", "--batch", "4", "--eval-images", "4", "--threads", "1"));
        Path f = runs.resolve("f").resolve("model.safetensors");
        ok(List.of("train-backward", "--forward", f.toString(), "--data", data.toString(), "--runs", runs.toString(), "--name", "g",
                "--perceptual", "none", "--width", "16", "--head-dim", "8", "--layers-per-stage", "1", "--steps", "2", "--batch", "4",
                "--threads", "1"));
        Path nets = shared.resolve("nets");
        ok(List.of("train-features", "--arch", "eval", "--steps", "2", "--batch", "8", "--data", data.toString(), "--out", nets.toString(),
                "--threads", "1"));
        models = shared.resolve("models");
        Files.createDirectories(models);
        // the shipped layout, written by export as the shipped files are
        ok(List.of("export", f.toString(), models.resolve(DemoCommand.FORWARD_FILE).toString()));
        ok(List.of("export", runs.resolve("g").resolve("backward.safetensors").toString(), models.resolve(DemoCommand.BACKWARD_FILE).toString()));
        ok(List.of("export", nets.resolve(FeatureNets.EVAL_FILE).toString(), models.resolve(FeatureNets.EVAL_FILE).toString()));
    }

    @Test
    void demoSamplesBothWaysGradesTimesAndWritesAReport(@TempDir Path tmp) throws Exception {
        Run r = ok(List.of("demo", "--models", models.toString(), "--data", data.toString(), "--runs", tmp.toString(), "--samples", "12",
                "--bpd-images", "4", "--threads", "1"));
        Path dir;
        try (var s = Files.list(tmp)) {
            dir = s.filter(p -> p.getFileName().toString().startsWith("demo-")).findFirst().orElseThrow();
        }
        Path html = dir.resolve("report.html");
        assertTrue(r.out().contains("report: " + html.toAbsolutePath()), r.out());
        List<String> lines = Files.readAllLines(dir.resolve("eval.jsonl"));
        assertEquals(7, lines.size(), "bits/dim line, the real floor, exact inverse at w = 1 and 0, BiFlow at w = 1 and 0, "
                + "G's reconstruction of test images: " + lines);
        JsonNode recon = JSON.readTree(lines.get(6));
        assertTrue(recon.get("recon_mse").asDouble() > 0 && recon.get("recon_images").asInt() == 8, lines.get(6));
        JsonNode bpd = JSON.readTree(lines.get(0)), floor = JSON.readTree(lines.get(1)), exact = JSON.readTree(lines.get(2)),
                exact0 = JSON.readTree(lines.get(3)), one = JSON.readTree(lines.get(4)), one0 = JSON.readTree(lines.get(5));
        assertTrue(bpd.get("test_bpd").asDouble() > 0, lines.get(0));
        assertTrue(floor.get("ms_per_image").isNull(), "the real data has no sampling cost");
        assertEquals("exact inverse, CFG w=1", exact.get("sampler").asText());
        assertEquals("exact inverse, CFG w=0", exact0.get("sampler").asText());
        assertEquals("biflow 1-NFE, w=1", one.get("sampler").asText());
        assertEquals("biflow 1-NFE, w=0", one0.get("sampler").asText());
        assertEquals(1, one.get("nfe").asInt(), "G is one network evaluation");
        assertEquals(2 * 48 * 2 + 1, exact.get("nfe").asInt(), "blocks x (tokens - 1) decode steps x 2 (CFG) + the denoising pass");
        assertEquals(2 * 48 + 1, exact0.get("nfe").asInt(), "no second pass without guidance");
        for (JsonNode row : List.of(exact, exact0, one, one0)) {
            assertEquals(12, row.get("n").asInt());
            assertTrue(row.get("ms_per_image").asDouble() > 0 && Double.isFinite(row.get("fd_fashionnet").asDouble()), row.toString());
            double cc = row.get("class_consistency").asDouble();
            assertTrue(cc >= 0 && cc <= 1, row.toString());
        }
        assertNotEquals(exact.get("fd_fashionnet").asDouble(), exact0.get("fd_fashionnet").asDouble(), "guidance changes the samples");
        String page = Files.readString(html);
        assertTrue(page.contains("biflow 1-NFE") && page.contains("exact inverse") && page.contains("FD-FashionNet"), "the table is in the report");
        assertTrue(page.contains("data:image/png;base64,"), "pictures are embedded");
        for (String png : List.of("samples-biflow-vs-exact.png", "sampling-cost.png", "sample-quality.png", "reconstruction-biflow.png"))
            assertTrue(Files.size(dir.resolve(png)) > 100, png);
        assertTrue(r.out().contains("speed-up of BiFlow 1-NFE over the exact inverse"), r.out());
        assertTrue(page.contains("biflow demo --models ") && !page.contains("biflow demo demo"), "the command as typed");
    }

    /** A sweep grades both samplers at every scale, draws FD against w and names each sampler's best. */
    @Test
    void evalSweepsGuidanceForBothSamplers(@TempDir Path tmp) throws Exception {
        Path out = tmp.resolve("sweep");
        Run r = ok(List.of("eval", "--model", models.resolve(DemoCommand.FORWARD_FILE).toString(), "--backward",
                models.resolve(DemoCommand.BACKWARD_FILE).toString(), "--data", data.toString(), "--samples", "8", "--n", "0",
                "--eval-net", models.resolve(FeatureNets.EVAL_FILE).toString(), "--w-sweep", "1,0,0.5", "--out", out.toString(), "--threads", "1"));
        List<String> samplers = new java.util.ArrayList<>();
        for (String line : Files.readAllLines(out.resolve("eval.jsonl"))) {
            JsonNode n = JSON.readTree(line);
            if (n.has("sampler")) samplers.add(n.get("sampler").asText());
        }
        assertEquals(List.of("real test vs train (floor)", "exact inverse, CFG w=0", "exact inverse, CFG w=0.5", "exact inverse, CFG w=1",
                "biflow 1-NFE, w=0", "biflow 1-NFE, w=0.5", "biflow 1-NFE, w=1"), samplers);
        assertTrue(Files.size(out.resolve("guidance.png")) > 100);
        assertTrue(r.out().contains("best of the sweep: exact inverse, CFG w=") && r.out().contains("best of the sweep: biflow 1-NFE, w="), r.out());
        Run both = run("eval", "--model", models.resolve(DemoCommand.FORWARD_FILE).toString(), "--data", data.toString(),
                "--w-sweep", "0,1", "--w", "2", "--eval-net", models.resolve(FeatureNets.EVAL_FILE).toString());
        assertEquals(2, both.code());
        assertTrue(both.err().contains("drop --w"), both.err());
    }

    /** export --guidance-w records G's scale; eval and demo then sample G at it by default, the exact inverse at 1. */
    @Test
    void recordedGuidanceScaleIsGsDefault(@TempDir Path tmp) throws Exception {
        Path g = tmp.resolve("g.safetensors");
        ok(List.of("export", models.resolve(DemoCommand.BACKWARD_FILE).toString(), g.toString(), "--guidance-w", "0.5"));
        assertEquals("0.5", Safetensors.read(g).metadata().get(dev.biflow.flow.inverse.BackwardCheckpoints.GUIDANCE_KEY));
        Path out = tmp.resolve("e");
        ok(List.of("eval", "--model", models.resolve(DemoCommand.FORWARD_FILE).toString(), "--backward", g.toString(), "--data", data.toString(),
                "--samples", "8", "--n", "0", "--eval-net", models.resolve(FeatureNets.EVAL_FILE).toString(), "--out", out.toString(), "--threads", "1"));
        String rows = Files.readString(out.resolve("eval.jsonl"));
        assertTrue(rows.contains("\"exact inverse, CFG w=1\"") && rows.contains("\"biflow 1-NFE, w=0.5\""), rows);
        // an explicit --w-biflow wins over the recorded scale
        ok(List.of("eval", "--model", models.resolve(DemoCommand.FORWARD_FILE).toString(), "--backward", g.toString(), "--data", data.toString(),
                "--samples", "8", "--n", "0", "--eval-net", models.resolve(FeatureNets.EVAL_FILE).toString(), "--out", out.toString(),
                "--w-biflow", "0.25", "--threads", "1"));
        assertTrue(Files.readString(out.resolve("eval.jsonl")).contains("\"biflow 1-NFE, w=0.25\""));
        // refused: a forward model, and a scale outside G's trained range
        Run fwd = run("export", models.resolve(DemoCommand.FORWARD_FILE).toString(), tmp.resolve("f.safetensors").toString(), "--guidance-w", "1");
        assertEquals(2, fwd.code());
        assertTrue(fwd.err().contains("backward models"), fwd.err());
        Run far = run("export", models.resolve(DemoCommand.BACKWARD_FILE).toString(), tmp.resolve("g2.safetensors").toString(), "--guidance-w", "99");
        assertEquals(2, far.code());
        assertTrue(far.err().contains("w_max"), far.err());
        assertFalse(Files.exists(tmp.resolve("g2.safetensors")), "nothing written on a refusal");
    }

    @Test
    void demoWithoutModelsSaysWhereTheyShouldBeAndHowToTrainThem(@TempDir Path tmp) {
        Run r = run("demo", "--models", tmp.resolve("none").toString(), "--data", data.toString(), "--runs", tmp.toString());
        assertEquals(2, r.code());
        assertTrue(r.err().contains(tmp.resolve("none").resolve(DemoCommand.FORWARD_FILE).toString()) && r.err().contains("--from-scratch"), r.err());
    }

    @Test
    void evalWithoutSamplesReportsBitsPerDimOnly(@TempDir Path tmp) {
        Run r = ok(List.of("eval", "--model", models.resolve(DemoCommand.FORWARD_FILE).toString(), "--data", data.toString(), "--samples", "0",
                "--n", "8", "--threads", "1"));
        assertTrue(r.out().matches("(?s).*test bits/dim \\d+\\.\\d+ over 8 images.*"), r.out());
        Run missing = run("eval", "--model", models.resolve(DemoCommand.FORWARD_FILE).toString(), "--data", data.toString(), "--samples", "4",
                "--eval-net", tmp.resolve("no-net.safetensors").toString());
        assertEquals(2, missing.code());
        assertTrue(missing.err().contains("train-features --arch eval"), missing.err());
    }

    /** F16 export: half the bytes, metadata kept, the loaded model within F16 rounding of the original. */
    @Test
    void exportToHalfPrecisionKeepsTheModel(@TempDir Path tmp) throws Exception {
        Path src = shared.resolve("runs").resolve("f").resolve("model.safetensors"), dst = tmp.resolve("half.safetensors");
        ok(List.of("export", src.toString(), dst.toString(), "--dtype", "f16"));
        assertEquals(Safetensors.read(src).metadata(), Safetensors.read(dst).metadata());
        assertTrue(Files.size(dst) < 0.55 * Files.size(src), Files.size(dst) + " vs " + Files.size(src));
        TarFlow a = Checkpoints.loadTarFlow(src), b = Checkpoints.loadTarFlow(dst);
        Tensor x = Tensor.randn(new Rng(3), 2, 1, 28, 28);
        int[] y = {1, 2};
        float[] za = a.forward(x, y).z().data(), zb = b.forward(x, y).z().data();
        double maxDiff = 0, scale = 0;
        for (int i = 0; i < za.length; i++) {
            maxDiff = Math.max(maxDiff, Math.abs(za[i] - zb[i]));
            scale = Math.max(scale, Math.abs(za[i]));
        }
        assertTrue(maxDiff > 0, "the weights were rounded");
        assertTrue(maxDiff < 1e-2 * Math.max(1, scale), "F16 weights change z by " + maxDiff + " (|z| up to " + scale + ")");
        Run same = run("export", src.toString(), src.toString());
        assertEquals(2, same.code());
        assertTrue(same.err().contains("is the input"), same.err());
        Run bad = run("export", src.toString(), tmp.resolve("x.safetensors").toString(), "--dtype", "int8");
        assertEquals(2, bad.code());
        assertTrue(bad.err().contains("f16 or f32"), bad.err());
    }

    /** --from-scratch records the shipped G's guidance scale in its G: the constant must be the one in the shipped file. */
    @Test
    void fromScratchUsesTheShippedGsGuidanceScale() throws Exception {
        Path shipped = Path.of("..").resolve(DemoCommand.SHIPPED).resolve(DemoCommand.BACKWARD_FILE);
        assertEquals(DemoCommand.SHIPPED_G_W, dev.biflow.flow.inverse.BackwardCheckpoints.read(shipped).guidance(), 0f, shipped.toString());
    }
}
