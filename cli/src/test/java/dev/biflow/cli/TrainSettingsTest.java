// Settings of the train commands: --config files (flags > file > defaults), --resume keeping a run's saved settings, train-features.
package dev.biflow.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.biflow.cli.CliErrorsTest.Run;
import dev.biflow.flow.features.FeatureNetConfig;
import dev.biflow.flow.features.FeatureNets;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static dev.biflow.cli.CliErrorsTest.run;
import static org.junit.jupiter.api.Assertions.*;

class TrainSettingsTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    @TempDir static Path shared;
    static Path data;

    /** A tiny MNIST-format dataset: 16 train and 8 test images of 28x28, labels 0..9. */
    @BeforeAll
    static void tinyDataset() throws IOException {
        data = shared.resolve("tiny-idx");
        Files.createDirectories(data);
        TinyIdx.writeSplit(data, "train", 16, 1);
        TinyIdx.writeSplit(data, "t10k", 8, 2);
    }

    /** A tiny forward model's flags, a few steps on the tiny data. */
    /**
     * The tiny dataset under dir (as the shared folder of these tests) and a tiny forward model trained on it, run
     * "f"; returns its model file. The fixture of the tests that feed a real checkpoint to hostile-input probes.
     */
    static Path tinyForwardModel(Path dir) throws IOException {
        shared = dir;
        tinyDataset();
        ok(tinyForward(dir, "f"));
        return dir.resolve("f").resolve("model.safetensors");
    }

    static List<String> tinyForward(Path runs, String name, String... more) {
        List<String> a = new ArrayList<>(List.of("train-forward", "--data", data.toString(), "--runs", runs.toString(), "--name", name,
                "--width", "16", "--blocks", "1", "--layers", "1", "--head-dim", "8", "--steps", "2", "--batch", "4",
                "--eval-images", "4", "--threads", "1"));
        a.addAll(List.of(more));
        return a;
    }

    static Run ok(List<String> args) {
        Run r = run(args.toArray(String[]::new));
        assertEquals(0, r.code(), () -> "biflow " + String.join(" ", args) + "\nstdout:\n" + r.out() + "\nstderr:\n" + r.err());
        return r;
    }

    static JsonNode config(Path runDir) throws IOException { return JSON.readTree(runDir.resolve("config.json").toFile()); }

    static Path write(Path file, String json) throws IOException {
        Files.writeString(file, json.replace('\'', '"'));
        return file;
    }

    @Test
    void configFileValuesAreUsedAndFlagsOverrideThem(@TempDir Path tmp) throws Exception {
        Path cfg = write(tmp.resolve("cfg.json"), "{'model': {'patch_size': 4, 'channels': 16, 'num_blocks': 1, 'layers_per_block': 1, 'head_dim': 8},"
                + " 'train': {'steps': 2, 'batchSize': 4, 'lr': 0.001, 'warmupSteps': 1, 'emaDecay': 0.9, 'seed': 3},"
                + " 'data': '" + data + "'}");
        Run r = ok(List.of("train-forward", "--config", cfg.toString(), "--runs", tmp.toString(), "--name", "a", "--eval-images", "4", "--threads", "1"));
        assertTrue(r.out().contains("settings from " + cfg), r.out());
        JsonNode a = config(tmp.resolve("a"));
        assertEquals(16, a.at("/model/channels").asInt());
        assertEquals(1, a.at("/model/num_blocks").asInt());
        assertEquals(2, a.at("/train/steps").asLong());
        assertEquals(4, a.at("/train/batchSize").asInt());
        assertEquals(0.001, a.at("/train/lr").asDouble());
        assertEquals(0.9, a.at("/train/emaDecay").asDouble());
        assertEquals(3, a.at("/train/seed").asLong());
        assertEquals(data.toString(), a.at("/data").asText());
        assertTrue(Files.exists(tmp.resolve("a").resolve("model-ema.safetensors")), "the file's EMA decay is in force");

        // flag > file > built-in default
        ok(List.of("train-forward", "--config", cfg.toString(), "--runs", tmp.toString(), "--name", "b", "--eval-images", "4", "--threads", "1",
                "--lr", "0.005", "--seed", "7"));
        JsonNode b = config(tmp.resolve("b"));
        assertEquals(0.005, b.at("/train/lr").asDouble());
        assertEquals(7, b.at("/train/seed").asLong());
        assertEquals(0.9, b.at("/train/emaDecay").asDouble(), "the rest still comes from the file");
        assertEquals(1.0, b.at("/train/gradClip").asDouble(), "and what the file lacks from the defaults");

        // a run's own config.json repeats it: same settings, another seed
        ok(List.of("train-forward", "--config", tmp.resolve("a").resolve("config.json").toString(), "--runs", tmp.toString(), "--name", "c",
                "--seed", "2", "--eval-images", "4", "--threads", "1"));
        JsonNode c = config(tmp.resolve("c"));
        assertEquals(a.get("model"), c.get("model"));
        ((com.fasterxml.jackson.databind.node.ObjectNode) a.get("train")).put("seed", 2);
        assertEquals(a.get("train"), c.get("train"));
    }

    @Test
    void helpShowsTheFilesValuesAsDefaults(@TempDir Path tmp) throws Exception {
        Path cfg = write(tmp.resolve("cfg.json"), "{'model': {'channels': 48, 'num_classes': 0}, 'train': {'lr': 0.0007}}");
        Run r = run("train-forward", "--config", cfg.toString(), "--help");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().matches("(?s).*--width=<width>\\s+Transformer width D\\.\\s+Default: 48.*"), r.out());
        assertTrue(r.out().contains("Default: 7.0E-4"), r.out());
        assertTrue(r.out().contains("Ignore labels (default: true)"), r.out());
        assertTrue(r.out().contains("--config"), r.out());
    }

    @Test
    void unknownKeyFailsNamingItAndTheValidOnes(@TempDir Path tmp) throws Exception {
        Path cfg = write(tmp.resolve("cfg.json"), "{'train': {'steps': 2, 'learning_rate': 0.1}}");
        Run r = run("train-forward", "--config", cfg.toString(), "--data", data.toString(), "--runs", tmp.toString());
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().contains("unknown key 'train.learning_rate'"), r.err());
        assertTrue(r.err().contains("train.{steps, batchSize, lr,"), r.err());
        assertEquals(1, r.err().strip().lines().count(), "one line: " + r.err());
        assertFalse(Files.exists(tmp.resolve("forward")), "nothing written");

        Run top = run("train-backward", "--config", write(tmp.resolve("top.json"), "{'model': {}}").toString());
        assertEquals(2, top.code());
        assertTrue(top.err().contains("unknown key 'model'") && top.err().contains("backward.{"), top.err());

        Run bad = run("train-forward", "--config", write(tmp.resolve("bad.json"), "{'train': ").toString());
        assertEquals(2, bad.code());
        assertTrue(bad.err().contains("not valid JSON"), bad.err());

        Run missing = run("train-forward", "--config", tmp.resolve("nope.json").toString());
        assertEquals(2, missing.code());
        assertTrue(missing.err().contains("nope.json does not exist"), missing.err());

        Run both = run("train-forward", "--config", cfg.toString(), "--resume", tmp.toString());
        assertEquals(2, both.code());
        assertTrue(both.err().contains("cannot be combined"), both.err());
    }

    @Test
    void fileForOtherDataFailsOnTheDerivedKeys(@TempDir Path tmp) throws Exception {
        Path cfg = write(tmp.resolve("cfg.json"), "{'model': {'img_size': 32, 'channels': 16}}");
        Run r = run(tinyForward(tmp, "x", "--config", cfg.toString()).toArray(String[]::new));
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().contains("model.img_size is 32") && r.err().contains("28"), r.err());
    }

    @Test
    void resumeKeepsTheSavedSettingsAndRejectsConflictingFlags(@TempDir Path tmp) throws Exception {
        ok(tinyForward(tmp, "run", "--ema", "0.9", "--lr", "0.003", "--seed", "5", "--checkpoint-every", "1"));
        Path dir = tmp.resolve("run"), cfg = dir.resolve("config.json");
        byte[] saved = Files.readAllBytes(cfg);

        // a flag that would change a saved setting: one clear line, nothing rewritten
        Run conflict = run("train-forward", "--resume", dir.toString(), "--data", data.toString(), "--ema", "0", "--threads", "1");
        assertEquals(2, conflict.code(), conflict.err());
        assertTrue(conflict.err().contains("--ema 0 would change") && conflict.err().contains("train.emaDecay = 0.9")
                && conflict.err().contains("--config " + cfg), conflict.err());
        assertEquals(1, conflict.err().strip().lines().count(), conflict.err());
        assertArrayEquals(saved, Files.readAllBytes(cfg));
        Run conflictModel = run("train-forward", "--resume", dir.toString(), "--width", "32");
        assertEquals(2, conflictModel.code());
        assertTrue(conflictModel.err().contains("--width 32") && conflictModel.err().contains("model.channels = 16"), conflictModel.err());
        assertArrayEquals(saved, Files.readAllBytes(cfg));

        // no flags: the saved settings (2 steps, EMA 0.9, lr 0.003), not the built-in defaults (2000 steps, no EMA)
        Run again = ok(List.of("train-forward", "--resume", dir.toString(), "--eval-images", "4", "--threads", "1", "--lr", "0.003"));
        assertTrue(again.out().contains("done 2 steps"), again.out());
        assertArrayEquals(saved, Files.readAllBytes(cfg), "config.json unchanged");

        // --steps may extend the run: the file records it, the rest stays
        Run longer = ok(List.of("train-forward", "--resume", dir.toString(), "--steps", "3", "--eval-images", "4", "--threads", "1"));
        assertTrue(longer.out().contains("stretched"), longer.out());
        assertTrue(longer.out().contains("done 3 steps"), longer.out());
        JsonNode after = config(dir), before = JSON.readTree(saved);
        assertEquals(3, after.at("/train/steps").asLong());
        ((com.fasterxml.jackson.databind.node.ObjectNode) before.get("train")).put("steps", 3);
        assertEquals(before, after);
    }

    @Test
    void backwardTakesAConfigFileAndResumesWithItsSavedSettings(@TempDir Path tmp) throws Exception {
        ok(tinyForward(tmp, "f"));
        Path f = tmp.resolve("f").resolve("model.safetensors");
        Path cfg = write(tmp.resolve("g.json"), "{'backward': {'width': 16, 'head_dim': 8, 'layers_per_stage': 1, 'denoise_layers': 1, 'num_classes': 10},"
                + " 'forward': '" + f + "', 'train': {'steps': 2, 'batchSize': 4, 'emaDecay': 0.5, 'checkpointEvery': 1}, 'data': '" + data + "',"
                + " 'perceptual': {'distance': 'none'}}");
        ok(List.of("train-backward", "--config", cfg.toString(), "--runs", tmp.toString(), "--name", "g", "--lr", "0.002", "--threads", "1"));
        Path dir = tmp.resolve("g");
        JsonNode g = config(dir);
        assertEquals(16, g.at("/backward/width").asInt());
        assertEquals(0.5, g.at("/train/emaDecay").asDouble());
        assertEquals(0.002, g.at("/train/lr").asDouble());
        assertEquals(f.toString(), g.at("/forward").asText());
        byte[] saved = Files.readAllBytes(dir.resolve("config.json"));

        Run conflict = run("train-backward", "--resume", dir.toString(), "--strategy", "naive");
        assertEquals(2, conflict.code());
        assertTrue(conflict.err().contains("--strategy naive") && conflict.err().contains("backward.strategy"), conflict.err());
        assertArrayEquals(saved, Files.readAllBytes(dir.resolve("config.json")));

        // --forward, --data and every setting come from the run's config.json
        Run again = ok(List.of("train-backward", "--resume", dir.toString(), "--threads", "1", "--strategy", "alignment"));
        assertTrue(again.out().contains("done 2 steps"), again.out());
        assertArrayEquals(saved, Files.readAllBytes(dir.resolve("config.json")));

        Run wrongF = run("train-backward", "--config", write(tmp.resolve("w.json"), "{'backward': {'tokens': 16}}").toString(), "--forward", f.toString(),
                "--data", data.toString(), "--runs", tmp.toString(), "--name", "w");
        assertEquals(2, wrongF.code());
        assertTrue(wrongF.err().contains("backward.tokens is 16") && wrongF.err().contains("49"), wrongF.err());

        Run noF = run("train-backward", "--data", data.toString(), "--runs", tmp.toString());
        assertEquals(2, noF.code());
        assertTrue(noF.err().contains("--forward is required"), noF.err());
    }

    /** G with the perceptual terms: the feature networks come from train-features; a missing folder is named with the fix. */
    @Test
    void backwardUsesThePerceptualNetworksOrSaysWhereTheyAre(@TempDir Path tmp) throws Exception {
        ok(tinyForward(tmp, "f"));
        Path f = tmp.resolve("f").resolve("model.safetensors"), nets = tmp.resolve("nets");
        Run missing = run("train-backward", "--forward", f.toString(), "--data", data.toString(), "--runs", tmp.toString(), "--name", "m",
                "--features", nets.toString(), "--width", "16", "--head-dim", "8", "--steps", "1");
        assertEquals(2, missing.code());
        assertTrue(missing.err().contains(nets.resolve("features-convnet.safetensors").toString()) && missing.err().contains("train-features"),
                missing.err());
        assertFalse(Files.exists(tmp.resolve("m").resolve("config.json")), "nothing written before the check");
        ok(List.of("train-features", "--arch", "all", "--steps", "2", "--batch", "8", "--data", data.toString(), "--out", nets.toString(),
                "--threads", "1"));
        Run g = ok(List.of("train-backward", "--forward", f.toString(), "--data", data.toString(), "--runs", tmp.toString(), "--name", "p",
                "--features", nets.toString(), "--perceptual", "lpips+convnext", "--perceptual-weight", "0.5", "--width", "16",
                "--head-dim", "8", "--layers-per-stage", "1", "--steps", "2", "--batch", "4", "--threads", "1"));
        assertTrue(g.out().contains("done 2 steps"), g.out());
        JsonNode c = config(tmp.resolve("p"));
        assertEquals("lpips+convnext", c.at("/perceptual/distance").asText());
        assertEquals(nets.toString(), c.at("/perceptual/features").asText());
        assertEquals(0.5, c.at("/perceptual/weight").asDouble());
        Run bad = run("train-backward", "--forward", f.toString(), "--data", data.toString(), "--runs", tmp.toString(), "--name", "q",
                "--features", nets.toString(), "--perceptual", "vgg");
        assertEquals(2, bad.code());
        assertTrue(bad.err().contains("none, lpips or lpips+convnext"), bad.err());
    }

    @Test
    void trainFeaturesWritesTheFilesTheLoadersRead(@TempDir Path tmp) throws Exception {
        Path out = tmp.resolve("nets");
        Run r = ok(List.of("train-features", "--arch", "all", "--steps", "2", "--batch", "4", "--data", data.toString(),
                "--out", out.toString(), "--threads", "1"));
        assertTrue(r.out().contains("test accuracy"), r.out());
        assertEquals(2, FeatureNets.perceptualDistances(out).size());
        assertEquals(FeatureNetConfig.Arch.EVAL, FeatureNets.load(out.resolve(FeatureNets.EVAL_FILE), FeatureNetConfig.Arch.EVAL).config.arch());
        List<String> metrics = Files.readAllLines(out.resolve("metrics.jsonl"));
        assertEquals(3 * 3, metrics.size(), "2 steps and a summary per network: " + metrics);
        for (String m : metrics) JSON.readTree(m);
        assertTrue(metrics.get(2).contains("\"test_accuracy\""), metrics.get(2));
        JsonNode c = config(out);
        assertEquals("all", c.get("arch").asText());
        assertEquals(2, c.get("steps").asLong());

        // its config.json repeats the run; a flag overrides it
        Path out2 = tmp.resolve("nets2");
        ok(List.of("train-features", "--config", out.resolve("config.json").toString(), "--arch", "eval", "--out", out2.toString(), "--threads", "1"));
        assertTrue(Files.exists(out2.resolve(FeatureNets.EVAL_FILE)));
        assertFalse(Files.exists(out2.resolve(FeatureNets.LPIPS_FILE)));
        var meta = FeatureNets.loadWithMetadata(out2.resolve(FeatureNets.EVAL_FILE)).metadata();
        assertEquals("4", meta.get("batch_size"), "batch from the file");
        assertEquals("2", meta.get("steps"), "steps from the file");
    }

    @Test
    void trainFeaturesErrorsAreOneLine(@TempDir Path tmp) {
        Run r = run("train-features", "--arch", "eval", "--data", tmp.resolve("nowhere").toString(), "--out", tmp.resolve("o").toString());
        assertEquals(2, r.code());
        assertTrue(r.err().contains("apt-get install dataset-fashion-mnist"), r.err());
        assertEquals(1, r.err().strip().lines().count(), r.err());
        assertFalse(Files.exists(tmp.resolve("o")));
        Run a = run("train-features", "--arch", "resnet", "--data", data.toString(), "--out", tmp.resolve("o").toString());
        assertEquals(2, a.code());
        assertTrue(a.err().contains("--arch resnet") && a.err().contains("all"), a.err());
    }
}
